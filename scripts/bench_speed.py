"""Time a distillation run against the floor: a plain PyTorch loop training the student alone.

    python scripts/bench_speed.py                          # digits + Fashion-MNIST-sized data, this device
    python scripts/bench_speed.py --dataset fashion_mnist --samples 20000 --epochs 4 --out docs/bench_speed.json

Configurations, all on the same tensors, batch size, student and optimizer:
  A  plain PyTorch loop, student alone (the floor on this machine)
  B  distill's Lightning module, student alone (CE)
  C  distill, KD with the live teacher
  D  distill, KD with cached teacher outputs
  E  distill, FitNet hint + CE with the live teacher (feature hooks, regressor)
  T  the teacher's inference alone over the same samples
Times are medians over epochs after the first (warm-up). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.data import DigitsDataModule, FashionMNISTDataModule, InMemoryDataModule  # noqa: E402
from distill.losses import build_loss_terms  # noqa: E402
from distill.models import create_model  # noqa: E402
from distill.module import DistillationModule  # noqa: E402
from distill.teacher_outputs import load_or_compute, teacher_outputs_key  # noqa: E402


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.steps: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._step = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        _sync(module.device)
        self.steps.append(time.perf_counter() - self._step)

    def on_train_epoch_end(self, trainer, module) -> None:
        _sync(module.device)
        self.epochs.append(time.perf_counter() - self._epoch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_after_warmup(values: list[float], per_epoch: int = 1) -> float:
    kept = values[per_epoch:] if len(values) > per_epoch else values
    return statistics.median(kept)


def plain_loop(student, images, labels, batch_size, epochs, lr, device) -> dict:
    """(A) the floor: shuffled tensor batches, forward, cross-entropy, backward, SGD step."""
    student = student.to(device).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    images, labels = images.to(device), labels.to(device)
    epoch_times, step_times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=device)
        for i in range(0, len(labels), batch_size):
            step = time.perf_counter()
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(student(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            step_times.append(time.perf_counter() - step)
        epoch_times.append(time.perf_counter() - start)
    steps_per_epoch = -(-len(labels) // batch_size)
    return {"epoch_s": median_after_warmup(epoch_times), "step_ms": 1e3 * median_after_warmup(step_times,
                                                                                              steps_per_epoch)}


def lightning_fit(student, teacher, loss, data, args, accelerator, teacher_outputs=None) -> dict:
    module = DistillationModule(student, build_loss_terms(loss), lambda params: torch.optim.SGD(
        params, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True), data.num_classes, data.input_shape,
        teacher=teacher, teacher_outputs=teacher_outputs, channels_last=args.channels_last,
        compile_student=args.compile)
    timer = EpochTimer()
    epochs = args.epochs
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, precision=args.precision,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    steps_per_epoch = len(timer.steps) // epochs
    return {"epoch_s": median_after_warmup(timer.epochs), "step_ms": 1e3 * median_after_warmup(timer.steps,
                                                                                              steps_per_epoch)}


def teacher_inference(teacher, images, batch_size, epochs, device) -> dict:
    teacher = teacher.to(device).eval()
    images = images.to(device)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                teacher(images[i:i + batch_size])
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"epoch_s": median_after_warmup(times)}


def subsample(data: InMemoryDataModule, samples: int | None) -> None:
    train = data.splits["train"]
    if samples and samples < len(train.labels):
        generator = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(train.labels), generator=generator)[:samples]
        data.splits["train"] = type(train)(train.images[keep].contiguous(), train.labels[keep])


def bench(dataset: str, args: argparse.Namespace, device: torch.device) -> dict:
    if dataset == "digits":
        data = DigitsDataModule(batch_size=args.batch_size)
    else:
        data = FashionMNISTDataModule(root=args.fashion_root, batch_size=args.batch_size, mean=[0.2860],
                                      std=[0.3530])
    data.setup()
    subsample(data, args.samples if dataset != "digits" else None)
    train = data.splits["train"]
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def student():
        torch.manual_seed(0)
        return create_model(args.student, data.num_classes, data.in_chans, {"width": 16} if args.student ==
                            "small_cnn" else {})

    torch.manual_seed(0)
    teacher = create_model(args.teacher, data.num_classes, data.in_chans).to(device).eval()
    results = {"A_plain_loop": plain_loop(student(), train.images, train.labels, args.batch_size, args.epochs,
                                          0.05, device)}
    results["T_teacher_inference"] = teacher_inference(teacher, train.images, args.batch_size, args.epochs, device)
    results["B_student_alone"] = lightning_fit(student(), None, {"ce": {"weight": 1.0}}, data, args, accelerator)
    kd = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
    results["C_kd_live_teacher"] = lightning_fit(student(), teacher, kd, data, args, accelerator)
    with tempfile.TemporaryDirectory() as cache:
        teacher.to(device)  # the module built for C moved it to the (CPU) student; build the cache on the device
        start = time.perf_counter()
        key = teacher_outputs_key(teacher, {"dataset": dataset, "samples": len(train.labels)}, None, None)
        outputs = load_or_compute(cache, key, teacher, {"train": train.images}, data.num_classes, None, None,
                                  memory_mapped=False)
        build_s = time.perf_counter() - start
        results["D_kd_cached_teacher"] = lightning_fit(student(), teacher, kd, data, args, accelerator,
                                                       teacher_outputs=outputs)
        results["D_kd_cached_teacher"].update({"cache_build_s": build_s, "cache_bytes": outputs.nbytes})
    fitnet = {"ce": {"weight": 1.0}, "fitnet": {"weight": 100.0, "student_layer": "@-2", "teacher_layer": "@-2"}}
    results["E_fitnet_live_teacher"] = lightning_fit(student(), teacher, fitnet, data, args, accelerator)
    a, t = results["A_plain_loop"]["epoch_s"], results["T_teacher_inference"]["epoch_s"]
    ratios = {
        "B/A framework overhead (goal <= 1.10)": results["B_student_alone"]["epoch_s"] / a,
        "C/(A+T) live-teacher KD (goal <= 1.10)": results["C_kd_live_teacher"]["epoch_s"] / (a + t),
        "D/A cached-teacher KD (goal <= 1.15)": results["D_kd_cached_teacher"]["epoch_s"] / a,
        "E/(A+T) FitNet, live teacher": results["E_fitnet_live_teacher"]["epoch_s"] / (a + t),
    }
    return {"dataset": dataset, "train_samples": len(train.labels), "input_shape": list(data.input_shape),
            "options": {"precision": args.precision, "channels_last": args.channels_last, "compile": args.compile},
            "batch_size": args.batch_size, "epochs": args.epochs, "student": args.student, "teacher": args.teacher,
            "results": results, "ratios": ratios}


def print_table(result: dict) -> None:
    print(f"\n{result['dataset']}: {result['train_samples']} training images {tuple(result['input_shape'])}, "
          f"batch {result['batch_size']}, {result['student']} <- {result['teacher']}, "
          f"median of epochs 2..{result['epochs']}, options {result['options']}")
    print(f"  {'configuration':<26}{'epoch (s)':>12}{'step (ms)':>12}")
    for name, values in result["results"].items():
        step = values.get("step_ms")
        print(f"  {name:<26}{values['epoch_s']:>12.3f}{(f'{step:.2f}' if step else ''):>12}")
    cache = result["results"]["D_kd_cached_teacher"]
    print(f"  teacher-output cache: {cache['cache_bytes'] / 2**20:.2f} MiB, built in {cache['cache_build_s']:.2f} s")
    for name, value in result["ratios"].items():
        print(f"  {name:<42}{value:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "fashion_mnist", "both"], default="both")
    parser.add_argument("--fashion-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--samples", type=int, default=10000, help="Fashion-MNIST training images used (max 55000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--student", default="small_cnn")
    parser.add_argument("--teacher", default="cifar_resnet20")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="32-true", help="Lightning precision for B-E, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="NHWC layout for the student (and teacher)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student in B-E")
    parser.add_argument("--out", type=Path, default=Path("bench_speed.json"))
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    datasets = ["digits", "fashion_mnist"] if args.dataset == "both" else [args.dataset]
    results = [bench(name, args, device) for name in datasets]
    for result in results:
        print_table(result)
    machine = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "lightning": L.__version__, "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps({"machine": machine, "benchmarks": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
