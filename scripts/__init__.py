"""Developer tools of distill, run from the repository root and not installed with the library:
``python -m scripts.bench`` (the benchmarks) and ``python -m scripts.bad_inputs`` (the bad-input table)."""
