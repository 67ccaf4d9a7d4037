"""Distillation losses: pure functions on tensors, thin ``LossTerm`` modules, a registry by name.

Every module of this package is imported here, so each term registers itself (``register_loss``): a new loss is
its module and its preset in conf/loss/.
"""

import importlib
import pkgutil

from distill.losses.ab import ab_loss, activation_boundary_loss
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.crd import nce_loss
from distill.losses.ctkd import ctkd_temperature
from distill.losses.features import (
    attention_transfer_loss,
    feature_distance,
    hint_loss,
    similarity_preserving_loss,
)
from distill.losses.ft import factor_transfer_loss
from distill.losses.logits import dist_loss, dkd_loss, kd_loss, standardize_logits
from distill.losses.maps import fsp_loss, kdsvd_loss, nst_loss
from distill.losses.ofd import ofd_loss, ofd_margin, ofd_partial_l2
from distill.losses.registry import LOSSES, build_loss_terms, register_loss
from distill.losses.relations import correlation_congruence_loss, pkt_loss, rkd_loss
from distill.losses.reviewkd import hcl_loss
from distill.losses.simkd import simkd_loss
from distill.losses.vid import vid_loss

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "LOSSES",
    "DistillBatch",
    "LossTerm",
    "ab_loss",
    "activation_boundary_loss",
    "attention_transfer_loss",
    "build_loss_terms",
    "correlation_congruence_loss",
    "ctkd_temperature",
    "dist_loss",
    "dkd_loss",
    "factor_transfer_loss",
    "feature_distance",
    "fsp_loss",
    "hcl_loss",
    "hint_loss",
    "kd_loss",
    "kdsvd_loss",
    "nce_loss",
    "nst_loss",
    "ofd_loss",
    "ofd_margin",
    "ofd_partial_l2",
    "pkt_loss",
    "register_loss",
    "rkd_loss",
    "similarity_preserving_loss",
    "simkd_loss",
    "standardize_logits",
    "vid_loss",
]
