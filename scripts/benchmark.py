"""The Fashion-MNIST benchmark: every method, several seeds, one schedule; writes docs/benchmarks.md.

    python scripts/benchmark.py                                   # the table in docs/benchmarks.md
    python scripts/benchmark.py --epochs 5 --teacher-epochs 10    # a longer schedule
    python scripts/benchmark.py --mini --out-dir /tmp/bench       # 1 seed, a few batches: checks the command

Each method is one Hydra multirun of distill-train over the seeds (conf/experiment/fmnist_benchmark.yaml);
all share one cached teacher. distill-summarize then aggregates the runs (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.summarize import summarize_sweep  # noqa: E402

KD = ["+loss.kd.weight=0.9", "+loss.kd.temperature=4.0"]
# Method name -> overrides. FitNet, AT and SP are combined with KD as in their papers (CC's preset has it).
METHODS: dict[str, list[str]] = {
    "baseline": ["stage=student"],
    "kd": ["loss=kd"],
    "fitnet+kd": ["loss=fitnet", *KD],
    "feature_distance": ["loss=feature_distance"],
    "cc+kd": ["loss=cc"],
    "sp+kd": ["loss=sp", *KD],
    "at+kd": ["loss=at", *KD],
    "rkd": ["loss=rkd"],
    "pkt": ["loss=pkt"],
    # DKD's warm-up is 20 of 240 epochs in the paper; scaled to this schedule's length.
    "dkd": ["loss=dkd", "loss.dkd.warmup_epochs={warmup}"],
}


def run_method(name: str, overrides: list[str], args: argparse.Namespace, out_dir: Path) -> dict:
    seeds = ",".join(str(s) for s in range(args.seeds))
    warmup = max(1, round(args.epochs * 20 / 240))
    command = [sys.executable, "-m", "distill.train", "-m", "experiment=fmnist_benchmark", f"seed={seeds}",
               f"trainer.max_epochs={args.epochs}", f"teacher.train.max_epochs={args.teacher_epochs}",
               f"paths.cache_dir={args.cache_dir}", f"hydra.sweep.dir={out_dir / name}",
               *[o.format(warmup=warmup) for o in overrides], *args.extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    (out_dir / f"{name}.log").write_text(result.stdout + result.stderr)
    print(f"{name:<18} {'ok' if result.returncode == 0 else 'FAILED'} in {elapsed:7.1f} s", flush=True)
    return {"method": name, "command": " ".join(command[1:]), "seconds": elapsed, "returncode": result.returncode}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpu": cpu, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def write_doc(path: Path, summary: dict, runs: list[dict], args: argparse.Namespace, wall: float) -> None:
    plot = summary["files"].get("macs_plot")
    methods_plot = summary["files"].get("methods_plot")
    lines = [
        "# Benchmark: distillation methods on Fashion-MNIST",
        "",
        f"Teacher `cifar_resnet20` (trained here for {args.teacher_epochs} epochs, cached), student `small_cnn` "
        f"(width 16), {args.epochs} training epoch(s) per student, {args.seeds} seed(s) per method, "
        "SGD lr 0.05 with cosine decay, batch 128, no augmentation (teacher logits cached where a method reads "
        "only logits). Test split: the 10,000 Fashion-MNIST test images; 5,000 training images held out for "
        "validation (the best epoch is chosen on validation, never on test).",
        "",
        summary["table"],
        f"![accuracy vs MACs]({plot.name})" if plot else "",
        f"![accuracy per method]({methods_plot.name})" if methods_plot else "",
        "",
        "## How this table was made",
        "",
        f"- command: `{' '.join(['python', 'scripts/benchmark.py', *sys.argv[1:]])}`",
        f"- commit: `{commit()}`; machine: {json.dumps(machine())}",
        f"- wall time: {wall / 60:.1f} min for the whole grid (teacher training included)",
        "- per method: " + ", ".join(f"{r['method']} {r['seconds'] / 60:.1f} min" for r in runs),
        "- latency: batch-1 median on the CPU, measured while no other job ran on the machine",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="student epochs (same for every method)")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "benchmark")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/distill").expanduser())
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--mini", action="store_true", help="1 seed, a few batches per epoch: a smoke test")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    args = parser.parse_args()
    if args.mini:
        args.seeds = 1
        args.extra += ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                       "report.repeats=3", "report.warmup=1", "report.throughput_batch_size=16"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = [run_method(name, METHODS[name], args, args.out_dir) for name in args.methods]
    wall = time.perf_counter() - start
    summary = summarize_sweep(args.out_dir)
    print(summary["table"])
    if not args.mini:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        for key in ("macs_plot", "methods_plot"):
            if key in summary["files"]:
                target = args.doc.parent / f"benchmark_{summary['files'][key].name}"
                target.write_bytes(summary["files"][key].read_bytes())
                summary["files"][key] = target
        write_doc(args.doc, summary, runs, args, wall)
        print(f"wrote {args.doc}")
    failed = [r["method"] for r in runs if r["returncode"] != 0]
    if failed:
        sys.exit(f"failed methods: {failed} (logs in {args.out_dir})")


if __name__ == "__main__":
    main()
