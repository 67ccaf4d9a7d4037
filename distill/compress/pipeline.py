"""The compression steps in order, each leaving a deployable file beside ``student.json``, then one measured
row per variant in the run's efficiency report (``report.md``, ``report.json``, ``accuracy_vs_latency.png``).

Used by ``distill-train`` after the student is exported and by ``distill-compress`` on an existing run.
"""

from __future__ import annotations

import copy
import logging
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress import onnx_io, prune, qat, quantize, recover
from distill.compress.settings import check_settings
from distill.compress.structure import layer_sizes
from distill.compress.variants import Variant, measure_variant, plot_accuracy_vs_latency
from distill.errors import CompressionFailed
from distill.export import export_model
from distill.io import atomic_write, read_json, write_json
from distill.measure import accuracy
from distill.report import report_markdown, write_report

log = logging.getLogger("distill")

# The report row a failed step would have made (the first file the step writes).
STEP_VARIANTS = {"onnx": "ONNX fp32", "int8": "ONNX int8", "prune": "pruned PyTorch fp32", "qat": "QAT ONNX int8"}


def test_images(datamodule: Any, count: int) -> torch.Tensor:
    """The first ``count`` test images: the export check runs on real data, not noise."""
    batches, taken = [], 0
    for images, *_ in datamodule.test_dataloader():
        batches.append(images[: count - taken])
        taken += len(batches[-1])
        if taken >= count:
            break
    return torch.cat(batches)


