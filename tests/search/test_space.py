"""The search space: what a trial picks, how it reads back, and the values refused before anything runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from optuna.trial import FixedTrial

from distill.config import fit_config
from distill.errors import ConfigError
from distill.search.space import Candidate, apply, candidate_of, check_space, suggest

SPACE = OmegaConf.create({"small_cnn": {"width": [4, 8], "depth": [1, 2]}, "cifar_resnet": {"depth": [8]}})
TRAINING = OmegaConf.create({"loss.kd.temperature": [2.0, 4.0], "loss": ["kd", "dkd"]})


def test_a_trial_picks_a_family_then_its_knobs_and_reads_back_the_same():
    params = {"family": "small_cnn", "small_cnn.width": 8, "small_cnn.depth": 2, "loss": "dkd",
              "loss.kd.temperature": 2.0}
    candidate, training = suggest(FixedTrial(params), SPACE, TRAINING)
    assert candidate == Candidate.of("small_cnn", {"width": 8, "depth": 2})
    assert candidate.label == "small_cnn(depth=2, width=8)"
    assert training == {"loss": "dkd", "loss.kd.temperature": 2.0}
    assert candidate_of(params) == (candidate, training)


def test_apply_sets_the_student_and_the_training_values(make_cfg):
    cfg = fit_config(make_cfg(), **{"loss.kd.temperature": 4.0})
    trial_cfg = apply(cfg, Candidate.of("cifar_resnet", {"depth": 8, "width": 4}), {"loss.kd.temperature": 2.0},
                      **{"trainer.max_epochs": 1})
    assert trial_cfg.student.name == "cifar_resnet" and dict(trial_cfg.student.kwargs) == {"depth": 8, "width": 4}
    assert trial_cfg.loss.kd.temperature == 2.0 and trial_cfg.trainer.max_epochs == 1
    assert cfg.loss.kd.temperature == 4.0 and cfg.student.name == "small_cnn"  # the run's config is left as it was
    dkd = apply(cfg, Candidate.of("small_cnn", {}), {"loss": "dkd"})
    assert set(dkd.loss) == {"ce", "dkd"}  # a loss preset replaces the run's loss


@pytest.mark.parametrize(("space", "training", "message"), [
    ({}, {}, "search.space is empty"),
    ({"small_cnnn": {"width": [4]}}, {}, "small_cnnn"),
    ({"small_cnn": {"width": 4}}, {}, r"search.space.small_cnn.width=4 must be a non-empty list"),
    ({"small_cnn": {"width": [[4]]}}, {}, "not numbers, strings or booleans"),
    ({"small_cnn": {"width": [4]}}, {"loss": ["kdd"]}, "search.training.loss=kdd is not a loss preset"),
    ({"small_cnn": {"widht": [4]}}, {}, r"search.space.small_cnn.widht=4: small_cnn cannot be built with it"),
    ({"cifar_resnet": {"depth": [8, 9]}}, {}, r"search.space.cifar_resnet.depth=9: .*6n\+2"),
])
def test_bad_spaces_are_refused_with_the_key(space, training, message):
    with pytest.raises(ConfigError, match=message):
        check_space(OmegaConf.create(space), OmegaConf.create(training))
