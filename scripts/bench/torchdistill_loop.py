"""torchdistill's side of the peer comparison (peer_loop.py): one seed of our recipe through torchdistill's own
loop, as its examples/torchvision/image_classification.py runs it.

The recipe is read from our run's run_config.json (pair, data split, augmentation, optimiser, schedule, epochs)
and written as a ``train:`` config (a dict, as torchdistill's sample YAMLs hold it) for get_distillation_box;
each epoch is pre_epoch_process, forward_process + post_forward_process per batch, validation, then
post_epoch_process (which steps the scheduler). Settings of ours this loop does not reproduce are refused.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from distill.data.base import augment_batch
from distill.export import load_exported
from distill.feature_taps import resolve_layer_path
from distill.measure import accuracy, clock
from distill.models import create_model

MINI = {"seeds": 1, "epochs": 1, "batches": 3, "eval_images": 256}
# Trainer settings of ours that this loop does not reproduce, with the values it does.
SUPPORTED = {"gradient_clip_val": lambda v: v is None, "accumulate_grad_batches": lambda v: v == 1,
             "precision": lambda v: str(v) in ("32", "32-true"), "limit_train_batches": lambda v: v is None or (
                 isinstance(v, int) and v > 0)}


@dataclass(frozen=True)
class Recipe:
    """What one method's runs share, read from our run_config.json: torchdistill's side is built from it."""

    method: str
    data: dict[str, Any]
    student: str
    student_kwargs: dict[str, Any]
    loss: dict[str, Any]
    optimizer: dict[str, Any]  # {"key": a torch.optim class name, "kwargs": ...}: torchdistill's form
    scheduler: dict[str, Any] | None
    epochs: int
    batches: int | None  # training batches per epoch (trainer.limit_train_batches); None: the whole split
    eval_images: int | None = None  # --mini: the first images of val and test only


def torch_class(cfg: dict[str, Any] | None, module: str) -> dict[str, Any] | None:
    """Our Hydra factory (``_target_``, ``_partial_``) as torchdistill's registry takes it: {"key", "kwargs"}."""
    if cfg is None:
        return None
    if not cfg["_target_"].startswith(f"{module}."):
        raise SystemExit(f"error: {cfg['_target_']} is not a {module} class: torchdistill's registry cannot build it")
    return {"key": cfg["_target_"].rsplit(".", 1)[1],
            "kwargs": {key: value for key, value in cfg.items() if key not in ("_target_", "_partial_")}}


def read_recipe(method: str, run_config: dict[str, Any], mini: bool = False) -> Recipe:
    """The recipe of our run; refused where a setting has no equivalent in torchdistill's loop as built here."""
    trainer = run_config["trainer"]
    refused = {key: trainer.get(key) for key, fine in SUPPORTED.items() if not fine(trainer.get(key))}
    if refused or run_config.get("stage") != "distill":
        raise SystemExit(f"error: our {method} run ({run_config.get('stage')}) has settings this loop does not "
                         f"reproduce: {refused}")
    optimizer = torch_class(run_config["optimizer"], "torch.optim")
    assert optimizer is not None  # every run has an optimizer
    return Recipe(method, run_config["data"], run_config["student"]["name"], run_config["student"].get("kwargs") or {},
                  run_config["loss"], optimizer, torch_class(run_config.get("scheduler"), "torch.optim.lr_scheduler"),
                  MINI["epochs"] if mini else trainer["max_epochs"],
                  MINI["batches"] if mini else trainer["limit_train_batches"], MINI["eval_images"] if mini else None)


def feature_shape(model: nn.Module, path: str, input_shape: tuple[int, ...]) -> torch.Size:
    shapes: list[torch.Size] = []
    handle = model.get_submodule(path).register_forward_hook(lambda module, args, out: shapes.append(out.shape[1:]))
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    model.train(was_training)
    handle.remove()
    return shapes[0]


def wrapped(criterion: dict[str, Any], weight: float, source: dict[str, Any], target: dict[str, Any]) -> dict:
    """A sub-term of torchdistill's WeightedSumLoss: a low-level loss on one tensor of the I/O dicts."""
    return {"weight": weight, "criterion": criterion,
            "criterion_wrapper": {"key": "SimpleLossWrapper", "kwargs": {"input": source, "target": target}}}


