"""MLKD against loops over samples, classes and temperatures, against a transcription of the authors' code, its
preset, logit standardisation and a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.testing import assert_close

from distill.config import CONF_DIR
from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms, kd_loss
from distill.losses.mlkd import (
    batch_correlation_loss,
    class_correlation_loss,
    mlkd_levels,
    mlkd_loss,
    share_at_or_below_median,
)
from distill.models import create_model
from distill.module import DistillationModule
from distill.runner import run
from tests.losses.helpers import DOUBLE, STUDENT_LOGITS, TEACHER_LOGITS, hand_kd, randn, scalar, softmax
from tests.losses.test_logits import hand_standardize

# Four samples, so an even batch; the first two teacher rows are equal (a tie in the confidences).
STUDENT_EVEN = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.5, -0.5, 1.0], [-2.0, 1.0, 0.0, 0.5], [0.0, 0.0, 3.0, -1.0]]
TEACHER_EVEN = [[3.0, 0.0, 1.0, -1.0], [3.0, 0.0, 1.0, -1.0], [-1.0, 2.5, 0.5, 0.0], [0.5, 1.0, 2.0, 1.5]]

# ---------------------------------------------------------------- by hand


def hand_median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def hand_share(values: list[float]) -> float:
    """The fraction of the values at most their median."""
    median = hand_median(values)
    return sum(1 for v in values if v <= median) / len(values)


def hand_probabilities(logits: list[list[float]], temperature: float) -> list[list[float]]:
    return [softmax([v / temperature for v in row]) for row in logits]


def hand_gram_distance(p_s: list[list[float]], p_t: list[list[float]], over: str) -> float:
    """``sum_{x,y} (G_t[x][y] - G_s[x][y])^2`` with G over samples (``G[i][j] = sum_c p[i][c] p[j][c]``) or
    over classes (``G[c][d] = sum_i p[i][c] p[i][d]``)."""
    b, classes = len(p_s), len(p_s[0])
    if over == "samples":
        def entry(p, x, y):
            return sum(p[x][c] * p[y][c] for c in range(classes))
        n = b
    else:
        def entry(p, x, y):
            return sum(p[i][x] * p[i][y] for i in range(b))
        n = classes
    return sum((entry(p_t, x, y) - entry(p_s, x, y)) ** 2 for x in range(n) for y in range(n))


def hand_levels(student: list[list[float]], teacher: list[list[float]], temperature: float) -> list[float]:
    """The instance level (KD), the batch level (b x b Gram matrices) and the class level (C x C) at one T."""
    p_s, p_t = hand_probabilities(student, temperature), hand_probabilities(teacher, temperature)
    return [hand_kd(student, teacher, temperature), hand_gram_distance(p_s, p_t, "samples") / len(student),
            hand_gram_distance(p_s, p_t, "classes") / len(student[0])]


def hand_shares(teacher: list[list[float]]) -> tuple[float, float]:
    """The shares of samples (classes) whose teacher confidence (summed probability) at T = 1 is at most the
    median."""
    confidences = hand_probabilities(teacher, 1.0)
    return (hand_share([max(row) for row in confidences]),
            hand_share([sum(row[c] for row in confidences) for c in range(len(teacher[0]))]))


def hand_mlkd(student: list[list[float]], teacher: list[list[float]], temperatures: list[float],
              strong: tuple[list[list[float]], list[list[float]]] | None = None) -> float:
    """The instance and batch levels of the first view scaled by the samples' share, its class level by the
    classes' share; the instance level of a second view, unscaled; summed over the temperatures."""
    sample_share, class_share = hand_shares(teacher)
    total = 0.0
    for temperature in temperatures:
        instance, batch, klass = hand_levels(student, teacher, temperature)
        total += sample_share * (instance + batch) + class_share * klass
        if strong is not None:
            total += hand_kd(strong[0], strong[1], temperature)
    return total


def tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=DOUBLE)


# ---------------------------------------------------------------- the function


@pytest.mark.parametrize("temperatures", [[1.0], [4.0], [2.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0]])
@pytest.mark.parametrize(("student", "teacher"), [(STUDENT_LOGITS, TEACHER_LOGITS), (STUDENT_EVEN, TEACHER_EVEN)])
def test_mlkd_matches_loops_over_samples_classes_and_temperatures(student, teacher, temperatures):
    value = mlkd_loss(tensor(student), tensor(teacher), temperatures)
    assert_close(value, scalar(hand_mlkd(student, teacher, temperatures)))


