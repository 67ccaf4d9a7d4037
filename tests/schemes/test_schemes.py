"""Training schemes (distill/schemes): teacher ensembles, chains, born-again generations, mutual learning."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import distill.schemes.chain as chain_module
from distill.losses import build_loss_terms, kd_loss
from distill.models import create_model
from distill.module import DistillationModule
from distill.runner import run
from distill.schemes.mutual import mutual_losses
from distill.summarize import summarize_sweep
from distill.teacher.ensemble import TeacherEnsemble
from distill.teacher.logits_cache import teacher_outputs_key
from tests.conftest import FAST

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "teacher.train.max_epochs=1"]
# A chain of small CNNs, widest first; the last entry is the run's student.
WIDTHS = (32, 16, 12, 8)


def chain_of(*widths: int) -> str:
    return "chain=[" + ",".join(f"{{name:small_cnn,kwargs:{{width:{w}}}}}" for w in widths) + "]"


def read_metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def small_cnn(seed: int, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", 10, 1, {"width": width}).eval()


def test_two_identical_teachers_give_the_single_teacher_loss():
    teacher = small_cnn(0)
    images, student_logits = torch.randn(16, 1, 8, 8), torch.randn(16, 10)
    with torch.no_grad():
        single = kd_loss(student_logits, teacher(images), 4.0)
        for aggregate in ("mean_probs", "mean_logits"):
            ensemble = TeacherEnsemble([teacher, copy.deepcopy(teacher)], aggregate, temperature=4.0)
            assert kd_loss(student_logits, ensemble(images), 4.0) == pytest.approx(single.item(), rel=1e-5)
        # A different second teacher changes the loss: the comparison above can fail.
        other = TeacherEnsemble([teacher, small_cnn(1)], "mean_probs", temperature=4.0)
        assert kd_loss(student_logits, other(images), 4.0).item() != pytest.approx(single.item(), rel=1e-3)


def test_mean_probs_logits_soften_to_the_weighted_mean_of_the_softened_teachers():
    first, second = small_cnn(0), small_cnn(1)
    images = torch.randn(8, 1, 8, 8)
    ensemble = TeacherEnsemble([first, second], "mean_probs", weights=[3, 1], temperature=4.0)
    with torch.no_grad():
        expected = 0.75 * F.softmax(first(images) / 4, 1) + 0.25 * F.softmax(second(images) / 4, 1)
        assert torch.allclose(F.softmax(ensemble(images) / 4, 1), expected, atol=1e-6)
        by_logits = TeacherEnsemble([first, second], "mean_logits", weights=[3, 1])
        assert torch.allclose(by_logits(images), 0.75 * first(images) + 0.25 * second(images), atol=1e-6)


def test_teacher_output_cache_keys_differ_by_teacher_set_aggregate_and_weights():
    data = {"name": "digits"}
    a, b, c = small_cnn(0), small_cnn(1), small_cnn(2)

    def key(teachers, aggregate="mean_probs", weights=None, temperature=4.0):
        ensemble = TeacherEnsemble(teachers, aggregate, weights, temperature)
        return teacher_outputs_key(ensemble, data, "digits", None, None)

    keys = [key([a, b]), key([a, c]), key([a, b, c]), key([a, b], "mean_logits"), key([a, b], weights=[2, 1]),
            key([a, b], temperature=2.0)]
    assert len(set(keys)) == len(keys)
    assert key([a, b]) == key([copy.deepcopy(a), copy.deepcopy(b)])  # same weights, same key


def test_per_teacher_term_reads_its_own_teacher():
    ensemble = TeacherEnsemble([small_cnn(0), small_cnn(1)], "mean_probs", temperature=4.0)
    terms = build_loss_terms({"kd@1": {"weight": 1.0, "temperature": 4.0}, "kd": {"weight": 1.0}})
    module = DistillationModule(student=small_cnn(3, width=4), teacher=ensemble, loss_terms=terms,
                                optimizer=torch.optim.SGD, num_classes=10, input_shape=(1, 8, 8))
    images = torch.randn(8, 1, 8, 8)
    batch = module._forward(images, torch.zeros(8, dtype=torch.long))
    with torch.no_grad():
        member = ensemble.teachers[1](images)
    assert torch.allclose(terms["kd@1"](batch), kd_loss(batch.student_logits, member, 4.0))
    assert not torch.allclose(terms["kd"](batch), terms["kd@1"](batch))


def test_ensemble_run_trains_each_teacher_by_its_key_and_reports_them_all(make_cfg):
    cfg = make_cfg(*TINY, "teachers=[small_cnn,{name:small_cnn,kwargs:{width:16}}]", "loss=kd_per_teacher",
                   "+loss.kd.weight=0.5")
    run(cfg)
    summary = read_metrics(cfg)
    members = summary["teacher"]["members"]
    assert [m["trained_now"] for m in members] == [True, True]
    assert members[0]["cache_key"] != members[1]["cache_key"]
    assert summary["scheme"]["method"] == "ensemble(mean_probs) kd@0+kd@1+kd"
    report = json.loads((Path(cfg.paths.output_dir) / "report.json").read_text())
    assert [m["role"] for m in report["models"]] == ["teacher", "teacher_0", "teacher_1", "student"]
    assert report["models"][1]["params"] > report["models"][2]["params"]  # width 32 vs 16


def test_chain_continues_from_the_first_uncached_link_and_a_second_run_trains_nothing(make_cfg, monkeypatch,
                                                                                      caplog):
    train_link = chain_module.train_link
    calls = []

    def failing_once(link_cfg, *args):
        calls.append(link_cfg.student.kwargs.width)
        if link_cfg.student.kwargs.width == WIDTHS[2] and calls.count(WIDTHS[2]) == 1:
            raise RuntimeError("interrupted")
        return train_link(link_cfg, *args)

    monkeypatch.setattr(chain_module, "train_link", failing_once)
    overrides = [*TINY, "report.enabled=false", chain_of(*WIDTHS)]
    with pytest.raises(RuntimeError, match="interrupted"):
        run(make_cfg(*overrides, run="first"))
    assert calls == [16, 12]

    rerun = make_cfg(*overrides, run="again")
    run(rerun)
    assert calls == [16, 12, 12, 8]  # link 1 came from the cache
    links = read_metrics(rerun)["scheme"]["links"]
    assert [link["trained_now"] for link in links] == [False, False, True, True]
    assert [link["role"] for link in links] == ["teacher", "assistant_1", "assistant_2", "student"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distill"):
        third = make_cfg(*overrides, "report.enabled=true", run="third")
        run(third)
    assert calls == [16, 12, 12, 8]
    summary = read_metrics(third)
    assert summary["scheme"]["trained_now"] == 0
    assert [link["cache_key"] for link in summary["scheme"]["links"]] == [link["cache_key"] for link in links]
    assert summary["student"]["test_acc_top1"] == links[-1]["test_acc_top1"]
    assert "nothing trained" in caplog.text
    report = json.loads((Path(third.paths.output_dir) / "report.json").read_text())
    assert [m["role"] for m in report["models"]] == ["teacher", "assistant_1", "assistant_2", "student"]
    # The exported student is the chain's last link.
    assert json.loads((Path(third.paths.output_dir) / "student.json").read_text())["model_kwargs"]["width"] == 8

    # A shorter chain with the same start reuses the cached first links.
    prefix = make_cfg(*TINY, "report.enabled=false", chain_of(*WIDTHS[:3]), run="prefix")
    run(prefix)
    assert calls == [16, 12, 12, 8]
    assert read_metrics(prefix)["scheme"]["trained_now"] == 0


def test_mutual_learning_trains_exports_and_measures_every_peer(make_cfg):
    cfg = make_cfg(*TINY, "stage=mutual", "mutual.peers=3")
    assert run(cfg) is not None
    summary = read_metrics(cfg)
    peers = [peer["test_acc_top1"] for peer in summary["peers"]]
    assert len(peers) == 3 and len(set(peers)) > 1  # different initialisations
    assert summary["student"]["test_acc_top1"] == pytest.approx(sum(peers) / 3, abs=1e-6)
    assert "teacher" not in summary
    run_dir = Path(cfg.paths.output_dir)
    assert all((run_dir / f"peer_{i}.safetensors").is_file() for i in range(3))
    report = json.loads((run_dir / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == [f"peer {i}: small_cnn" for i in range(3)]
    assert [m["accuracy"]["top1"] for m in report["models"]] == pytest.approx(peers, abs=1e-6)


def test_mutual_loss_of_a_peer_has_gradients_for_that_peer_only():
    logits = [torch.randn(6, 10, requires_grad=True) for _ in range(3)]
    targets = torch.randint(0, 10, (6,))
    ce, kl = mutual_losses(logits, targets, 2.0)
    (ce[0] + kl[0]).backward()
    assert logits[0].grad is not None and logits[1].grad is None and logits[2].grad is None
    expected = (kd_loss(logits[0], logits[1], 2.0) + kd_loss(logits[0], logits[2], 2.0)) / 2
    assert kl[0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert ce[1].item() == pytest.approx(F.cross_entropy(logits[1], targets).item())


@pytest.mark.slow  # a multirun subprocess of two jobs: ~30 s
def test_born_again_generations_sweep_gives_one_summary_row_each(tmp_path):
    command = [sys.executable, "-m", "distill.train", "-m", *FAST, *TINY, "report.enabled=false",
               "generations=1,2", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = summarize_sweep(tmp_path / "sweep")
    rows = {row["method"]: row for row in sweep["rows"]}
    assert set(rows) == {"kd", "born-again x2 kd"}
    assert rows["born-again x2 kd"]["overrides"] == "generations=2"
    born = json.loads((Path(rows["born-again x2 kd"]["runs"][0]) / "metrics.json").read_text())
    plain = json.loads((Path(rows["kd"]["runs"][0]) / "metrics.json").read_text())
    assert [link["role"] for link in born["scheme"]["links"]] == ["teacher", "generation_1", "student"]
    assert born["teacher"]["cache_key"] == plain["teacher"]["cache_key"]  # one teacher for the whole sweep


def test_born_again_report_holds_every_generation_and_their_ensemble(make_cfg):
    cfg = make_cfg(*TINY, "generations=2")
    run(cfg)
    report = json.loads((Path(cfg.paths.output_dir) / "report.json").read_text())
    assert [m["role"] for m in report["models"]] == ["teacher", "generation_1", "student", "ensemble"]
    generations = [m["params"] for m in report["models"][1:3]]
    assert report["models"][3]["params"] == sum(generations)
    assert read_metrics(cfg)["scheme"]["method"] == "born-again x2 kd"


@pytest.mark.parametrize("preset", ["ensemble", "takd", "born_again", "dml"])
def test_every_scheme_preset_composes_and_passes_the_checks(make_cfg, preset):
    from distill.schemes import check_scheme, scheme_name

    cfg = make_cfg(f"scheme={preset}", fast=False)
    check_scheme(cfg)
    expected = {"ensemble": "single", "takd": "chain", "born_again": "born_again", "dml": "mutual"}[preset]
    assert scheme_name(cfg) == expected
