"""Does the augmentation-aware teacher-output cache change accuracy? KD with the live teacher vs the cache.

    python -m scripts.bench cache-accuracy                      # 3 seeds each, Fashion-MNIST, its default augmentation
    python -m scripts.bench cache-accuracy --seeds 5 --epochs 5

Both arms are one Hydra multirun of distill-train over the seeds with identical settings except
``teacher_cache.enabled``; they share one cached teacher. Resumable: finished runs (metrics.json) are read
back (``resume=auto``), only missing ones train. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
# experiment=fmnist_benchmark turns the variant cache off for its own grid, so the cached arm asks for it.
ARMS = {"live teacher": ["teacher_cache.enabled=false"],
        "augmentation-aware cache": ["teacher_cache.enabled=true", "teacher_cache.augmentations=true"]}
CACHE_USED = ("teacher outputs computed once", "teacher outputs read from the cache")


def used_the_cache(run_dir: Path) -> bool:
    """Whether the run's log says its teacher outputs came from the cache (else the teacher ran live)."""
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    return any(line in log for line in CACHE_USED)


def run_arm(name: str, switches: list[str], args: argparse.Namespace) -> dict:
    folder = args.out_dir / name.replace(" ", "_")
    command = [sys.executable, "-m", "distill.train", "-m", "experiment=fmnist_benchmark", "loss=kd",
               f"seed={','.join(str(s) for s in range(args.seeds))}", "data.random_crop_padding=2",
               "data.horizontal_flip=true", f"teacher={args.teacher}", f"trainer.max_epochs={args.epochs}",
               f"teacher.train.max_epochs={args.teacher_epochs}", f"trainer.limit_train_batches={args.fraction}",
               f"paths.cache_dir={args.cache_dir}", f"hydra.sweep.dir={folder}", "resume=auto", *switches]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (args.out_dir / f"{folder.name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name}: distill-train failed (see {args.out_dir / folder.name}.log)")
    paths = sorted(folder.glob("*/metrics.json"))
    # A config change that turned the cache on or off would make the two arms the same experiment.
    wants_cache = "teacher_cache.enabled=true" in switches
    wrong = [path.parent.name for path in paths if used_the_cache(path.parent) != wants_cache]
    if wrong:
        raise SystemExit(f"{name}: run(s) {wrong} {'did not use' if wants_cache else 'used'} the teacher-output "
                         f"cache (see their train.log); this comparison needs the other")
    runs = [json.loads(path.read_text()) for path in paths]
    accuracies = [run["student"]["test_acc_top1"] for run in runs]
    return {"arm": name, "command": " ".join(command[2:]), "runs": len(runs), "test_acc_top1": accuracies,
            "mean": statistics.mean(accuracies), "std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
            "teacher_test_acc_top1": runs[0]["teacher"].get("test_acc_top1"),
            "wall_s_this_call": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher", default="small_cnn")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.25, help="share of the training batches per epoch")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "cache_accuracy")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "outputs" / "cache_accuracy" / "cache")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    arms = [run_arm(name, switches, args) for name, switches in ARMS.items()]
    print(f"\nKD on Fashion-MNIST with pad-2 crops + flips, {args.seeds} seeds, teacher {args.teacher} "
          f"(test top-1 {arms[0]['teacher_test_acc_top1']:.4f})")
    for arm in arms:
        values = ", ".join(f"{a:.4f}" for a in arm["test_acc_top1"])
        print(f"  {arm['arm']:<26} {100 * arm['mean']:6.2f} ± {100 * arm['std']:.2f} %   ({values})")
    difference = arms[1]["mean"] - arms[0]["mean"]
    print(f"  cached - live: {100 * difference:+.2f} points")
    (args.out_dir / "cache_accuracy.json").write_text(json.dumps({"arms": arms, "difference": difference},
                                                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