def test_mlkd_sums_its_temperatures():
    student, teacher = randn(6, 5, seed=1), randn(6, 5, seed=2)
    each = sum(mlkd_loss(student, teacher, [t]) for t in (2.0, 3.0, 6.0))
    assert_close(mlkd_loss(student, teacher, [2.0, 3.0, 6.0]), each)


def test_the_masks_are_the_shares_at_or_below_the_median():
    # Odd count: 2 of 3 at or below the median; even: 2 of 4; a tie at the median counts every tied value.
    assert share_at_or_below_median(torch.tensor([0.9, 0.2, 0.5], dtype=DOUBLE)).item() == pytest.approx(2 / 3)
    assert share_at_or_below_median(torch.tensor([0.9, 0.2, 0.5, 0.4], dtype=DOUBLE)).item() == pytest.approx(0.5)
    assert share_at_or_below_median(torch.tensor([0.3, 0.3, 0.3, 0.9], dtype=DOUBLE)).item() == pytest.approx(0.75)
    assert hand_shares(TEACHER_LOGITS) == (2 / 3, 0.5)  # 3 samples, 4 classes
    assert hand_shares(TEACHER_EVEN) == (0.5, 0.5)  # the two equal rows tie for the top confidence


# Teachers with ties at the median: two equal rows in the middle of the confidences; four equal rows; two classes
# with equal logits in every row, between a larger and a smaller one.
EQUAL_CLASSES = [[1.0, 1.0, 3.0, -2.0], [0.5, 0.5, 2.0, -1.0], [2.0, 2.0, 2.5, 0.0], [0.0, 0.0, 1.0, -1.0]]
TIED_TEACHERS = [(TEACHER_LOGITS[:2] + TEACHER_EVEN[:2], 0.75, 0.5), ([TEACHER_EVEN[2]] * 4, 1.0, 0.5),
                 (EQUAL_CLASSES, 0.5, 0.75)]


@pytest.mark.parametrize(("teacher", "sample_share", "class_share"), TIED_TEACHERS)
def test_the_masks_scale_the_levels_rather_than_select_samples(teacher, sample_share, class_share):
    # As in the reference, a mask multiplies a level already reduced over the batch: the share scales it.
    assert hand_shares(teacher) == (sample_share, class_share)
    for temperature in (1.0, 4.0):
        instance, batch, klass = hand_levels(STUDENT_EVEN, teacher, temperature)
        expected = sample_share * (instance + batch) + class_share * klass
        assert_close(mlkd_loss(tensor(STUDENT_EVEN), tensor(teacher), [temperature]), scalar(expected))


def test_mlkd_vanishes_for_equal_logits_and_reaches_only_the_student():
    logits = randn(5, 7, seed=3)
    assert_close(mlkd_loss(logits, logits.clone(), [2.0, 4.0]), scalar(0.0), atol=1e-12, rtol=0)
    student = randn(5, 7, seed=4).requires_grad_()
    teacher = randn(5, 7, seed=5).requires_grad_()
    mlkd_loss(student, teacher.detach(), [2.0, 4.0]).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_a_second_view_adds_its_instance_level_at_every_temperature():
    strong_s, strong_t = randn(3, 4, seed=6).tolist(), randn(3, 4, seed=7).tolist()
    temperatures = [2.0, 3.0, 4.0, 5.0, 6.0]
    value = mlkd_loss([tensor(STUDENT_LOGITS), tensor(strong_s)], [tensor(TEACHER_LOGITS), tensor(strong_t)],
                      temperatures)
    assert_close(value, scalar(hand_mlkd(STUDENT_LOGITS, TEACHER_LOGITS, temperatures, (strong_s, strong_t))))
    with pytest.raises(ValueError, match="one teacher view per student view, got 2 student and 1 teacher"):
        mlkd_loss([tensor(STUDENT_LOGITS), tensor(strong_s)], [tensor(TEACHER_LOGITS)], temperatures)


