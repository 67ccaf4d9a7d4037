"""Can batch-1 latency rank search candidates on this machine? Each candidate's int8 onnxruntime latency, measured
as distill-search measures it, several times in alternating order; the spread of the medians and the share of
candidate pairs whose order flips between repeats.

    python -m scripts.bench budget-noise --repeats 5 --out docs/results/search_latency_noise.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

CANDIDATES = [("small_cnn", {"width": 4}), ("small_cnn", {"width": 6}), ("small_cnn", {"width": 8}),
              ("hinton_mlp_student", {"hidden": 128, "img_size": 28}),
              ("hinton_mlp_student", {"hidden": 256, "img_size": 28}), ("cifar_resnet", {"depth": 8, "width": 3})]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench budget-noise", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each candidate (default 5)")
    parser.add_argument("--timed-calls", type=int, default=50, help="batch-1 calls per measurement (as search)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import distill.data as data
    from distill.io import write_json
    from distill.search.budget import measure
    from distill.search.space import Candidate

    datamodule = data.FashionMNISTDataModule()
    datamodule.setup("fit")
    budget = OmegaConf.create({"runtime": "onnx_int8", "threads": 1, "warmup": 10, "repeats": args.timed_calls,
                               "int8": OmegaConf.to_container(OmegaConf.load("conf/compress/none.yaml").int8)})
    candidates = [Candidate.of(name, kwargs) for name, kwargs in CANDIDATES]
    medians: dict[str, list[float]] = {c.label: [] for c in candidates}
    macs: dict[str, int] = {}
    for repeat in range(args.repeats):
        order = candidates if repeat % 2 == 0 else candidates[::-1]  # alternate: a drift hits every candidate
        for candidate in order:
            with tempfile.TemporaryDirectory() as cache:  # a fresh cache: measured, not read back
                result = measure(candidate, datamodule, budget, cache)
            medians[candidate.label].append(result["latency_ms"])
            macs[candidate.label] = result["macs"]
    pairs = list(itertools.combinations(medians, 2))
    flips = sum(len({a_value < b_value for a_value, b_value in zip(medians[a], medians[b])}) > 1 for a, b in pairs)
    rows = [{"candidate": label, "macs": macs[label], "median_ms": statistics.median(values), "min_ms": min(values),
             "max_ms": max(values), "spread_pct": 100 * (max(values) - min(values)) / statistics.median(values)}
            for label, values in medians.items()]
    print(f"{'candidate':<48}{'MACs':>10}{'median ms':>11}{'min':>9}{'max':>9}{'spread':>8}")
    for row in rows:
        print(f"{row['candidate']:<48}{row['macs']:>10,}{row['median_ms']:>11.4f}{row['min_ms']:>9.4f}"
              f"{row['max_ms']:>9.4f}{row['spread_pct']:>7.0f}%")
    print(f"pairs whose latency order flips between repeats: {flips} of {len(pairs)}")
    if args.out:
        write_json(args.out, {"repeats": args.repeats, "timed_calls": args.timed_calls, "threads": 1,
                              "rows": rows, "pairs": len(pairs), "pairs_flipped": flips,
                              "medians_ms": medians})
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
