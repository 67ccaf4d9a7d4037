"""Rows at a weight chosen on validation (scripts/bench/tuned.py): the candidates, the choice read from validation
only, the row it adds, and the methods command's --tune (refusals, --plan, a miniature that resumes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts.bench import methods, tuned
from scripts.bench.grid import Method, loss_preset
from tests.bench.conftest import kept_seed

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MLKD = Method("mlkd", ["loss=mlkd"], preset=loss_preset("mlkd"))


def candidate(folder: Path, weight: float, val_top1: float, test_top1: float) -> None:
    """A finished run of MLKD at ``weight``: its metrics.json (best validation and test top-1) and run_config.json."""
    kept_seed(folder, test_top1, 77754, {"loss": {"ce": {"weight": 0.1}, "mlkd": {"weight": weight}}})
    summary = json.loads((folder / "metrics.json").read_text())
    summary["student"]["best_val_acc_top1"] = val_top1
    (folder / "metrics.json").write_text(json.dumps(summary))


def test_candidates_are_fractions_of_the_reference_weight_of_the_methods_own_term():
    assert tuned.method_term(MLKD) == ("mlkd", 0.9)
    assert tuned.candidate_weights(0.9) == [0.3, 0.09, 0.03, 0.009]
    assert tuned.candidate_weights(100.0) == [33.3, 10.0, 3.33, 1.0]
    with pytest.raises(ValueError, match="no loss term of its own name"):
        tuned.method_term(Method("dml x2", ["scheme=dml"]))


def test_the_weight_of_best_validation_top1_is_chosen_never_the_best_test_top1(tmp_path):
    candidate(tmp_path / "mlkd" / "0", 0.9, val_top1=0.20, test_top1=0.21)  # the reference: the row's seed 0
    # Numbered by Hydra's job order; the weight is read from each run's config, not from its folder.
    for number, (weight, val, test) in enumerate([(0.009, 0.905, 0.93), (0.09, 0.915, 0.90), (0.3, 0.88, 0.89)]):
        candidate(tmp_path / "tune_mlkd" / str(number), weight, val, test)
    with pytest.raises(ValueError, match=r"no finished run at weight\(s\) \[0.03\]"):
        tuned.choose(tmp_path, MLKD)  # a choice among some candidates is another experiment
    assert tuned.missing_candidates(tmp_path, MLKD) == [0.03]

    candidate(tmp_path / "tune_mlkd" / "3", 0.03, val_top1=0.91, test_top1=0.95)
    choice = tuned.write_choice(tmp_path, MLKD)
    assert choice["chosen"] == 0.09  # best validation (91.5), not best test (0.03's 95 %)
    assert [c["weight"] for c in choice["candidates"]] == [0.9, 0.3, 0.09, 0.03, 0.009]
    assert choice["candidates"][0]["run"] == "mlkd/0" and choice["candidates"][2]["run"] == "tune_mlkd/1"
    assert json.loads((tmp_path / "tune_mlkd" / "choice.json").read_text()) == choice

    rows = tuned.tuned_rows([Method("kd", ["loss=kd"], preset=loss_preset("kd")), MLKD], tmp_path)
    assert [(r.name, r.overrides) for r in rows] == [
        ("mlkd, weight chosen on validation", ["loss=mlkd", "loss.mlkd.weight=0.09"])]
    assert "mlkd 0.09 chosen on validation from 0.9 (reference) and 0.3, 0.09, 0.03, 0.009" in rows[0].note
    table = "\n".join(tuned.section_text([choice]))
    assert "| mlkd | mlkd 0.9 (reference): 20.00; 0.3: 88.00; 0.09: 91.50; 0.03: 91.00; 0.009: 90.50 | mlkd 0.09 |" \
        in table


def test_a_tie_or_a_win_of_the_reference_weight_adds_no_row(tmp_path):
    candidate(tmp_path / "mlkd" / "0", 0.9, val_top1=0.90, test_top1=0.90)
    for number, weight in enumerate([0.3, 0.09, 0.03, 0.009]):
        candidate(tmp_path / "tune_mlkd" / str(number), weight, val_top1=0.90 if number == 0 else 0.5, test_top1=0.9)
    choice = tuned.write_choice(tmp_path, MLKD)
    assert choice["chosen"] == 0.9 and tuned.tuned_row(MLKD, choice) is None
    assert tuned.tuned_rows([MLKD], tmp_path) == []


def test_tune_refuses_a_row_that_is_not_a_loss_row_before_anything_runs(tmp_path, script_main):
    for name, message in [("mlkdd", "not a row of the fmnist setting; choose from: .*mlkd"),
                          ("dml x2", "no loss term of its own name"), ("kd_ls", "no loss term of its own name")]:
        with pytest.raises(SystemExit, match=message):
            script_main(methods, "--tune", name, "--plan", "--out-dir", str(tmp_path / "bench"))
    assert not (tmp_path / "bench").exists()


def test_plan_prices_the_candidates_and_the_row_and_chooses_the_reference_row_too(tmp_path, script_main):
    stdout = script_main(methods, "--setting", "strong", "--methods", "kd", "--tune", "mlkd", "--plan",
                         "--out-dir", str(tmp_path / "bench"))
    rows = {match[1]: line for line in stdout.splitlines() if (match := re.match(r"(\S.*?) +\d+/\d+ ", line))}
    assert set(rows) == {"kd", "mlkd", "tune mlkd"}  # the reference row is a candidate: chosen with --tune
    minutes = {name: float(line.split()[-1]) for name, line in
               ((n, rows[n].split("  mlkd at")[0].split("  loss=")[0]) for n in rows)}
    # 4 candidates of one seed and 3 seeds at the chosen weight: 7 runs of the mlkd row's 3.
    assert minutes["tune mlkd"] == pytest.approx(minutes["mlkd"] * 7 / 3, rel=0.01)
    assert "mlkd at 0.3, 0.09, 0.03, 0.009 (seed 0)" in rows["tune mlkd"]