def reference_forward_train(s_weak, s_strong, t_weak, t_strong, kd_weight=0.9, base_temperature=4.0):
    """Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py ``forward_train`` transcribed
    (its losses_dict less loss_ce, summed as the trainer does)."""

    def kd(s, t, temperature):
        log_p_s, p_t = F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="none").sum(1).mean() * temperature**2

    def cc(s, t, temperature):
        p_s, p_t = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
        return ((torch.mm(p_t.transpose(1, 0), p_t) - torch.mm(p_s.transpose(1, 0), p_s)) ** 2).sum() / t.shape[1]

    def bc(s, t, temperature):
        p_s, p_t = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
        return ((torch.mm(p_t, p_t.transpose(1, 0)) - torch.mm(p_s, p_s.transpose(1, 0))) ** 2).sum() / t.shape[0]

    pred_teacher_weak = F.softmax(t_weak.detach(), dim=1)
    confidence, _ = pred_teacher_weak.max(dim=1)
    mask = confidence.le(np.percentile(confidence.numpy().flatten(), 50)).bool()
    class_confidence = torch.sum(pred_teacher_weak, dim=0)
    class_conf_mask = class_confidence.le(np.percentile(class_confidence.numpy().flatten(), 50)).bool()
    temperatures = (base_temperature, 3.0, 5.0, 2.0, 6.0)
    loss_kd_weak = sum(kd_weight * (kd(s_weak, t_weak, t) * mask).mean() for t in temperatures)
    loss_kd_strong = (sum(kd_weight * kd(s_strong, t_strong, t) for t in temperatures[:3])
                      + kd_weight * kd(s_weak, t_weak, 2.0) + kd_weight * kd(s_weak, t_weak, 6.0))
    loss_cc_weak = sum(kd_weight * (cc(s_weak, t_weak, t) * class_conf_mask).mean() for t in temperatures)
    loss_bc_weak = sum(kd_weight * (bc(s_weak, t_weak, t) * mask).mean() for t in temperatures)
    return loss_kd_weak + loss_kd_strong + loss_cc_weak + loss_bc_weak


@pytest.mark.parametrize("batch", [8, 7])
def test_two_views_match_the_reference_code_but_for_its_weak_logits_in_the_strong_terms_at_2_and_6(batch):
    s_weak, s_strong, t_weak, t_strong = (randn(batch, 10, seed=10 + i) * 3 for i in range(4))
    reference = reference_forward_train(s_weak, s_strong, t_weak, t_strong)
    ours = 0.9 * mlkd_loss([s_weak, s_strong], [t_weak, t_strong], [2.0, 3.0, 4.0, 5.0, 6.0])
    # The reference's strong-view instance terms at T = 2 and 6 read the weak view's logits (KD_ours.py, lines
    # 154-161); ours read the strong view's.
    slip = sum(kd_loss(s_weak, t_weak, t) - kd_loss(s_strong, t_strong, t) for t in (2.0, 6.0))
    assert_close(ours + 0.9 * slip, reference)


# ---------------------------------------------------------------- the term


def preset() -> dict:
    return yaml.safe_load((Path(CONF_DIR) / "loss" / "mlkd.yaml").read_text())


def test_term_from_the_preset_is_the_function_on_the_one_view_times_its_weight():
    options = preset()
    assert options["ce"] == {"weight": 0.1}
    terms = build_loss_terms(options)
    term = terms["mlkd"]
    assert (term.weight, term.temperatures, term.standardize) == (0.9, (2.0, 3.0, 4.0, 5.0, 6.0), False)
    assert term.softmax_temperature is None  # several temperatures: no single one for top-k teacher outputs
    batch = DistillBatch(torch.tensor([1, 2, 0]), tensor(STUDENT_LOGITS), tensor(TEACHER_LOGITS))
    assert_close(term(batch), scalar(hand_mlkd(STUDENT_LOGITS, TEACHER_LOGITS, [2.0, 3.0, 4.0, 5.0, 6.0])))