class Compressor:
    """Holds what every step needs: the run's config, the data, the student and where files go."""

    def __init__(self, cfg: DictConfig, student: nn.Module, teacher: nn.Module | None, datamodule: Any,
                 run_dir: Path, architecture: str, model_kwargs: dict[str, Any]) -> None:
        self.cfg = cfg
        self.settings = cfg.compress
        self.student = student.cpu().eval()
        self.teacher = teacher
        self.datamodule = datamodule
        self.run_dir = Path(run_dir)
        self.architecture = architecture
        self.model_kwargs = model_kwargs
        self.input_shape = tuple(datamodule.input_shape)
        self.datamodule.setup("fit")
        self.datamodule.setup("test")
        self.check_images = test_images(datamodule, self.settings.onnx.check_images)
        self.variants: list[Variant] = []
        self.failures: list[dict[str, Any]] = []

    def onnx(self, model: nn.Module, stem: str, label: str) -> Variant:
        check = onnx_io.export_checked(model, self.input_shape, self.run_dir / f"{stem}.onnx", self.check_images,
                                       self.settings.onnx, label, self.settings.runtime.threads)
        log.info("%s.onnx: max |logit diff| %.3g against PyTorch, top-1 agreement %.2f %% (%s exporter)", stem,
                 check["max_abs_logit_diff"], 100 * check["top1_agreement"], check["exporter"])
        return self._add(Variant(f"{label} ONNX fp32".strip(), Path(check["file"]), model, "fp32",
                                 {"export_check": check}))

    def int8(self, fp32: Variant, stem: str, label: str) -> Variant:
        settings = self.settings.int8
        images = quantize.training_images(self.datamodule, settings.calibration_images, settings.seed)
        reader = quantize.TrainingImagesReader(images, settings.calibration_batch_size)
        info = quantize.quantize_int8(fp32.file, self.run_dir / f"{stem}.int8.onnx", reader, settings)
        return self._add(Variant(f"{label} ONNX int8".strip(), Path(info["file"]), fp32.model, "int8",
                                 {"quantization": info}))

    def prune(self) -> Variant:
        settings = self.settings.prune
        pruned, info = prune.prune_to_macs(self.student, self.input_shape, settings.macs_ratio, settings.importance,
                                           settings.round_to, settings.tolerance)
        info["test_top1_before_recovery"] = accuracy(pruned, self.datamodule.test_dataloader(),
                                                     self.datamodule.num_classes)["top1"]
        teacher = copy.deepcopy(self.student) if settings.teacher == "unpruned" else self.teacher
        assert teacher is not None, "check_settings refuses prune.teacher=teacher without a teacher"
        loss = recover.loss_config(settings.loss, self.cfg.loss, "prune.loss")
        result = recover.distill_into(self.cfg, pruned, teacher, self.datamodule, self.run_dir / "compress" / "prune",
                                      settings.epochs, loss)
        pruned = pruned.cpu().eval()
        info.update({"teacher": settings.teacher, "loss": list(loss.keys()), "epochs": settings.epochs,
                     "test_top1_after_recovery": result.metrics.get("test/acc_top1")})
        description = export_model(pruned, self.architecture, self.model_kwargs, self.run_dir, stem="pruned",
                                   extra={"layers": layer_sizes(pruned), "pruning": info,
                                          "input_shape": list(self.input_shape)})
        log.info("pruned model: %s (top-1 %.2f %% before recovery, %.2f %% after)", description,
                 100 * info["test_top1_before_recovery"], 100 * (info["test_top1_after_recovery"] or 0))
        return self._add(Variant("pruned PyTorch fp32", description.with_suffix(".safetensors"), pruned, "fp32",
                                 {"pruning": info}))

    def qat(self) -> Variant | None:
        settings = self.settings.qat
        prepared = qat.prepare_qat(self.student, self.input_shape)
        qat.calibrate(prepared, quantize.training_images(self.datamodule, settings.calibration_images))
        loss = recover.loss_config(settings.loss, self.cfg.loss, "qat.loss")
        result = recover.distill_into(self.cfg, prepared, copy.deepcopy(self.student), self.datamodule,
                                      self.run_dir / "compress" / "qat", settings.epochs, loss, lr=settings.lr)
        path = qat.convert_to_onnx(prepared, self.input_shape, self.run_dir / "qat.int8.onnx",
                                   self.settings.onnx.opset)
        info = {"epochs": settings.epochs, "loss": list(loss.keys()), "lr": settings.lr, "versions": qat.versions(),
                "calibration_images": settings.calibration_images,
                "test_top1_fake_quantized": result.metrics.get("test/acc_top1"),
                "flow": "torchao PT2E: prepare_qat_pt2e(X86InductorQuantizer) -> convert_pt2e -> ONNX (dynamo)"}
        return self._add(Variant("QAT ONNX int8", path, self.student, "int8", {"qat": info}))

    def _add(self, variant: Variant) -> Variant:
        self.variants.append(variant)
        return variant

    def run(self, steps: list[str]) -> None:
        """Run the steps in order. The first that fails ends the sequence and is recorded in ``failures``:
        the variants made before it are kept (and measured), and ``compress`` then fails the run."""
        student_file = self.run_dir / "student.safetensors"
        self._add(Variant("PyTorch fp32", student_file, self.student, "fp32"))
        step = "onnx"
        try:
            fp32 = self.onnx(self.student, "student", "")
            if self.teacher is not None:  # every model a run exports ships as ONNX too, checked the same way
                self.onnx(self.teacher.cpu().eval(), "teacher", "teacher")
            if "int8" in steps:
                step = "int8"
                self.int8(fp32, "student", "")
            if "prune" in steps:
                step = "prune"
                pruned = self.prune()
                pruned_onnx = self.onnx(pruned.model, "pruned", "pruned")
                if "int8" in steps:
                    self.int8(pruned_onnx, "pruned", "pruned")
            if "qat" in steps:
                step = "qat"
                self.qat()
        except Exception as error:
            log.error("compression step %s failed: %s: %s", step, type(error).__name__, error)
            self.failures.append({"step": step, "variant": STEP_VARIANTS[step],
                                  "error": f"{type(error).__name__}: {error}", "versions": qat.versions(),
                                  "traceback": traceback.format_exc()[-4000:]})


