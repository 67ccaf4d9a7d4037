"""``distill-search``: the best student for a budget on a device, found by distilling candidates.

- ``space``: the students a search may pick (architecture families and their knobs, training knobs);
- ``budget``: a candidate's latency, file size and MACs, measured before it trains and cached by architecture;
- ``study``: the Optuna study (storage in the run folder), one distillation per trial, early stopping;
- ``front``: the Pareto front of accuracy against the budget metric, the trials' table and plot;
- ``final``: the best student within budget retrained with the full schedule, beside the default student.
"""
