"""Structured (channel) pruning with Torch-Pruning to a target share of the model's MACs.

Torch-Pruning's dependency graph removes coupled channels together (a residual sum, the BatchNorm
after a convolution), so the result is a plain, smaller dense network. It prunes by a channel ratio,
not by MACs, so the ratio is found by bisection, each try on a fresh copy, until the MACs land on
the target; the classifier is never pruned, so the model keeps its classes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from distill.errors import ConfigError
from distill.measure import count_flops
from distill.models import classifier_name

log = logging.getLogger(__name__)

BISECTION_STEPS = 14


def _pruned_copy(model: nn.Module, input_shape: tuple[int, ...], channel_ratio: float, importance: str,
                 round_to: int | None, global_pruning: bool) -> nn.Module:
    import torch_pruning as tp

    pruned = copy.deepcopy(model).cpu().eval()
    classifier = classifier_name(pruned)
    ignored = [pruned.get_submodule(classifier)] if classifier else []
    # A model may fix more widths (SimKD: the projector's output, the input of the teacher's classifier).
    ignored += getattr(pruned, "fixed_width_layers", list)()
    pruner = tp.pruner.MetaPruner(
        pruned, torch.zeros(1, *input_shape),
        importance=tp.importance.GroupMagnitudeImportance(p=1 if importance == "l1" else 2),
        pruning_ratio=channel_ratio, ignored_layers=ignored, round_to=round_to, iterative_steps=1,
        global_pruning=global_pruning, max_pruning_ratio=0.9)
    pruner.step()
    return pruned


def _bisect(model: nn.Module, input_shape: tuple[int, ...], target: float, importance: str, round_to: int | None,
            global_pruning: bool) -> tuple[float, nn.Module, int]:
    """(channel ratio, pruned copy, its MACs) closest to ``target`` MACs; MACs fall as the ratio grows."""
    low, high = 0.0, 0.9
    best: tuple[float, nn.Module, int] | None = None
    for _ in range(BISECTION_STEPS):
        channel_ratio = (low + high) / 2
        candidate = _pruned_copy(model, input_shape, channel_ratio, importance, round_to, global_pruning)
        macs = count_flops(candidate, input_shape)["macs"]
        if best is None or abs(macs - target) < abs(best[2] - target):
            best = (channel_ratio, candidate, macs)
        if abs(macs - target) <= 0.002 * target:
            break
        low, high = (channel_ratio, high) if macs > target else (low, channel_ratio)
    assert best is not None, "BISECTION_STEPS >= 1 sets it"
    return best


def prune_to_macs(model: nn.Module, input_shape: tuple[int, ...], macs_ratio: float, importance: str = "l2",
                  round_to: int | None = None, tolerance: float = 0.05) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned copy of ``model`` with about ``macs_ratio`` of its MACs; ``model`` itself is left as it is.

    Returns the copy and what was done (MACs before/after, the channel ratio that got there). A target
    no channel ratio reaches within ``tolerance`` (a tiny network whose layers cannot be cut finely
    enough) is a ConfigError that names the closest reachable ratio.
    """
    if not 0 < macs_ratio < 1:
        raise ConfigError(f"compress.prune.macs_ratio={macs_ratio} must lie strictly between 0 and 1, "
                          "e.g. compress.prune.macs_ratio=0.5")
    base_macs = count_flops(model.cpu().eval(), input_shape)["macs"]
    target = macs_ratio * base_macs
    # The same share of every layer first (keeps the architecture's shape); when that cannot cut finely
    # enough (layers of 8 or 16 channels), one global ranking of all channels, which moves a channel at a time.
    for global_pruning in (False, True):
        best = _bisect(model, input_shape, target, importance, round_to, global_pruning)
        if abs(best[2] / base_macs - macs_ratio) <= tolerance * macs_ratio:
            break
    channel_ratio, pruned, macs = best
    reached = macs / base_macs
    if abs(reached - macs_ratio) > tolerance * macs_ratio:
        raise ConfigError(f"compress.prune.macs_ratio={macs_ratio} cannot be reached within "
                          f"{100 * tolerance:.0f} % on this model (closest: {reached:.3f}); its layers are too "
                          f"narrow to cut that finely. Fix: compress.prune.macs_ratio={reached:.2f}"
                          + (" or compress.prune.round_to=null" if round_to else ""))
    log.info("pruned %.1f %% of the channels: MACs %d -> %d (%.3f of the original, target %.3f)",
             100 * channel_ratio, base_macs, macs, reached, macs_ratio)
    return pruned, {"macs_before": base_macs, "macs_after": macs, "macs_ratio_target": macs_ratio,
                    "macs_ratio_reached": reached, "channel_ratio": channel_ratio, "global_ranking": global_pruning,
                    "importance": importance, "round_to": round_to}
