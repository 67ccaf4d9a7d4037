"""Factor transfer: a paraphraser autoencoder on the teacher's last map, a translator on the student's, L1 between."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from distill.losses.base import DistillBatch
from distill.losses.features import FeaturePairTerm
from distill.losses.maps import match_spatial, require_maps
from distill.losses.registry import register_loss


def factor(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``normalize(mean_c F^p)`` flattened per sample (RepDistiller's ``FactorTransfer.factor``)."""
    return F.normalize(feature.pow(p).mean(1).flatten(1), dim=1)


def factor_transfer_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Kim et al. (2018), "Paraphrasing Complex Network: Network Compression via Factor Transfer".

    ``mean |factor(T(s)) - factor(P(t))|`` with T the translator, P the paraphraser's encoder: the L1
    distance of the paper, as a mean over the batch and positions (RepDistiller); the larger map is
    average-pooled to the smaller's size first.
    """
    student_factor, teacher_factor = match_spatial(student_factor, teacher_factor)
    return (factor(student_factor, p) - factor(teacher_factor, p)).abs().mean()


def conv_stack(channels: list[int], transposed: bool, batch_norm: bool) -> nn.Sequential:
    """3x3 (transposed) convolutions between ``channels``, each followed by optional BN and LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    for in_channels, out_channels in zip(channels, channels[1:]):
        layers.append(conv(in_channels, out_channels, 3, 1, 1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Autoencoder on the teacher's map (RepDistiller's, without BN): C -> C -> kC -> kC, and back."""

    def __init__(self, channels: int, rate: float) -> None:
        super().__init__()
        factor_channels = int(channels * rate)
        self.encoder = conv_stack([channels, channels, factor_channels, factor_channels], False, False)
        self.decoder = conv_stack([factor_channels, factor_channels, channels, channels], True, False)

    def forward(self, teacher: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(teacher))


@register_loss("ft")
class FactorTransferLoss(FeaturePairTerm):
    """FT in two stages, as RepDistiller: ``hint_only_epochs`` (30) epochs train the paraphraser alone on
    ``MSE(P(t), t)``, then the student and its translator learn the paraphraser's (frozen) factors.

    In the paraphraser stage the term returns ``paraphraser_weight / weight * MSE``, so that stage trains at
    ``paraphraser_weight`` (0.2: the reference runs it at learning rate 0.01 instead of 0.05) while the
    factor stage uses ``weight`` (200).
    """

    def __init__(self, weight: float = 200.0, student_layer: str = "@-1", teacher_layer: str = "@-1",
                 rate: float = 0.5, p: float = 2.0, hint_only_epochs: int = 30,
                 paraphraser_weight: float = 0.2) -> None:
        super().__init__(weight, student_layer, teacher_layer)
        if self.weight <= 0 or hint_only_epochs < 1:
            raise ConfigError(f"loss.ft needs weight > 0 and hint_only_epochs >= 1 (the paraphraser's stage); got "
                              f"weight={weight}, hint_only_epochs={hint_only_epochs}")
        self.rate, self.p = float(rate), float(p)
        self.hint_only_epochs, self.paraphraser_weight = int(hint_only_epochs), float(paraphraser_weight)
        self.paraphraser: nn.Module = nn.Identity()
        self.translator: nn.Module = nn.Identity()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("ft", {self.student_layer: student_features[self.student_layer]}, "student")
        require_maps("ft", {self.teacher_layer: teacher_features[self.teacher_layer]}, "teacher")
        student_channels = student_features[self.student_layer].shape[1]
        teacher_channels = teacher_features[self.teacher_layer].shape[1]
        factor_channels = int(teacher_channels * self.rate)
        self.paraphraser = Paraphraser(teacher_channels, self.rate)
        self.translator = conv_stack([student_channels, student_channels, factor_channels, factor_channels], False,
                                     True)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = self.pair(batch)
        if batch.epoch < self.hint_only_epochs:
            reconstruction = F.mse_loss(self.paraphraser(teacher), teacher)
            return self.paraphraser_weight / self.weight * reconstruction
        assert isinstance(self.paraphraser, Paraphraser), "build() makes the paraphraser"
        with torch.no_grad():
            teacher_factor = self.paraphraser.encoder(teacher)
        return factor_transfer_loss(self.translator(student), teacher_factor, self.p)
