"""Online mutual learning (Zhang et al. 2018, "Deep Mutual Learning"): k peers trained together from scratch.

Each peer's loss is ``ce_weight * CE(p_k, y) + kl_weight * 1/(k-1) sum_{l != k} T^2 KL(p_l || p_k)``, the
other peers' predictions detached (DML, eq. 10). Because the targets are detached, peer k's loss has
gradients only for peer k's weights, so one backward pass through the summed losses gives every peer
exactly its own DML gradient; one optimizer with one parameter group per peer then makes the same step
as DML's separate per-peer optimizers (SGD and AdamW keep their state per parameter). The one
difference: ``trainer.gradient_clip_val`` clips the norm over all peers together. One LightningModule
holds the peers, so DDP, checkpoints and resume work as for any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from distill.epoch_means import EpochMeans, log_epoch_means
from distill.export import export_model
from distill.fit import fit_module, seed_everything
from distill.losses.base import sum_terms
from distill.losses.logits import kd_loss
from distill.models import count_parameters, create_model, model_kwargs
from distill.module import unpack
from distill.ranks import is_rank_zero
from distill.report import ReportEntry
from distill.schemes.reporting import scheme_report

SPLITS = ("val", "test")


def mutual_losses(logits: list[torch.Tensor], targets: torch.Tensor, temperature: float,
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per peer: cross-entropy with the labels, and the mean KL from every other peer's detached prediction."""
    ce = [F.cross_entropy(z, targets) for z in logits]
    kl = [torch.stack([kd_loss(z, other.detach(), temperature) for j, other in enumerate(logits) if j != k]).mean()
          for k, z in enumerate(logits)]
    return ce, kl


