"""Loss presets end to end: those with initialisation stages or that need a pair of equal widths."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.runner import run


# FSP and KDSVD compare channels one to one, so they need a pair of equal widths: resnet20 -> resnet8 has the
# four feature_info stages of FSP's preset (as resnet32x4 -> resnet8x4); KDSVD's three stages fit small CNNs.
@pytest.mark.parametrize(("preset", "extra"), [("ab", ()), ("fsp", ("teacher=cifar_resnet20", "student=cifar_resnet8")),
                                               ("kdsvd", ("teacher.kwargs.width=8",)), ("ft", ())])
def test_presets_with_init_stages_or_equal_widths_run_end_to_end(make_cfg, preset, extra):
    cfg = make_cfg(f"loss={preset}", "trainer.fast_dev_run=true", "teacher.train.max_epochs=1", *extra,
                   shared_cache=True)
    run(cfg)
    assert (Path(cfg.paths.output_dir) / "student.safetensors").is_file()
