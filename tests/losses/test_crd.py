"""CRD: NCE loss, scores and memory updates by hand; sampling rules; memory banks checkpointed and restored."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms, nce_loss
from distill.losses.crd import contrast_scores, momentum_update
from distill.runner import run
from tests.losses.helpers import DOUBLE, randn, scalar


def test_nce_loss_is_eq_18_by_loops():
    scores = torch.rand(3, 5, generator=torch.Generator().manual_seed(0), dtype=DOUBLE) * 2
    num_data, k, eps = 40, 4, 1e-7
    noise = k / num_data
    total = 0.0
    for row in scores.tolist():
        total += math.log(row[0] / (row[0] + noise + eps))
        total += sum(math.log(noise / (p + noise + eps)) for p in row[1:])
    assert_close(nce_loss(scores, num_data), scalar(-total / 3))


@pytest.mark.parametrize("rows", [6, 12])  # 6 <= (K+1) d = 9: every row scored, then picked; 12: rows gathered
def test_contrast_scores_by_loops_on_both_paths(rows):
    memory = F.normalize(randn(rows, 3, seed=1), dim=1)
    anchors = F.normalize(randn(2, 3, seed=2), dim=1).requires_grad_()
    contrast = torch.tensor([[4, 0, 1], [2, 5, 5]])
    expected = [[math.exp(sum(a * m for a, m in zip(anchors[i].tolist(), memory[j].tolist())) / 0.07)
                 for j in row] for i, row in enumerate(contrast.tolist())]
    scores = contrast_scores(anchors, memory, contrast, 0.07)
    assert_close(scores, torch.tensor(expected, dtype=DOUBLE))
    # d/dv_i sum_j exp(m_j . v_i / T) = sum_j exp(...) m_j / T; a repeated index (5, 5) counts twice.
    scores.sum().backward()
    for i, row in enumerate(contrast.tolist()):
        grad = sum(expected[i][k] * memory[j] / 0.07 for k, j in enumerate(row))
        assert_close(anchors.grad[i], grad)


def test_momentum_update_by_loops():
    memory = F.normalize(randn(6, 3, seed=1), dim=1)
    anchors = F.normalize(randn(2, 3, seed=2), dim=1)

    before = memory.clone()
    momentum_update(memory, torch.tensor([4, 2]), anchors, momentum=0.5)
    for row, index in enumerate([4, 2]):
        mixed = [0.5 * m + 0.5 * a for m, a in zip(before[index].tolist(), anchors[row].tolist())]
        norm = math.sqrt(sum(x * x for x in mixed))
        assert_close(memory[index], torch.tensor([x / norm for x in mixed], dtype=DOUBLE))
    untouched = [0, 1, 3, 5]
    assert torch.equal(memory[untouched], before[untouched])


def crd_term(mode: str = "exact", negatives: int = 8, labels: list[int] | None = None):
    (term,) = build_loss_terms({"crd": {"weight": 0.8, "negatives": negatives, "feature_dim": 4,
                                        "mode": mode}}).values()
    term.build({"pre_logits": torch.zeros(2, 5)}, {"pre_logits": torch.zeros(2, 7)})
    labels = torch.tensor(labels or [0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    term.attach_data(LabelledData(labels))
    return term.double(), labels


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_negatives_come_from_other_classes_and_the_positive_from_the_mode(mode):
    torch.manual_seed(0)
    term, labels = crd_term(mode, negatives=200)
    indices, targets = torch.tensor([0, 4, 9]), labels[torch.tensor([0, 4, 9])]
    contrast = term.contrast_indices(indices, targets)
    assert contrast.shape == (3, 201)
    for row, target in zip(contrast, targets):
        assert (labels[row[1:]] != target).all()
        assert len(set(row[1:].tolist())) == int((labels != target).sum())  # 200 draws reach every candidate
    if mode == "exact":
        assert torch.equal(contrast[:, 0], indices)
    else:
        assert torch.equal(labels[contrast[:, 0]], targets)


def test_crd_term_fixes_z_on_the_first_batch_and_updates_the_banks_of_the_batch():
    torch.manual_seed(0)
    term, labels = crd_term()
    student, teacher = randn(3, 5, seed=3), randn(3, 7, seed=4)
    indices = torch.tensor([1, 3, 8])
    contrast = torch.tensor([[1, 0, 2, 5], [3, 1, 2, 4], [8, 0, 1, 3]])
    term.contrast_indices = lambda *args: contrast
    memory_student, memory_teacher = term.memory_student.clone(), term.memory_teacher.clone()
    batch = DistillBatch(labels[indices], torch.zeros(3, 3, dtype=DOUBLE), torch.zeros(3, 3, dtype=DOUBLE),
                         {"pre_logits": student}, {"pre_logits": teacher}, indices=indices)
    value = term(batch)

    v_s, v_t = term.embed_student(student).detach(), term.embed_teacher(teacher).detach()

    def scores(anchors, memory):
        return [[math.exp(float(anchors[i] @ memory[j]) / 0.07) for j in row]
                for i, row in enumerate(contrast.tolist())]

    s_scores, t_scores = scores(v_s, memory_teacher), scores(v_t, memory_student)
    z_s, z_t = mean_all(s_scores) * 10, mean_all(t_scores) * 10
    assert_close(term.normalizers, torch.tensor([z_s, z_t], dtype=DOUBLE))

    def nce(rows, z):
        noise = 3 / 10
        return -sum(math.log(r[0] / z / (r[0] / z + noise + 1e-7))
                    + sum(math.log(noise / (p / z + noise + 1e-7)) for p in r[1:]) for r in rows) / len(rows)

    assert_close(value, scalar(nce(s_scores, z_s) + nce(t_scores, z_t)))
    assert_close(term.memory_student[indices], F.normalize(0.5 * memory_student[indices] + 0.5 * v_s, dim=1))
    assert torch.equal(term.memory_teacher[[0, 2]], memory_teacher[[0, 2]])
    term(batch)
    assert_close(term.normalizers, torch.tensor([z_s, z_t], dtype=DOUBLE))  # kept after the first batch


class LabelledData:
    """The one thing CRD reads from a data module: every training sample's label, by index."""

    def __init__(self, labels: torch.Tensor) -> None:
        self._labels = labels

    @property
    def train_labels(self) -> torch.Tensor:
        return self._labels