def loss_configs(recipe: Recipe, student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """(criterion, student, teacher) sections of ``train:`` for our preset, written as torchdistill's samples are."""
    terms, ce = recipe.loss, recipe.loss.get("ce") or {}
    plain = {"forward_proc": "forward_batch_only", "sequential": [], "frozen_modules": []}
    kd, fitnet = terms.get("kd") or {}, terms.get("fitnet") or {}
    if set(terms) not in ({"ce", "kd"}, {"ce", "fitnet"}) or ce.get("label_smoothing") or kd.get("standardize") \
            or fitnet.get("hint_only_epochs"):
        raise SystemExit(f"error: peer-loop builds the kd and fitnet presets (one stage, no smoothing), not {terms}")
    if kd:
        # KDLoss: alpha*CE(mean) + beta*T^2*KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) (losses/mid_level.py)
        # with alpha our CE weight, beta our KD weight: our sum exactly (its samples' alpha 0.9 is CE's weight).
        criterion = {"key": "KDLoss", "kwargs": {
            "student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
            "teacher_module_io": "output", "temperature": kd.get("temperature", 4.0), "alpha": ce.get("weight", 1.0),
            "beta": kd.get("weight", 1.0), "reduction": "batchmean"}}
        return ({"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": criterion, "weight": 1.0}}}},
                plain, {**plain, "requires_grad": False})
    student_path = resolve_layer_path(student, fitnet["student_layer"], "student")
    teacher_path = resolve_layer_path(teacher, fitnet["teacher_layer"], "teacher")
    s_shape, t_shape = (feature_shape(model, path, input_shape)
                        for model, path in ((student, student_path), (teacher, teacher_path)))
    if len(s_shape) != 3 or s_shape[1:] != t_shape[1:]:
        raise SystemExit(f"error: FitNet maps {tuple(s_shape)} onto {tuple(t_shape)}: our regressor pools or resizes "
                         "there, torchdistill's Connector4DAB cannot")
    # Our regressor (distill/losses/adapters.py MapAdapter) is a 1x1 conv without bias + BatchNorm trained with the
    # student. torchdistill trains such a module in one stage as an auxiliary student wrapper, and its DAB sample's
    # Connector4DAB is exactly this (its FitNet sample's ConvReg has a bias and a ReLU, and trains in a hint stage).
    connector = {"io": "output", "path": f"student_model.{student_path}", "bn2d_kwargs": {"num_features": t_shape[0]},
                 "conv2d_kwargs": {"in_channels": s_shape[0], "out_channels": t_shape[0], "kernel_size": 1,
                                   "stride": 1, "padding": 0, "bias": False}}
    hooks = [f"student_model.{student_path}", "connector_dict.regressor"]
    wrapper = {"key": "Connector4DAB", "kwargs": {"connectors": {"regressor": connector}}}
    student_cfg = {**plain, "requires_grad": True, "forward_hook": {"input": [], "output": hooks},
                   "auxiliary_model_wrapper": wrapper}
    sub_terms = {"ce": wrapped({"key": "CrossEntropyLoss", "kwargs": {"reduction": "mean"}}, ce.get("weight", 1.0),
                               {"is_from_teacher": False, "module_path": ".", "io": "output"}, {"uses_label": True}),
                 # Ours is F.mse_loss, the mean over every element (distill/losses/features.py hint_loss).
                 "fitnet": wrapped({"key": "MSELoss", "kwargs": {"reduction": "mean"}}, fitnet["weight"],
                                   {"is_from_teacher": False, "module_path": hooks[1], "io": "output"},
                                   {"is_from_teacher": True, "module_path": teacher_path, "io": "output"})}
    return ({"key": "WeightedSumLoss", "kwargs": {"sub_terms": sub_terms}}, student_cfg,
            {**plain, "requires_grad": False, "forward_hook": {"input": [], "output": [teacher_path]}})


class AugmentedImages(Dataset):
    """Our training split served one image at a time, as torchvision datasets are, each cropped and flipped at
    random when fetched by the function our data module applies to whole batches (augment_batch): one distribution
    for both (ours pads the normalised image with 0, the mean pixel, where torchvision's RandomCrop pads black)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int, flip: bool) -> None:
        self.images, self.labels, self.padding, self.flip = images, labels, padding, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.randint(0, 2 * self.padding + 1, (2,))
        draws = {"offset_y": offsets[:1], "offset_x": offsets[1:], "flip": torch.rand(1) < (0.5 if self.flip else 0)}
        return augment_batch(self.images[index:index + 1], self.padding, draws)[0], self.labels[index]


def datasets(recipe: Recipe) -> tuple[dict[str, Dataset], Any]:
    """train/val/test from our data module (the same split, normalisation and augmentation), and the module."""
    datamodule = instantiate(recipe.data)
    datamodule.setup()
    splits, n = datamodule.splits, recipe.eval_images
    train = AugmentedImages(splits["train"].images, splits["train"].labels, datamodule.random_crop_padding,
                            datamodule.horizontal_flip)
    return {"train": train, **{name: TensorDataset(splits[name].images[:n], splits[name].labels[:n])
                               for name in ("val", "test")}}, datamodule


def build_box(recipe: Recipe, student: nn.Module, teacher: nn.Module, data: dict[str, Dataset], datamodule: Any,
              device: torch.device, epochs: int) -> Any:
    """torchdistill's DistillationBox for ``recipe``, from a ``train:`` config as its sample YAMLs hold it."""
    from torchdistill.core.distillation import get_distillation_box

    criterion, student_cfg, teacher_cfg = loss_configs(recipe, student, teacher, datamodule.input_shape)
    # RandomSampler(num_samples=batches x batch size): a fresh shuffle each epoch, cut where our epoch ends.
    samples = recipe.batches * datamodule.batch_size if recipe.batches else None
    loader = {"num_workers": 0, "pin_memory": device.type == "cuda", "drop_last": False}
    config = {"num_epochs": epochs, "teacher": teacher_cfg, "student": student_cfg, "criterion": criterion,
              "train_data_loader": {"dataset_id": "train", "kwargs": {"batch_size": datamodule.batch_size, **loader},
                                    "sampler": {"class_or_func": RandomSampler, "kwargs": {"num_samples": samples}}},
              "val_data_loader": {"dataset_id": "val", "sampler": {"class_or_func": SequentialSampler, "kwargs": {}},
                                  "kwargs": {"batch_size": datamodule.eval_batch_size, **loader}},
              # Copies: torchdistill multiplies the lr it is given by lr_factor in place.
              "optimizer": json.loads(json.dumps(recipe.optimizer)),
              # No scheduling_step: post_epoch_process steps it once per epoch, as Lightning's interval "epoch".
              **({"scheduler": json.loads(json.dumps(recipe.scheduler))} if recipe.scheduler else {})}
    box = get_distillation_box(teacher.to(device), student.to(device), data, config, device, device_ids=None,
                               distributed=False, lr_factor=1)
    # torchdistill never calls teacher.eval(): a teacher left in train mode would normalise with batch statistics
    # and move its running means. Ours is always in eval mode (distill/module.py).
    teacher.eval()
    return box


