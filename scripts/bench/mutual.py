"""Deep mutual learning on digits: 2 peers trained together vs one model alone, same epochs, 3 seeds.

    python -m scripts.bench mutual                          # the table in docs/benchmarks.md
    python -m scripts.bench mutual --epochs 10 --seeds 5    # another budget
    python -m scripts.bench mutual --out /tmp/dml.json      # elsewhere

Both arms use the student preset (small_cnn, width 8), the default SGD + cosine schedule and batches, and
the same number of epochs: the single model is ``stage=student`` (cross-entropy alone), the peers are
``stage=mutual`` (cross-entropy + KL to the other peer, DML's loss). Peer k starts from seed ``seed + k``.
Resumable: every finished job is written to the JSON at once and skipped when the script runs again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from distill.config import CONF_DIR
from distill.io import read_json, write_json
from distill.runner import run

ROOT = Path(__file__).resolve().parents[2]  # the repository

QUIET = ["logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "report.enabled=false"]
ARMS = {"single": ["stage=student"], "mutual": ["stage=mutual", "mutual.peers=2"]}


def run_job(arm: str, seed: int, epochs: int, work: Path) -> dict:
    """One run; its test accuracies (one per peer for mutual learning)."""
    folder = work / f"{arm}-seed{seed}"
    overrides = [*QUIET, *ARMS[arm], f"seed={seed}", f"trainer.max_epochs={epochs}",
                 f"paths.output_dir={folder}", f"paths.cache_dir={work / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run(compose("train", overrides=overrides))
    summary = read_json(folder / "metrics.json")
    if arm == "mutual":
        return {"peers": [peer["test_acc_top1"] for peer in summary["peers"]]}
    return {"single": summary["student"]["test_acc_top1"]}


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def table(results: dict, seeds: int) -> str:
    lines = ["| seed | single model | peer 0 | peer 1 | both peers beat the single model |",
             "|---:|---:|---:|---:|---|"]
    singles: list[float] = []
    peers: list[list[float]] = [[], []]
    for seed in range(seeds):
        single = results[f"single-{seed}"]["single"]
        peer = results[f"mutual-{seed}"]["peers"]
        singles.append(100 * single)
        for index in range(2):
            peers[index].append(100 * peer[index])
        lines.append(f"| {seed} | {100 * single:.2f} | {100 * peer[0]:.2f} | {100 * peer[1]:.2f} | "
                     f"{'yes' if min(peer) > single else 'no'} |")
    lines.append(f"| mean ± std | {mean_std(singles)} | {mean_std(peers[0])} | {mean_std(peers[1])} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "mutual_digits.json")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args()
    results = read_json(args.out)["results"] if args.out.is_file() else {}
    if results and read_json(args.out)["epochs"] != args.epochs:
        raise SystemExit(f"{args.out} holds a {read_json(args.out)['epochs']}-epoch run; give another --out")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_mutual_"))
    for seed in range(args.seeds):
        for arm in ARMS:
            key = f"{arm}-{seed}"
            if key in results:
                continue
            results[key] = run_job(arm, seed, args.epochs, work)
            write_json(args.out, {"epochs": args.epochs, "seeds": args.seeds, "results": results})
            print(f"{key}: {results[key]}", flush=True)
    print(table(results, args.seeds))


if __name__ == "__main__":
    main()
