"""python -m scripts.bench fit: each row's last-epoch terms, weighted by the run's config, beside its test top-1."""

import csv
import json
from pathlib import Path

import pytest

from scripts.bench import fit  # its main runs in this process: conftest.script_main


def seed_run(folder: Path, config: dict, epochs: list[dict[str, float]], test: float, csv_under: str = "") -> None:
    """One finished seed: run_config.json, metrics.json (test top-1 in %) and a csv with a training-means row
    per epoch, each followed by a validation-only row, as Lightning's csv logger writes them."""
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"monitored": test / 100, "student": {"test_acc_top1": test / 100},
                                                     "metrics": {"test_last/acc_top1": test / 100}}))
    keys = sorted({key for epoch in epochs for key in epoch} | {"val/acc_top1"})
    path = folder / csv_under / "csv" / "metrics.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", *keys])
        writer.writeheader()
        for number, epoch in enumerate(epochs):
            writer.writerow({"epoch": number, **epoch})
            writer.writerow({"epoch": number, "val/acc_top1": 0.5})



def test_terms_are_weighted_by_each_run_config_and_read_at_the_last_epoch(tmp_path, script_main):
    out = tmp_path / "e60"
    out.mkdir()
    (out / "setting.json").write_text(json.dumps({"experiment": "fmnist_benchmark", "extra": []}))
    alone = {"stage": "student", "loss": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}}  # loss ignored alone
    for seed, (ce, acc, test) in enumerate([(0.44, 0.853, 85.0), (0.43, 0.850, 84.0)]):
        seed_run(out / "student_alone" / str(seed), alone,
                 [{"train/acc_top1": 0.7, "train/loss/ce": 0.9}, {"train/acc_top1": acc, "train/loss/ce": ce}], test)
    at = {"stage": "distill", "loss": {"ce": {"weight": 1.0}, "at": {"weight": 1000.0, "p": 2.0}}}
    for seed, (term, acc, test) in enumerate([(0.0012, 0.801, 81.0), (0.0015, 0.821, 82.0)]):
        seed_run(out / "at" / str(seed), at, [{"train/acc_top1": 0.6, "train/loss/ce": 1.0, "train/loss/at": 0.01},
                                              {"train/acc_top1": acc, "train/loss/ce": 0.55, "train/loss/at": term}],
                 test)
    mutual = {"stage": "mutual", "mutual": {"peers": 2, "ce_weight": 1.0, "kl_weight": 2.0}}
    for seed, test in enumerate([84.0, 85.0]):
        seed_run(out / "dml_x2" / str(seed), mutual,
                 [{"train/acc_top1": 0.848, "train/peer0/loss/ce": 0.44, "train/peer1/loss/ce": 0.46,
                   "train/peer0/loss/kl": 0.01, "train/peer1/loss/kl": 0.03}], test)
    # A linked scheme keeps each link's csv under links/; the final student is the highest-numbered link (10, not 9).
    chain = {"stage": "distill", "loss": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}}
    for seed in range(2):
        folder = out / "takd" / str(seed)
        seed_run(folder, chain, [{"train/acc_top1": 0.10, "train/loss/ce": 9.0, "train/loss/kd": 9.0}], 83.0,
                 csv_under="links/9-small_cnn")
        seed_run(folder / "links" / "10-small_cnn", chain,
                 [{"train/acc_top1": 0.815, "train/loss/ce": 0.5, "train/loss/kd": 0.2}], 83.0)

    stdout = script_main(fit, str(out), "student_alone", "at", "dml_x2", "takd", "--out",
                 str(tmp_path / "fit.json"))
    lines = stdout.splitlines()
    assert "| student_alone | — | 0.43–0.44 | 85.0–85.3 % | 84.50 ± 0.71 % |" in lines
    # AT: 1000 × 0.0012 = 1.20 and 1000 × 0.0015 = 1.50 (the first epoch's 0.01 is not read); against the
    # student alone: diff −3, se² = 0.5/2 + 0.5/2 = 0.5, dof 2, half-width t(0.975, 2) · √0.5 = 4.3027 · 0.7071.
    assert "| at | at 1.20–1.50 | 0.55 | 80.1–82.1 % | 81.50 ± 0.71 %, -3.00 [-6.04, +0.04] |" in lines
    # DML: each term the mean over the peers, kl times kl_weight 2: 2 × (0.01 + 0.03) / 2 = 0.04; the same
    # tests as the student alone, so diff 0 with the same half-width 3.04.
    assert "| dml_x2 | kl 0.0400 | 0.45 | 84.8 % | 84.50 ± 0.71 %, +0.00 [-3.04, +3.04] |" in lines
    assert "| takd | kd 0.180 | 0.50 | 81.5 % |" in stdout
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert [row["row"] for row in saved["rows"]] == ["student_alone", "at", "dml_x2", "takd"]
    assert saved["rows"][1]["per_seed"][1]["terms"] == {"at": 1.5}


def test_a_term_without_a_weight_and_an_unknown_row_are_refused_by_name(tmp_path, script_main):
    out = tmp_path / "e60"
    out.mkdir()
    (out / "setting.json").write_text(json.dumps({"experiment": "fmnist_benchmark", "extra": []}))
    for seed in range(2):
        seed_run(out / "student_alone" / str(seed), {"stage": "student"},
                 [{"train/acc_top1": 0.85, "train/loss/ce": 0.4}], 84.0 + seed)
        seed_run(out / "fitnet" / str(seed), {"stage": "distill", "loss": {"ce": {"weight": 1.0}}},
                 [{"train/acc_top1": 0.84, "train/loss/ce": 0.4, "train/loss/fitnet": 0.01}], 84.0)
    with pytest.raises(SystemExit, match=r"\['fitnet'\] have no weight in run_config.json"):
        script_main(fit, str(out), "fitnet")
    with pytest.raises(SystemExit, match=r"no finished run in .* for \['kd'\]; finished rows: \['fitnet'"):
        script_main(fit, str(out), "kd")
