"""Compression (distill/compress): ONNX export of the student and the teacher checked in onnxruntime, pruning
to a MACs target, pruned models reloaded without pickling, variant rows, and bad input (int8 and QAT:
test_compress_quantize.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from distill.compress import ort_runtime
from distill.compress.cli import compress_run
from distill.compress.onnx_io import export_checked, export_onnx
from distill.compress.prune import prune_to_macs
from distill.compress.settings import check_settings
from distill.config import CONF_DIR
from distill.errors import ConfigError
from distill.export import export_model, load_exported
from distill.layer_sizes import layer_sizes
from distill.measure import count_flops, measure_energy
from distill.models import create_model
from distill.report import energy_text, pareto_front
from distill.runner import prepare
from tests.helpers.compress import FAST_RUNTIME, compress_settings, default_student, digits_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    return digits_data()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_export_of_the_default_student_matches_pytorch_in_onnxruntime(digits, tmp_path, exporter):
    student = default_student()
    settings = compress_settings("int8", f"compress.onnx.exporter={exporter}").onnx
    images = digits.splits["test"].images
    check = export_checked(student, digits.input_shape, tmp_path / "student.onnx", images, settings, "small_cnn")
    assert check["images"] == len(images) == 360
    assert check["max_abs_logit_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    # Independently of the check: onnxruntime's logits on real test images are PyTorch's.
    session = ort_runtime.session(tmp_path / "student.onnx")
    with torch.no_grad():
        expected = student(images[:50]).numpy()
    np.testing.assert_allclose(ort_runtime.run_batches(session, images[:50].numpy()), expected, atol=1e-4)


def test_an_export_beyond_tolerance_is_an_error_and_leaves_no_file(digits, tmp_path):
    settings = OmegaConf.merge(compress_settings("int8").onnx, {"tolerance": -1.0})  # nothing can pass
    with pytest.raises(ConfigError, match=r"differs from PyTorch by up to .* the file was removed"):
        export_checked(default_student(), digits.input_shape, tmp_path / "s.onnx", digits.splits["test"].images[:8],
                       settings, "small_cnn")
    assert not (tmp_path / "s.onnx").exists()


class Untraceable(nn.Module):
    """Returns a Python number computed from the data: no exporter can turn that into a graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.flatten(1)).argmax(1).sum().item()


def test_a_model_the_exporter_cannot_trace_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"the torchscript ONNX exporter cannot trace Untraceable: .*Fix: try "
                                          r"compress.onnx.exporter=dynamo"):
        export_onnx(Untraceable(), (1, 8, 8), tmp_path / "u.onnx", "torchscript", 17, "Untraceable")
    assert not (tmp_path / "u.onnx").exists()


@pytest.mark.parametrize(("architecture", "kwargs", "ratio"),
                         [("small_cnn", {"width": 8}, 0.5), ("cifar_resnet8", {}, 0.5), ("cifar_resnet8", {}, 0.3)])
def test_pruning_hits_its_macs_target_within_five_percent(architecture, kwargs, ratio):
    torch.manual_seed(0)
    model = create_model(architecture, 10, 1, kwargs).eval()
    before = [p.clone() for p in model.parameters()]
    pruned, info = prune_to_macs(model, (1, 8, 8), ratio)
    measured = count_flops(pruned, (1, 8, 8))["macs"] / count_flops(model, (1, 8, 8))["macs"]
    assert abs(measured - ratio) <= 0.05 * ratio
    assert info["macs_ratio_reached"] == pytest.approx(measured)
    assert pruned.get_classifier().out_features == 10  # the classifier keeps every class
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the original is untouched


RELOAD = """
import sys, torch
from safetensors.torch import load_file, save_file
from distill.export import load_exported
model, description = load_exported(sys.argv[1])
images = load_file(sys.argv[2])["images"]
with torch.no_grad():
    save_file({"logits": model(images)}, sys.argv[3])
"""


