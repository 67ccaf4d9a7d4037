"""The framework's fixed cost (B/A and D/A of the speed command), as alternating repeats on one machine.

    python -m scripts.bench overhead --dataset both --repeats 5 --epochs 5 --out docs/results/bench_overhead_cpu.json

A, K, L, B and D run in turns (plain loop, the plain loop with D's KD loss against the cached logits, a bare
LightningModule, distill's module on the student alone, KD from cached teacher outputs, then the plain loop
again, ...), so a machine that speeds up or slows down during the run moves all; each repeat prints its own
ratios and the summary gives their medians. L (forward and cross-entropy in Lightning's loop, nothing logged)
is Lightning's own floor: B/L is what distill adds to it; K/A is what KD's arithmetic costs anywhere. Same
student (small_cnn width 16), teacher (cifar_resnet20, its outputs cached once), batch 128 and medians of the
epochs after the first as speed.py; Fashion-MNIST uses 10,000 training images, digits all 1,293.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from distill.models import create_model
from scripts.bench import speed

KD = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
RATIOS = ("B/A", "D/A", "L/A", "K/A", "B/L", "D/L", "D/K")  # "X/Y": epoch of X over epoch of Y


def repeats(dataset: str, args: argparse.Namespace, cache_dir: str) -> dict:
    data = speed.bench_data(dataset, 128, args.fashion_root, args.samples)
    train = data.splits["train"]
    options = argparse.Namespace(channels_last=False, compile=False, epochs=args.epochs, precision="32-true")

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("small_cnn", data.num_classes, data.in_chans, {"width": 16})

    torch.manual_seed(0)
    teacher = create_model("cifar_resnet20", data.num_classes, data.in_chans).eval()
    outputs = speed.cached_outputs(cache_dir, teacher, dataset, data)
    teacher_logits = outputs.lookup("train", torch.arange(len(train.labels)))  # what D reads, as one tensor
    rows = []
    for repeat in range(args.repeats):
        a = speed.plain_loop(student(), train.images, train.labels, 128, args.epochs, 0.05, torch.device("cpu"))
        k = speed.plain_loop(student(), train.images, train.labels, 128, args.epochs, 0.05, torch.device("cpu"),
                                   teacher_logits=teacher_logits)
        bare = speed.bare_lightning_fit(student(), data, options, "cpu")
        b = speed.lightning_fit(student(), None, {"ce": {"weight": 1.0}}, data, options, "cpu")
        d = speed.lightning_fit(student(), teacher, KD, data, options, "cpu", teacher_outputs=outputs)
        arms = {"A": a, "K": k, "L": bare, "B": b, "D": d}
        row = {f"{arm}_epoch_s": result["epoch_s"] for arm, result in arms.items()}
        row.update({f"{arm}_step_ms": result["step_ms"] for arm, result in arms.items()})
        row.update({f"{arm}_gap_ms": result["gap_ms"] for arm, result in arms.items() if "gap_ms" in result})
        row.update({ratio: row[f"{ratio[0]}_epoch_s"] / row[f"{ratio[2]}_epoch_s"] for ratio in RATIOS})
        rows.append(row)
        print(f"{dataset} repeat {repeat}: A {a['epoch_s']:.4f} s  K {k['epoch_s']:.4f} s  L {bare['epoch_s']:.4f} s  "
              f"B {b['epoch_s']:.4f} s  "
              f"D {d['epoch_s']:.4f} s  " + "  ".join(f"{ratio} {row[ratio]:.3f}" for ratio in RATIOS), flush=True)
    summary = {}
    for ratio in RATIOS:
        values = [row[ratio] for row in rows]
        goal = speed.GOALS[dataset].get(ratio)
        summary[ratio] = {"median": statistics.median(values), "min": min(values), "max": max(values), "goal": goal}
        print(f"{dataset} {ratio} median {summary[ratio]['median']:.3f} (min {min(values):.3f}, "
              f"max {max(values):.3f}{f'; goal <= {goal}' if goal else ''})", flush=True)
    # Where B's epoch goes beyond A's: its steps (the step ratio) and the time between them (Lightning's loop).
    for arm in ("L", "B", "D"):
        summary[f"{arm}/A step"] = statistics.median(row[f"{arm}_step_ms"] / row["A_step_ms"] for row in rows)
        summary[f"{arm} gap ms"] = statistics.median(row[f"{arm}_gap_ms"] for row in rows)
    print(f"{dataset} step ratios (medians): " + ", ".join(f"{arm}/A {summary[f'{arm}/A step']:.3f}" for arm in "LBD")
          + "; between steps: " + ", ".join(f"{arm} {summary[f'{arm} gap ms']:.2f} ms" for arm in "LBD"), flush=True)
    return {"repeats": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "fashion_mnist", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--fashion-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("bench_overhead.json"))
    args = parser.parse_args()
    datasets = ["digits", "fashion_mnist"] if args.dataset == "both" else [args.dataset]
    result = {"command": " ".join(sys.argv), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as cache_dir:
        for dataset in datasets:
            result[dataset] = repeats(dataset, args, cache_dir)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
