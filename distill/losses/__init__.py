"""Distillation losses: pure functions on tensors, thin ``LossTerm`` modules, a registry by name."""

from distill.losses import features, logits, relations  # noqa: F401  (registers the terms)
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.features import (
    attention_transfer_loss,
    feature_distance,
    hint_loss,
    similarity_preserving_loss,
)
from distill.losses.logits import dkd_loss, kd_loss
from distill.losses.registry import LOSSES, build_loss_terms, register_loss
from distill.losses.relations import correlation_congruence_loss, pkt_loss, rkd_loss

__all__ = [
    "LOSSES",
    "DistillBatch",
    "LossTerm",
    "attention_transfer_loss",
    "build_loss_terms",
    "correlation_congruence_loss",
    "dkd_loss",
    "feature_distance",
    "hint_loss",
    "kd_loss",
    "pkt_loss",
    "register_loss",
    "rkd_loss",
    "similarity_preserving_loss",
]
