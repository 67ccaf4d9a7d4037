"""The framework's overhead alone (B/A of scripts/bench_speed.py), as alternating repeats on one machine.

    python scripts/bench_overhead.py --repeats 3 --epochs 3

A and B run in turns (plain loop, then distill's module, then the plain loop again, ...), so a machine that
speeds up or slows down during the run moves both; each repeat prints its own B/A. Fashion-MNIST, 10,000
training images, batch 128, small_cnn width 16, medians of the epochs after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_speed  # noqa: E402

from distill.data import FashionMNISTDataModule  # noqa: E402
from distill.models import create_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--fashion-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("bench_overhead.json"))
    args = parser.parse_args()
    data = FashionMNISTDataModule(root=args.fashion_root, batch_size=128, mean=[0.2860], std=[0.3530])
    data.setup()
    bench_speed.subsample(data, args.samples)
    train = data.splits["train"]
    options = argparse.Namespace(channels_last=False, compile=False, epochs=args.epochs, precision="32-true")

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("small_cnn", data.num_classes, data.in_chans, {"width": 16})

    rows = []
    for repeat in range(args.repeats):
        a = bench_speed.plain_loop(student(), train.images, train.labels, 128, args.epochs, 0.05, torch.device("cpu"))
        b = bench_speed.lightning_fit(student(), None, {"ce": {"weight": 1.0}}, data, options, "cpu")
        rows.append({"A_epoch_s": a["epoch_s"], "B_epoch_s": b["epoch_s"], "B/A": b["epoch_s"] / a["epoch_s"]})
        print(f"repeat {repeat}: A {a['epoch_s']:.3f} s  B {b['epoch_s']:.3f} s  B/A {rows[-1]['B/A']:.3f}", flush=True)
    ratios = [row["B/A"] for row in rows]
    print(f"B/A median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "repeats": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
