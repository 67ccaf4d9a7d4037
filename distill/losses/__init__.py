"""Distillation losses: pure functions on tensors, thin ``LossTerm`` modules, a registry by name."""

from distill.losses import logits  # noqa: F401  (registers the terms)
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.logits import kd_loss
from distill.losses.registry import LOSSES, build_loss_terms, register_loss

__all__ = ["LOSSES", "DistillBatch", "LossTerm", "build_loss_terms", "kd_loss", "register_loss"]
