"""The benchmarks: one command each behind ``python -m scripts.bench <command>`` (see __main__.py), and the
pieces the method table is made of (grid.py, results.py, doc.py, stats.py)."""
