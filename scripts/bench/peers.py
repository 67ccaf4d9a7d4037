"""Time distill's KD step against a peer framework, torchdistill, on the same tensors, models and recipe.

    python -m scripts.bench peers [--device cuda] [--epochs 3]   # self-check on digits: loss equation, learning, timing

torchdistill_kd() builds torchdistill's DistillationBox from the `train:` section of its sample
configs/sample/cifar10/kd/*-final_run.yaml (as a dict) and steps it as examples/torchvision/image_classification.py
does. Times are medians over epochs (and their steps) after the first, as in the speed command (speed.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time

import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler, TensorDataset

from scripts.bench.stats import median_after_first

TEMPERATURE, CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9  # distill's recipe: 0.1*CE + 0.9*T^2*KL at T=4


def _build_box(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int, epochs: int, device: torch.device):
    """A DistillationBox built as torchdistill's example script does: get_distillation_box(..., train_config, ...)."""
    if importlib.util.find_spec("torchdistill") is None:
        raise ImportError('torchdistill is not installed: pip install -e ".[bench]"')
    from torchdistill.core.distillation import get_distillation_box

    # torchdistill logs its setup at INFO on children of the *root* logger; keep it quiet if the caller logs at INFO.
    logging.getLogger("torchdistill").setLevel(logging.WARNING)
    # torchdistill never calls teacher.eval(): a teacher left in train mode would normalise with batch statistics.
    teacher.eval()
    # KDLoss returns alpha*CE(mean) + beta*T^2*KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)), beta = 1-alpha
    # (losses/mid_level.py KDLoss), so alpha=0.1 gives exactly 0.1*CE + 0.9*T^2*KL; the WeightedSumLoss weight is 1.
    kd_loss = {"key": "KDLoss", "kwargs": {
        "student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
        "teacher_module_io": "output", "temperature": TEMPERATURE, "alpha": CE_WEIGHT, "reduction": "batchmean"}}
    train_config = {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": batch_size, "num_workers": 0,
                                         "pin_memory": device.type == "cuda", "drop_last": False}},
        # No 'wrapper': the sample config's DataParallel/DDP would add scatter/gather work a single device doesn't need.
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": kd_loss, "weight": 1.0}}}},
    }
    # The dataset stays on the CPU: the loader indexes it per sample and each batch is moved, as in the example.
    dataset_dict = {"train": TensorDataset(images.cpu(), labels.cpu())}
    return get_distillation_box(teacher.to(device), student.to(device), dataset_dict, train_config, device,
                                device_ids=None, distributed=False, lr_factor=1)


def torchdistill_kd(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    batch_size: int, epochs: int, device: torch.device) -> dict:
    """Train `student` from frozen `teacher` with torchdistill's DistillationBox and KDLoss.

    Returns {"epoch_s": median epoch seconds after the first epoch, "step_ms": median step ms after the first epoch,
    "version": torchdistill.__version__}. A step is batch.to(device) + forward_process + post_forward_process
    (backward, SGD step, zero_grad); an epoch adds the DataLoader's batching.
    """
    box = _build_box(student, teacher, images, labels, batch_size, epochs, device)
    import torchdistill

    epoch_times, step_times = [], []
    for epoch in range(box.num_epochs):
        start = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            step = time.perf_counter()
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_times.append(time.perf_counter() - step)
        box.post_epoch_process()
        epoch_times.append(time.perf_counter() - start)
    box.clean_modules()  # as the example's train() ends: unhooks and unfreezes the original models
    return {"epoch_s": median_after_first(epoch_times),
            "step_ms": 1e3 * median_after_first(step_times, len(box.train_data_loader)),
            "version": torchdistill.__version__}


def kd_loss_by_hand(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0.1*CE + 0.9*T^2*KL(softmax(t/T) || softmax(s/T)), KL summed over classes and averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / TEMPERATURE, dim=1)
    log_p_t = F.log_softmax(teacher_logits / TEMPERATURE, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return CE_WEIGHT * F.cross_entropy(student_logits, labels) + KD_WEIGHT * TEMPERATURE ** 2 * kl


@torch.no_grad()
def check_loss_matches(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor,
                       labels: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Assert torchdistill's loss on one fixed batch equals kd_loss_by_hand; returns (torchdistill, by hand)."""
    box = _build_box(student, teacher, images, labels, len(labels), 1, device)
    student.eval()  # no dropout/batch-statistic differences between the two forward passes
    x, y = images.to(device), labels.to(device)
    ours = box.forward_process(x, y, {}).item()
    by_hand = kd_loss_by_hand(student(x), teacher(x), y).item()
    box.clean_modules()
    assert abs(ours - by_hand) <= 1e-5 * max(1.0, abs(by_hand)), f"torchdistill {ours} != by hand {by_hand}"
    return ours, by_hand


@torch.no_grad()
def _evaluate(model: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple:
    logits = model.eval()(images)
    return kd_loss_by_hand(logits, teacher(images), labels).item(), (logits.argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-epochs", type=int, default=3, help="plain CE epochs so the teacher is worth copying")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from distill.data import DigitsDataModule
    from distill.models import create_model

    torch.manual_seed(0)
    device = torch.device(args.device)
    data = DigitsDataModule(batch_size=args.batch_size)
    data.setup()
    images, labels = data.splits["train"].images.to(device), data.splits["train"].labels.to(device)
    student = create_model("small_cnn", 10, 1, {"width": 16}).to(device)
    teacher = create_model("cifar_resnet20", 10, 1).to(device)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for batch in [b for _ in range(args.teacher_epochs) for b in torch.randperm(len(labels)).split(args.batch_size)]:
        optimizer.zero_grad()
        F.cross_entropy(teacher(images[batch]), labels[batch]).backward()
        optimizer.step()
    teacher.requires_grad_(False).eval()

    ours, by_hand = check_loss_matches(student, teacher, images[:64], labels[:64], device)
    print(f"loss on a fixed batch: torchdistill {ours:.6f}  by hand {by_hand:.6f}")
    loss_before, acc_before = _evaluate(student, teacher, images, labels)
    result = torchdistill_kd(student, teacher, images, labels, args.batch_size, args.epochs, device)
    loss_after, acc_after = _evaluate(student, teacher, images, labels)
    print(f"teacher train acc {_evaluate(teacher, teacher, images, labels)[1]:.3f}")
    print(f"student KD loss {loss_before:.4f} -> {loss_after:.4f}, train acc {acc_before:.3f} -> {acc_after:.3f}")
    print(result)
    assert loss_after < loss_before, "KD loss did not decrease"
    assert acc_after > 0.2, "student accuracy is not above chance (0.1)"


if __name__ == "__main__":
    main()