def test_standardize_is_the_function_on_z_scored_logits():
    (term,) = build_loss_terms({"mlkd": {"temperatures": [2.0, 4.0], "standardize": True}}).values()
    student, teacher, targets = tensor(STUDENT_EVEN), tensor(TEACHER_EVEN), torch.tensor([0, 1, 2, 3])
    value = term(DistillBatch(targets, student, teacher))
    z_s, z_t = [hand_standardize(row) for row in STUDENT_EVEN], [hand_standardize(row) for row in TEACHER_EVEN]
    assert_close(value, scalar(hand_mlkd(z_s, z_t, [2.0, 4.0])))
    assert_close(term(DistillBatch(targets, 3.0 * student + 5.0, 0.5 * teacher - 1.0)), value, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("temperatures", [[], [2.0, 0.0], 4.0, "[2,4]", [2.0, True]])
def test_bad_temperatures_are_refused_with_an_example(temperatures):
    with pytest.raises(ConfigError, match=r"loss.mlkd.temperatures must be a non-empty list of numbers > 0, got .*; "
                                          r"e.g. loss.mlkd.temperatures='\[2,3,4,5,6\]'"):
        build_loss_terms({"mlkd": {"temperatures": temperatures}})


def test_a_training_step_on_the_default_pair_trains_the_student_only():
    # distill-train's default pair on digits: cifar_resnet20 teacher -> small_cnn (width 8) student.
    torch.manual_seed(0)
    student = create_model("small_cnn", 10, 1, {"width": 8})
    teacher = create_model("cifar_resnet20", 10, 1, {})
    module = DistillationModule(student, build_loss_terms(preset()), lambda params: torch.optim.SGD(params, lr=0.1),
                                num_classes=10, input_shape=(1, 8, 8), teacher=teacher)
    images, targets = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss = module.training_step((images, targets), 0)
    with torch.no_grad():
        student_logits, teacher_logits = module.student(images), module.teacher(images)
    expected = (0.1 * F.cross_entropy(student_logits, targets)
                + 0.9 * mlkd_loss(student_logits, teacher_logits, [2.0, 3.0, 4.0, 5.0, 6.0]))
    assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert sum(p.grad.abs().sum() for p in module.student.parameters() if p.grad is not None) > 0


def test_the_preset_runs_end_to_end_and_logs_its_term(make_cfg):
    cfg = make_cfg("loss=mlkd", "teacher=cifar_resnet20", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "teacher.train.max_epochs=1",
                   "report.enabled=false", shared_cache=True)
    run(cfg)
    header = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss/mlkd" in header and "train/loss/ce" in header


@pytest.mark.parametrize(("batch", "classes"), [(120, 10), (200, 100)])
def test_the_gram_levels_grow_with_the_batch_over_the_classes_by_hand(batch, classes):
    # A one-hot teacher and a uniform student, each class batch/classes times: P_t^T P_t = (b/C) I and every
    # entry of P_s^T P_s is b/C^2, so ||.||^2 / C = b^2 (C - 1) / C^3; P_t P_t^T is 1 for a pair of one class and
    # P_s P_s^T is 1/C everywhere, so ||.||^2 / b = b (C - 1) / C^2: 129.6 and 10.8 at batch 120 on 10 classes,
    # 3.96 and 1.98 at 200 on 100. Why MLKD's CIFAR-100 weights overwhelm CE on 10 classes (docs/losses.md).
    labels = torch.arange(batch, dtype=torch.int64) % classes
    p_teacher = F.one_hot(labels, classes).double()
    p_student = torch.full((batch, classes), 1.0 / classes, dtype=torch.float64)
    assert class_correlation_loss(p_student, p_teacher).item() == pytest.approx(batch**2 * (classes - 1) / classes**3)
    assert batch_correlation_loss(p_student, p_teacher).item() == pytest.approx(batch * (classes - 1) / classes**2)


def test_mlkd_levels_prints_each_level_against_ce(capsys):
    from scripts import mlkd_levels

    mlkd_levels.main(["--pairs", "64x100", "128x10"])
    lines = capsys.readouterr().out.splitlines()
    ratios = [float(line.split("|")[-2]) for line in lines[2:]]
    assert len(ratios) == 2 and ratios[1] > 10 * ratios[0]  # 0.9 MLKD / 0.1 CE: about 20 there, over 400 here
    cifar, ours = mlkd_levels.levels(64, 100), mlkd_levels.levels(128, 10)
    assert ours["class"] > ours["instance"] and cifar["class"] < 0.01 * cifar["instance"]


def test_the_levels_sum_to_the_loss_of_one_view():
    student, teacher = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE), torch.tensor(TEACHER_LOGITS, dtype=DOUBLE)
    instance, batch, classes = mlkd_levels(student, teacher, [2.0, 4.0])
    assert_close(instance + batch + classes, mlkd_loss(student, teacher, [2.0, 4.0]))