def mean_all(rows: list[list[float]]) -> float:
    return sum(sum(r) for r in rows) / sum(len(r) for r in rows)


def test_crd_without_sample_indices_says_which_data_modules_have_them():
    (term,) = build_loss_terms({"crd": {}}).values()
    term.build({"pre_logits": torch.zeros(2, 5)}, {"pre_logits": torch.zeros(2, 7)})

    class StreamingDataModule:
        pass

    with pytest.raises(ConfigError, match=r"loss.crd needs each training sample's index and label, and "
                                          r"StreamingDataModule has no train_labels.*digits, .*image_folder"):
        term.attach_data(StreamingDataModule())
    with pytest.raises(ConfigError, match="mode='loose' is unknown"):
        build_loss_terms({"crd": {"mode": "loose"}})


class MemoryProbe(L.Callback):
    """Keeps a copy of CRD's buffers as training starts (after Lightning restored a resumed checkpoint)."""

    seen: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "crd" not in pl_module.loss_terms:  # the teacher's own training
            return
        term = pl_module.loss_terms["crd"]
        MemoryProbe.seen.append({name: getattr(term, name).clone()
                                 for name in ("memory_student", "memory_teacher", "normalizers")})


def test_resume_restores_both_memory_banks_and_z_bit_for_bit(make_cfg):
    common = ["loss=crd", "loss.crd.negatives=64", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
              "teacher.train.max_epochs=1", "+callbacks.memory_probe._target_=tests.losses.test_crd.MemoryProbe"]
    first = make_cfg(*common, "trainer.max_epochs=1", run="first")
    run(first)
    checkpoint = torch.load(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert state["loss_terms.crd.memory_student"].shape == (1293, 128)
    assert (state["loss_terms.crd.normalizers"] > 0).all()
    MemoryProbe.seen.clear()
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={last}", run="resumed")
    run(resumed)
    restored = MemoryProbe.seen[0]
    for name in ("memory_student", "memory_teacher", "normalizers"):
        assert torch.equal(restored[name], state[f"loss_terms.crd.{name}"]), name


def test_crd_runs_on_an_image_folder(make_cfg, tmp_path):
    from scripts.bad_inputs.image_folders import make_image_folder

    make_image_folder(tmp_path / "images")
    cfg = make_cfg("loss=crd", "loss.crd.negatives=4", "data=image_folder", f"data.root={tmp_path / 'images'}",
                   "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0",
                   "teacher.train.max_epochs=1", "trainer.max_epochs=1", "report.enabled=false")
    run(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["loss_terms.crd.memory_student"].shape == (8, 128)  # one row per training image
    assert (state["loss_terms.crd.normalizers"] > 0).all()  # Z was set from a real batch
