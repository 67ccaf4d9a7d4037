"""Every bad input we know of, run through the real commands: ``python -m scripts.bad_inputs`` (table.py) writes
the table in docs/reliability.md from the cases of cases_values.py, cases_train.py and cases_tools.py, which the
tests read too."""
