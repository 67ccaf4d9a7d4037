"""``python -m scripts.bad_inputs [options]``: the bad-input table (table.py)."""

from scripts.bad_inputs.table import main

if __name__ == "__main__":
    main()