class MutualModule(L.LightningModule):
    """The peers of mutual learning; ``val/acc_top1`` (the default monitor) is their mean accuracy."""

    def __init__(self, peers: list[nn.Module], optimizer: Any, num_classes: int, ce_weight: float = 1.0,
                 kl_weight: float = 1.0, temperature: float = 1.0, scheduler: Any = None) -> None:
        super().__init__()
        self.peers = nn.ModuleList(peers)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.ce_weight, self.kl_weight, self.temperature = float(ce_weight), float(kl_weight), float(temperature)
        top_ks = (1, 5) if num_classes > 5 else (1,)
        self.eval_metrics = nn.ModuleDict({
            split: nn.ModuleList([nn.ModuleDict({f"acc_top{k}": MulticlassAccuracy(num_classes, top_k=k,
                                                                                    average="micro",
                                                                                    validate_args=False)
                                                 for k in top_ks}) for _ in peers]) for split in SPLITS})
        self.skipped_batches = 0  # read by the run summary like a DistillationModule's
        self.progress_values: dict[str, float] = {}  # the epoch means for distill.progress.StepValuesProgressBar
        self.train_means = EpochMeans(["total", *(f"peer{i}/loss/ce" for i in range(len(peers))),
                                       *(f"peer{i}/loss/kl" for i in range(len(peers))), "acc_top1"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.peers[0](images)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        parts = unpack(batch)
        targets = parts.targets
        logits = [peer(parts.images) for peer in self.peers]
        ce, kl = mutual_losses(logits, targets, self.temperature)
        total = sum_terms(self.ce_weight * c + self.kl_weight * k for c, k in zip(ce, kl))
        accuracy = torch.stack([(z.detach().argmax(1) == targets).float().mean() for z in logits]).mean()
        # Accumulated on the device and logged once per epoch, as DistillationModule does (no per-step sync).
        self.train_means.update(torch.stack([total, *ce, *kl, accuracy]),
                                self.train_means.positions(self.train_means.names), len(targets))
        return total

    def on_train_epoch_end(self) -> None:
        log_epoch_means(self, self.train_means, {name: name for name in self.train_means.names[1:-1]})

    def _split_metrics(self, split: str) -> list[dict[str, Metric]]:
        """Each peer's metrics of ``split`` (torch types the items of a ModuleDict or ModuleList as plain modules)."""
        return [{name: cast(Metric, metric) for name, metric in cast(nn.ModuleDict, peer_metrics).items()}
                for peer_metrics in cast(nn.ModuleList, self.eval_metrics[split])]

    def _eval_step(self, batch: tuple[torch.Tensor, ...], split: str) -> None:
        parts = unpack(batch)
        images, targets = parts.images, parts.targets
        losses = []
        for peer, metrics in zip(self.peers, self._split_metrics(split)):
            logits = peer(images)
            losses.append(F.cross_entropy(logits, targets))
            for metric in metrics.values():
                metric.update(logits, targets)
        self.log(f"{split}/loss/ce", torch.stack(losses).mean(), on_epoch=True, sync_dist=True)

    def _log_epoch(self, split: str) -> None:
        """Each peer's accuracy, and their mean under the usual name (``val/acc_top1``) for monitors and sweeps."""
        peer_metrics = self._split_metrics(split)
        for name in peer_metrics[0]:
            values = []
            for index, metrics in enumerate(peer_metrics):
                values.append(metrics[name].compute())
                metrics[name].reset()
                self.log(f"{split}/peer{index}/{name}", values[-1])
            self.log(f"{split}/{name}", torch.stack(values).mean(), prog_bar=split == "val")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        # One parameter group per peer: the per-peer optimizers of DML (see the module docstring).
        optimizer = self.optimizer_factory(params=[{"params": list(peer.parameters())} for peer in self.peers])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}


def build_peers(cfg: DictConfig, datamodule: Any) -> list[nn.Module]:
    """``mutual.peers`` students of ``cfg.student``'s architecture, peer k initialised from seed ``seed + k``."""
    peers = []
    for index in range(int(cfg.mutual.peers)):
        seed_everything(cfg.seed + index)
        peers.append(create_model(cfg.student.name, datamodule.num_classes, datamodule.in_chans,
                                  cfg.student.get("kwargs"), role="student"))
    return peers


def run_mutual(cfg: DictConfig, datamodule: Any, output_dir: Path) -> dict[str, Any]:
    """Train the peers together, export and measure every one; the summary's student is their mean."""
    peers = build_peers(cfg, datamodule)
    module = MutualModule(peers, instantiate(cfg.optimizer), datamodule.num_classes, cfg.mutual.ce_weight,
                          cfg.mutual.kl_weight, cfg.mutual.temperature,
                          instantiate(cfg.scheduler) if cfg.get("scheduler") else None)
    seed_everything(cfg.seed)
    result = fit_module(cfg, module, datamodule, ckpt_path=cfg.get("ckpt_path"), keep_loggers_open=True)
    name, metrics = cfg.student.name, result.metrics
    report, exported = None, []
    try:
        if is_rank_zero():
            kwargs = model_kwargs(cfg.student, datamodule)
            exported = [str(export_model(peer, name, kwargs, output_dir, stem=f"peer_{index}",
                                         extra={"input_shape": list(datamodule.input_shape)}, datamodule=datamodule))
                        for index, peer in enumerate(module.peers)]
            entries = [ReportEntry("student", name, peer, label=f"peer {index}: {name}")
                       for index, peer in enumerate(module.peers)]
            report = scheme_report(cfg, entries, datamodule, output_dir, result.loggers, "mutual: accuracy vs MACs")
    finally:
        result.close_loggers()
    peer_rows = [{"index": index, "architecture": name, "test_acc_top1": metrics.get(f"test/peer{index}/acc_top1"),
                  "exported": exported[index] if exported else None} for index in range(len(peers))]
    student = {"architecture": name, "params": count_parameters(module.peers[0]),
               "test_acc_top1": metrics.get("test/acc_top1"), "test_acc_top5": metrics.get("test/acc_top5"),
               "best_" + cfg.monitor.replace("/", "_"): result.monitored, "skipped_batches": 0}
    return {"stage": "mutual", "run_dir": cfg.paths.output_dir, "student": student, "peers": peer_rows,
            "metrics": metrics, "checkpoints": {"best": result.best_checkpoint, "last": result.last_checkpoint},
            "exported": exported[0] if exported else None, "report": report, "wandb_sync": result.wandb_sync,
            "scheme": {"name": "mutual", "method": f"mutual learning x{len(peers)}", "peers": peer_rows},
            "monitored": result.monitored}