def top1(model: nn.Module, loader: DataLoader, num_classes: int) -> float:
    """Top-1 accuracy (a fraction) in eval mode, as the example's evaluate(): our efficiency report's measure."""
    top = accuracy(model, loader, num_classes)["top1"]
    assert top is not None  # only top-5 is None (fewer than 6 classes)
    return top


def run_torchdistill(recipe: Recipe, teacher_file: Path, seed: int, device: torch.device,
                     epochs: int | None = None, test: bool = True) -> dict[str, Any]:
    """One seed through torchdistill's loop: validation each epoch, the best-validation weights kept, both tested."""
    import torchdistill
    from torchdistill.common.main_util import set_seed
    from torchdistill.datasets.util import build_data_loader

    logging.getLogger("torchdistill").setLevel(logging.WARNING)  # it logs its setup at INFO on the root logger
    start = time.perf_counter()
    set_seed(seed)  # as the example's main(): random, numpy and torch
    data, datamodule = datasets(recipe)
    teacher, _ = load_exported(teacher_file)
    student = create_model(recipe.student, datamodule.num_classes, datamodule.in_chans, recipe.student_kwargs,
                           role="student")
    box = build_box(recipe, student, teacher, data, datamodule, device, epochs or recipe.epochs)
    curve: dict[str, list[float]] = {"val_acc_top1": [], "train_loss": [], "lr": [], "train_s": [], "epoch_s": []}
    best, best_state = 0.0, {k: v.clone() for k, v in student.state_dict().items()}
    for epoch in range(box.num_epochs):
        epoch_start = clock(device)
        box.pre_epoch_process(epoch=epoch)
        losses = []
        for sample_batch, targets, supp_dict in box.train_data_loader:  # the example's train_one_epoch
            loss = box.forward_process(sample_batch.to(device), targets.to(device), supp_dict)
            box.post_forward_process(loss=loss)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise ValueError(f"the training loop was broken due to loss = {losses[-1]}")
        curve["train_s"].append(clock(device) - epoch_start)
        val = top1(box.student_model, box.val_data_loader, datamodule.num_classes)  # the wrapper, as the example does
        if val > best:  # the first of equal bests, as the example and our ModelCheckpoint keep
            best, best_state = val, {k: v.clone() for k, v in student.state_dict().items()}
        curve["val_acc_top1"].append(val)
        curve["train_loss"].append(statistics.fmean(losses))
        curve["lr"].append(box.optimizer.param_groups[0]["lr"])
        box.post_epoch_process()
        curve["epoch_s"].append(clock(device) - epoch_start)
    box.clean_modules()
    assert not teacher.training, "the teacher must stay in eval mode"
    result = {"framework": "torchdistill", "version": torchdistill.__version__, "method": recipe.method, "seed": seed,
              "device": str(device), "recipe": asdict(recipe), **curve}
    if test:
        loader = build_data_loader(data["test"], {"sampler": {"class_or_func": SequentialSampler}, "kwargs": {
            "batch_size": datamodule.eval_batch_size}}, distributed=False)
        result["test_acc_top1_last"] = top1(student, loader, datamodule.num_classes)
        student.load_state_dict(best_state)
        result["test_acc_top1_best"] = top1(student, loader, datamodule.num_classes)
        result["seconds"] = time.perf_counter() - start  # before the teacher's check, which ours does not make
        # The weights loaded right: the teacher scores as ours measured it.
        result["teacher_test_acc_top1"] = top1(teacher, loader, datamodule.num_classes)
    return result