def compress(cfg: DictConfig, student: nn.Module, teacher: nn.Module | None, datamodule: Any, run_dir: str | Path,
             architecture: str, model_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Run the steps ``cfg.compress`` asks for and add the variants to the run's report; None when there are none.

    In a ``stage=teacher`` run the trained teacher comes as ``student`` (it is the run's model); only its
    checked ONNX export applies there, the other steps compress students.
    """
    if cfg.get("stage") == "teacher":
        return compress_teacher_run(cfg, student, datamodule, Path(run_dir))
    steps = check_settings(cfg.get("compress"), teacher is not None)
    if not steps:
        return None
    compressor = Compressor(cfg, student, teacher, datamodule, Path(run_dir), architecture, model_kwargs)
    compressor.run(steps)
    rows = [measure_variant(variant, datamodule, cfg.compress.runtime) for variant in compressor.variants]
    summary = write_variants(Path(run_dir), rows, compressor.failures, steps, cfg.compress, datamodule)
    if compressor.failures:  # asked for and not made: the run fails, with what was made kept and reported
        failure = compressor.failures[0]
        raise CompressionFailed(failure["step"], failure["error"], Path(run_dir) / "compress.json")
    return summary


def compress_teacher_run(cfg: DictConfig, teacher: nn.Module, datamodule: Any, run_dir: Path) -> dict[str, Any] | None:
    """``teacher.onnx`` of a ``stage=teacher`` run, checked and measured like the student's export."""
    steps = check_settings(cfg.get("compress"), has_teacher=False, only=("onnx",))
    if not steps:
        return None
    skipped = [step for step in steps if step != "onnx"]
    if skipped:
        log.warning("compress steps %s apply to students; a stage=teacher run exports only teacher.onnx", skipped)
    compressor = Compressor(cfg, teacher, None, datamodule, run_dir, cfg.teacher.name, {})
    variant = compressor.onnx(compressor.student, "teacher", "teacher")
    return write_variants(run_dir, [measure_variant(variant, datamodule, cfg.compress.runtime)], [], ["onnx"],
                          cfg.compress, datamodule)


VARIANT_ORDER = ("PyTorch fp32", "ONNX fp32", "teacher ONNX fp32", "ONNX int8", "pruned PyTorch fp32",
                 "pruned ONNX fp32", "pruned ONNX int8", "QAT ONNX int8")


def merge_rows(earlier: list[dict[str, Any]], new: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """This call's rows, plus the rows of an earlier call that this one did not redo and whose file is still
    there (``distill-compress compress=qat`` after ``compress=prune`` keeps the pruned rows)."""
    names = {row["variant"] for row in new}
    kept = [row for row in earlier if row["variant"] not in names and (run_dir / row["file"]).is_file()]
    rank = {name: index for index, name in enumerate(VARIANT_ORDER)}
    return sorted(kept + new, key=lambda row: rank.get(row["variant"], len(rank)))


def write_variants(run_dir: Path, rows: list[dict[str, Any]], failures: list[dict[str, Any]], steps: list[str],
                   settings: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Add the rows to ``report.json``/``report.md`` (made when the run wrote none), plot them, keep a summary."""
    report_path = run_dir / "report.json"
    report = read_json(report_path) if report_path.is_file() else {
        "dataset": type(datamodule).__name__, "input_shape": list(datamodule.input_shape),
        "test_samples": rows[0]["accuracy"]["samples"], "models": [], "comparisons": []}
    report["variants"] = merge_rows(report.get("variants", []), rows, run_dir)
    report["variant_failures"] = [{k: v for k, v in f.items() if k != "traceback"} for f in failures]
    plot = plot_accuracy_vs_latency(report["variants"], run_dir / "accuracy_vs_latency.png",
                                    "variants: accuracy vs latency")
    if report["models"]:
        write_report(report, run_dir, title="accuracy vs MACs")
    else:
        write_json(report_path, report)
        atomic_write(run_dir / "report.md", lambda tmp: tmp.write_text(report_markdown(report)))
    summary = {"steps": steps, "settings": OmegaConf.to_container(settings, resolve=True), "variants": rows,
               "failures": failures, "files": {"report": str(run_dir / "report.md"), "plot": str(plot)}}
    write_json(run_dir / "compress.json", summary)
    return summary
