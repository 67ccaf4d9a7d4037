"""The efficiency report: MACs, parameters and memory against hand counts; energy only when measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.data import DigitsDataModule
from distill.errors import ConfigError
from distill.evaluation import evaluate
from distill.measure import EnergyMeter, count_flops, parameter_count, peak_forward_memory
from distill.models import create_model
from distill.report import ReportEntry, build_report, write_report

FAST_REPORT = {"device": "cpu", "warmup": 1, "repeats": 5, "throughput_batch_size": 16}


def test_macs_of_small_cnn_equal_the_hand_count():
    model = create_model("small_cnn", 10, 1, {"width": 2})
    # conv 1->2 at 8x8: 64*2*9 = 1152; conv 2->4 stride 2 at 4x4: 16*4*2*9 = 1152;
    # conv 4->8 stride 2 at 2x2: 4*8*4*9 = 1152; linear 8->10: 80.  BN, ReLU and pooling are not MACs.
    assert count_flops(model, (1, 8, 8)) == {"macs": 3536, "flops": 7072}


def test_macs_of_a_linear_layer():
    assert count_flops(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))["macs"] == 60


def test_parameter_count_is_the_sum_of_numel():
    model = create_model("cifar_resnet8x4", 10, 1)
    assert parameter_count(model) == sum(p.numel() for p in model.parameters())


def test_peak_memory_matches_the_profilers_allocation_trace():
    from torch.profiler import ProfilerActivity, profile

    model = create_model("cifar_resnet8", 10, 3).eval()
    image = torch.zeros(1, 3, 32, 32)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
        model(image)
    running = peak = 0
    for event in sorted(trace.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    measured = peak_forward_memory(model, (3, 32, 32))
    assert measured["peak_activation_bytes"] == peak
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert measured["peak_forward_bytes"] == weights + 3 * 32 * 32 * 4 + peak


def test_energy_from_a_rapl_counter(tmp_path):
    domain = tmp_path / "intel-rapl:0"
    domain.mkdir()
    (domain / "energy_uj").write_text("1000000")
    (domain / "max_energy_range_uj").write_text("2000000")
    meter = EnergyMeter(torch.device("cpu"), rapl_root=tmp_path)
    assert meter.available

    def burn_half_a_joule():
        (domain / "energy_uj").write_text("1500000")

    assert meter.measure(burn_half_a_joule) == pytest.approx(0.5)

    def wrap_around():  # the counter passes its maximum and restarts from zero
        (domain / "energy_uj").write_text("250000")

    assert meter.measure(wrap_around) == pytest.approx(0.75)


def test_energy_is_not_invented_without_a_counter(tmp_path):
    meter = EnergyMeter(torch.device("cpu"), rapl_root=tmp_path / "none")
    assert not meter.available and "no Intel RAPL counters" in meter.reason


def tiny_report(tmp_path: Path) -> dict:
    data = DigitsDataModule(eval_batch_size=512)
    data.setup()
    teacher = create_model("small_cnn", 10, 1, {"width": 8})
    student = create_model("small_cnn", 10, 1, {"width": 2})
    entries = [ReportEntry("teacher", "small_cnn", teacher), ReportEntry("student", "small_cnn", student)]
    return build_report(entries, data, FAST_REPORT)


def test_report_fields_ratios_and_files(tmp_path):
    report = tiny_report(tmp_path)
    teacher, student = report["models"]
    for profile in (teacher, student):
        assert set(profile) >= {"accuracy", "params", "bytes", "macs", "flops", "memory", "speed"}
        assert profile["speed"]["latency_ms_batch1"]["median"] > 0
        assert profile["speed"]["latency_ms_batch1"]["p25"] <= profile["speed"]["latency_ms_batch1"]["p75"]
        assert profile["speed"]["throughput_images_per_s"]["median"] > 0
        assert profile["speed"]["threads"] == torch.get_num_threads()
        assert profile["bytes"]["fp16"] < profile["bytes"]["fp32"]
        assert profile["memory"]["peak_forward_bytes"] > 0
        assert 0 <= profile["accuracy"]["top1"] <= 1 and profile["accuracy"]["samples"] == 360
        assert profile["speed"]["energy"]["measured"] in (True, False)
    (comparison,) = report["comparisons"]
    assert comparison["params_ratio"] == pytest.approx(student["params"] / teacher["params"])
    assert comparison["macs_ratio"] == pytest.approx(3536 / teacher["macs"])
    assert comparison["accuracy_gap_points"] == pytest.approx(
        100 * (student["accuracy"]["top1"] - teacher["accuracy"]["top1"]))
    assert "kept" in comparison["summary"] and "% of its MACs" in comparison["summary"]

    paths = write_report(report, tmp_path)
    markdown = paths["markdown"].read_text()
    assert "| teacher: small_cnn |" in markdown and "| student: small_cnn |" in markdown
    assert "MACs / image" in markdown and "3,536" in markdown
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["models"][1]["macs"] == 3536


def test_distill_eval_on_a_run_folder_and_its_errors(make_cfg, tmp_path):
    from distill.runner import run

    cfg = make_cfg(run="run")
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    for name in ("report.json", "report.md", "accuracy_vs_macs.png"):
        assert (run_dir / name).is_file()
    run_report = json.loads((run_dir / "report.json").read_text())

    # The run folder alone is enough: its config says which data and models.
    (run_dir / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    eval_cfg = OmegaConf.create({"runs": [str(run_dir)], "model": None, "data": None, "architecture": None,
                                 "model_kwargs": {}, "label": None, "report": FAST_REPORT})
    report = evaluate(eval_cfg, tmp_path / "eval")
    assert [m["role"] for m in report["models"]] == ["teacher", "student"]
    assert [m["accuracy"]["top1"] for m in report["models"]] == [m["accuracy"]["top1"] for m in run_report["models"]]
    assert (tmp_path / "eval" / "report.md").is_file()

    wrong = OmegaConf.merge(eval_cfg, {"runs": [], "model": str(run_dir / "checkpoints" / "last.ckpt"),
                                       "architecture": "small_cnn", "data": cfg.data, "model_kwargs": {"width": 16}})
    with pytest.raises(ConfigError, match="do not fit model 'small_cnn'"):
        evaluate(wrong, tmp_path / "eval2")
    empty = tmp_path / "empty_run"
    (empty / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, empty / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match="has no exported student .* and no checkpoint"):
        evaluate(OmegaConf.merge(eval_cfg, {"runs": [str(empty)]}), tmp_path / "eval3")


def test_a_latency_measured_beside_other_work_is_measured_again_and_marked(monkeypatch):
    from distill import measure

    wide, tight = [0.1e-3, 0.1e-3, 1.0e-3, 1.0e-3, 3.0e-3], [0.50e-3, 0.51e-3, 0.52e-3, 0.50e-3, 0.51e-3]
    calls = iter([wide, tight])
    monkeypatch.setattr(measure, "time_calls", lambda call, device, warmup, repeats: next(calls))
    latency = measure.stable_latency(lambda: None, torch.device("cpu"), 1, 5)
    assert latency["stable"] and latency["attempts"] == 2 and latency["median"] == pytest.approx(0.51)

    monkeypatch.setattr(measure, "time_calls", lambda call, device, warmup, repeats: wide)
    latency = measure.stable_latency(lambda: None, torch.device("cpu"), 1, 5)
    assert not latency["stable"] and latency["attempts"] == measure.LATENCY_ATTEMPTS


def test_an_unstable_latency_is_not_turned_into_a_ratio():
    from distill.report import compare

    def entry(label, top1, params, macs, latency, stable):
        return {"label": label, "accuracy": {"top1": top1}, "params": params, "macs": macs,
                "speed": {"latency_ms_batch1": {"median": latency, "stable": stable}}}

    steady = compare(entry("student", 0.97, 10, 100, 0.2, True), entry("teacher", 0.98, 100, 1000, 2.0, True))
    assert steady["latency_ratio"] == pytest.approx(0.1) and "10.0 % of its batch-1 latency" in steady["summary"]
    busy = compare(entry("student", 0.97, 10, 100, 0.0001, False), entry("teacher", 0.98, 100, 1000, 2.0, True))
    assert busy["latency_ratio"] is None and "an unmeasured share of its batch-1 latency" in busy["summary"]


@pytest.mark.parametrize("teacher_top1", [0.0, float("nan")])
def test_the_report_survives_a_teacher_at_zero_or_nan_accuracy(tmp_path, teacher_top1):
    from distill.report import compare, report_markdown

    def entry(label, top1):
        return {"label": label, "role": label, "accuracy": {"top1": top1, "top5": None}, "params": 10, "macs": 100,
                "bytes": {"fp32": 40}, "memory": {"peak_forward_bytes": 1024},
                "speed": {"latency_ms_batch1": {"median": 0.2, "p25": 0.2, "p75": 0.2, "stable": True},
                          "throughput_images_per_s": {"median": 10.0}, "throughput_batch": 4,
                          "energy": {"measured": False, "reason": "no counter"}, "device": "cpu",
                          "device_name": "cpu", "threads": 1, "warmup": 1, "repeats": 3}}

    student, teacher = entry("student", 0.5), entry("teacher", teacher_top1)
    comparison = compare(student, teacher)
    assert comparison["accuracy_kept_percent"] is None
    assert "kept an undefined share of the teacher's top-1 accuracy" in comparison["summary"]
    report = {"dataset": "d", "input_shape": [1, 8, 8], "test_samples": 4, "models": [teacher, student],
              "comparisons": [comparison]}
    assert "kept an undefined share" in report_markdown(report)
    write_report(report, tmp_path)  # plots and files too
    assert (tmp_path / "report.md").is_file() and (tmp_path / "accuracy_vs_macs.png").is_file()