def test_a_pruned_model_reloads_in_a_fresh_process_with_identical_logits(digits, tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet8", 10, 1).eval()
    pruned, info = prune_to_macs(model, (1, 8, 8), 0.5)
    path = export_model(pruned, "cifar_resnet8", {"num_classes": 10, "in_chans": 1}, tmp_path, stem="pruned",
                        extra={"layers": layer_sizes(pruned), "pruning": info})
    description = json.loads(path.read_text())
    assert description["layers"]["conv1"]["out_channels"] < 16  # the record holds the narrower sizes
    images = digits.splits["test"].images[:32]
    save_file({"images": images.contiguous()}, str(tmp_path / "images.safetensors"))
    subprocess.run([sys.executable, "-c", RELOAD, str(path), str(tmp_path / "images.safetensors"),
                    str(tmp_path / "logits.safetensors")], check=True, cwd=REPO, timeout=120,
                   env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    with torch.no_grad():
        expected = pruned(images)
    assert torch.equal(load_file(str(tmp_path / "logits.safetensors"))["logits"], expected)
    reloaded, _ = load_exported(path)  # and the same in this process
    assert [p.shape for p in reloaded.parameters()] == [p.shape for p in pruned.parameters()]


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_a_macs_ratio_outside_zero_one_fails_before_training(make_cfg, ratio):
    with pytest.raises(ConfigError, match=rf"compress.prune.macs_ratio={ratio} must lie strictly between 0 and 1"):
        prepare(make_cfg("compress=prune", f"compress.prune.macs_ratio={ratio}"))


def test_bad_compress_values_name_the_value_and_the_choices():
    with pytest.raises(ConfigError, match=r"compress.onnx.exporter=jit is not one of: torchscript, dynamo"):
        check_settings(compress_settings("int8", "compress.onnx.exporter=jit"))
    with pytest.raises(ConfigError, match=r"compress.prune.loss=kdd is not a loss preset; choose one of: .*kd"):
        check_settings(compress_settings("prune", "compress.prune.loss=kdd"))
    with pytest.raises(ConfigError, match=r"compress.steps has unknown step\(s\) \['fp16'\]"):
        check_settings(compress_settings("int8", "compress.steps=[fp16]"))
    assert check_settings(compress_settings("none")) == []
    assert check_settings(compress_settings("prune_int8")) == ["onnx", "int8", "prune"]


def fake_run(folder: Path, student: nn.Module | None) -> Path:
    """A run folder as distill-train leaves it: its config, and the exported student when given."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["logger=csv", f"paths.output_dir={folder}"])
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    if student is not None:
        export_model(student, "small_cnn", {"width": 8, "num_classes": 10, "in_chans": 1}, folder)
    return folder


def test_distill_compress_on_a_run_folder_adds_the_int8_variants_to_its_report(tmp_path):
    run_dir = fake_run(tmp_path / "run", default_student())
    result = compress_run(run_dir, compress_settings("int8"))
    variants = {row["variant"]: row for row in result["variants"]}
    assert list(variants) == ["PyTorch fp32", "ONNX fp32", "ONNX int8"]
    assert variants["ONNX int8"]["bytes"] < 0.5 * variants["ONNX fp32"]["bytes"]
    assert variants["ONNX fp32"]["accuracy"]["top1"] == variants["PyTorch fp32"]["accuracy"]["top1"]
    for row in variants.values():
        assert row["accuracy"]["samples"] == 360 and row["speed"]["threads"] == 1
        assert row["speed"]["latency_ms_batch1"]["median"] > 0 and row["macs"] == 41792
    report = (run_dir / "report.md").read_text()
    assert "| ONNX int8 | onnxruntime |" in report and "student.int8.onnx" in report
    assert json.loads((run_dir / "report.json").read_text())["variants"][2]["file"] == "student.int8.onnx"
    assert (run_dir / "accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_distill_compress_exports_the_teacher_of_a_distill_run_checked_in_onnxruntime(tmp_path):
    run_dir = fake_run(tmp_path / "run", default_student())
    torch.manual_seed(1)
    teacher = create_model("cifar_resnet20", 10, 1).eval()
    export_model(teacher, "cifar_resnet20", {"num_classes": 10, "in_chans": 1}, run_dir, stem="teacher")
    result = compress_run(run_dir, compress_settings("int8"))
    variants = {row["variant"]: row for row in result["variants"]}
    assert list(variants) == ["PyTorch fp32", "ONNX fp32", "teacher ONNX fp32", "ONNX int8"]
    row = variants["teacher ONNX fp32"]
    check = row["details"]["export_check"]
    assert row["file"] == "teacher.onnx" and (run_dir / "teacher.onnx").is_file()
    assert check["images"] == 360 and check["max_abs_logit_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    assert row["params"] == sum(p.numel() for p in teacher.parameters()) and row["accuracy"]["samples"] == 360
    assert "| teacher ONNX fp32 | onnxruntime |" in (run_dir / "report.md").read_text()


def test_a_teacher_run_with_compress_exports_only_the_checked_teacher_onnx(make_cfg, digits, tmp_path, caplog):
    from distill.compress.pipeline import compress

    cfg = make_cfg("stage=teacher", "compress=int8", *FAST_RUNTIME)
    teacher = create_model("cifar_resnet8", 10, 1).eval()
    result = compress(cfg, teacher, None, digits, tmp_path, "cifar_resnet8", {})
    (row,) = result["variants"]
    assert row["variant"] == "teacher ONNX fp32" and row["details"]["export_check"]["top1_agreement"] == 1.0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["teacher.onnx"]
    assert "['int8'] apply to students" in caplog.text
    assert compress(make_cfg("stage=teacher", run="none"), teacher, None, digits, tmp_path, "cifar_resnet8", {}) is None


def test_distill_compress_without_an_exported_student_fails_with_exit_code_2(tmp_path):
    run_dir = fake_run(tmp_path / "run", None)
    with pytest.raises(ConfigError, match=r"has no exported student \(student.json\)"):
        compress_run(run_dir, compress_settings("int8"))
    done = subprocess.run([sys.executable, "-m", "distill.compress.cli", f"run={run_dir}", "compress=int8",
                           f"hydra.run.dir={tmp_path / 'log'}"], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "has no exported student" in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_energy_below_the_counters_resolution_is_said_not_printed_as_zero(tmp_path, monkeypatch):
    domain = tmp_path / "intel-rapl:0"
    domain.mkdir()
    (domain / "energy_uj").write_text("1000")  # a counter that never advances
    (domain / "max_energy_range_uj").write_text("2000000")
    from distill import measure

    real_meter = measure.EnergyMeter
    monkeypatch.setattr(measure, "EnergyMeter", lambda device: real_meter(device, rapl_root=tmp_path))
    monkeypatch.setattr(measure, "ENERGY_SECONDS", 0.01)
    energy = measure_energy(lambda: None, 16, 1000.0, torch.device("cpu"))
    assert not energy["measured"] and energy["below_resolution"] and energy_text(energy) == "below resolution"
    assert energy_text({"measured": True, "joules_per_image": 3.2e-7}) == "320 nJ"
    assert energy_text({"measured": True, "joules_per_image": 0.0042}) == "4.2 mJ"


def test_pareto_front_keeps_only_points_nothing_beats():
    # (latency ms, top-1 %): the second is slower and less accurate than the first; the last is the fastest.
    assert pareto_front([(1.0, 95.0), (2.0, 94.0), (3.0, 97.0), (0.5, 90.0)]) == [True, False, True, True]


@pytest.mark.slow
def test_distill_train_with_prune_int8_reports_every_variant(make_cfg):
    from distill.runner import run

    cfg = make_cfg("compress=prune_int8", "compress.prune.epochs=2", *FAST_RUNTIME)
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())["compress"]
    assert [v["variant"] for v in summary["variants"]] == [
        "PyTorch fp32", "ONNX fp32", "teacher ONNX fp32", "ONNX int8", "pruned PyTorch fp32", "pruned ONNX fp32",
        "pruned ONNX int8"]
    reloaded, description = load_exported(run_dir / "pruned.json")
    assert abs(description["pruning"]["macs_ratio_reached"] - 0.5) <= 0.025
    for name in ("student.onnx", "teacher.onnx", "student.int8.onnx", "pruned.onnx", "pruned.int8.onnx",
                 "accuracy_vs_latency.png"):
        assert (run_dir / name).is_file()


def test_distill_summarize_carries_the_variants_into_the_sweep_table(tmp_path):
    from distill.summarize import summarize_sweep

    for job, (seed, int8_top1) in enumerate([(0, 0.95), (1, 0.97)]):
        folder = tmp_path / "sweep" / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text(f"stage: distill\nseed: {seed}\nloss: {{kd: {{}}}}\n")
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- compress=int8\n")
        (folder / "metrics.json").write_text(json.dumps({"student": {"test_acc_top1": 0.96}}))
        speed = {"latency_ms_batch1": {"median": 0.05}}
        variants = [{"variant": "ONNX int8", "runtime": "onnxruntime", "bytes": 9733, "macs": 41792,
                     "accuracy": {"top1": int8_top1}, "speed": speed}]
        (folder / "report.json").write_text(json.dumps({"models": [], "variants": variants}))
    result = summarize_sweep(tmp_path / "sweep")
    (row,) = result["rows"]
    (variant,) = row["variants"]
    assert variant["runs"] == 2 and variant["top1_mean"] == pytest.approx(96.0) and variant["bytes"] == 9733
    assert "| kd | — | ONNX int8 | onnxruntime | 2 | 96.00 ± 1.41 | 9.5 KiB | 41,792 | 0.050 |" in result["table"]
    assert "ONNX int8" in (tmp_path / "sweep" / "summary_variants.csv").read_text()


def test_a_later_distill_compress_keeps_the_rows_it_did_not_redo(tmp_path):
    from distill.compress.pipeline import merge_rows

    (tmp_path / "pruned.onnx").write_bytes(b"x")

    def row(name: str, file: str, top1: float) -> dict:
        return {"variant": name, "file": file, "accuracy": {"top1": top1}}

    earlier = [row("ONNX int8", "student.int8.onnx", 0.9), row("pruned ONNX fp32", "pruned.onnx", 0.8),
               row("QAT ONNX int8", "qat.int8.onnx", 0.7)]  # its file was deleted since
    new = [row("ONNX fp32", "student.onnx", 0.95), row("ONNX int8", "student.int8.onnx", 0.94)]
    merged = merge_rows(earlier, new, tmp_path)
    assert [(r["variant"], r["accuracy"]["top1"]) for r in merged] == [
        ("ONNX fp32", 0.95), ("ONNX int8", 0.94), ("pruned ONNX fp32", 0.8)]
