"""Measurements of a model for the efficiency report: accuracy, size, MACs, latency, memory, energy.

Each function measures one thing on the current device and returns plain numbers; nothing is estimated
where it can be measured, and what cannot be measured is reported as such, never invented.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def saved_bytes(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Size of the model's state dict as safetensors with floating tensors cast to ``dtype``."""
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    return len(save(state))


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs and MACs of one image's forward pass, from ``torch.utils.flop_counter``.

    The counter counts matrix products and convolutions (2 FLOPs per multiply-accumulate); batch norm,
    activations and pooling are not counted, as in most published MAC figures.
    """
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensors created inside the mode and still alive; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.references: dict[int, list[int]] = {}  # storage address -> [tensors alive, bytes]
        self.live = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.references[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.references[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(output)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self.references:
                self.references[key] = [0, storage.nbytes()]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.references[key][0] += 1
            weakref.finalize(tensor, self._release, key)
        return output


def peak_forward_memory(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Peak memory of a batch-1 inference forward pass: weights + input + the most activations alive at once.

    On CUDA, ``torch.cuda.max_memory_allocated``; on the CPU, every tensor an operator creates is tracked
    until it is freed (a dispatch mode), which gives the same peak the profiler's allocation trace shows.
    """
    device = next(model.parameters()).device
    model.eval()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    image = torch.zeros(1, *input_shape, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            model(image)
        torch.cuda.synchronize(device)
        activations = torch.cuda.max_memory_allocated(device) - before
        method = "torch.cuda.max_memory_allocated"
    else:
        tracker = _LiveTensorBytes()
        with torch.no_grad(), tracker:
            model(image)
        activations = tracker.peak
        method = "live-tensor tracking (dispatch mode)"
    input_bytes = image.numel() * image.element_size()
    return {"peak_activation_bytes": int(activations), "peak_forward_bytes": int(weights + input_bytes + activations),
            "method": method}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a GPU runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device`` has finished its queued work."""
    synchronize(device)
    return time.perf_counter()


def time_calls(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones (device synchronised around each)."""
    for _ in range(warmup):
        call()
    synchronize(device)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        timings.append(time.perf_counter() - start)
    return timings


def spread(values: Iterable[float]) -> dict[str, float]:
    values = sorted(values)
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "p25": quartiles[0], "p75": quartiles[2],
            "min": values[0], "max": values[-1]}


# A timing whose interquartile range exceeds this share of its median was taken beside other work (or a
# frequency change): it is measured again, and marked unstable if it stays that wide.
UNSTABLE_SPREAD = 0.5
LATENCY_ATTEMPTS = 3


def stable_latency(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                   attempts: int = LATENCY_ATTEMPTS) -> dict[str, Any]:
    """Batch-1 latency in ms (``spread``), measured up to ``attempts`` times until the quartiles lie within
    ``UNSTABLE_SPREAD`` of the median; the narrowest measurement is kept, with ``stable`` and ``attempts``."""
    measured: list[dict[str, Any]] = []
    for _ in range(attempts):
        latency: dict[str, Any] = spread(t * 1e3 for t in time_calls(call, device, warmup, repeats))
        latency["relative_iqr"] = (latency["p75"] - latency["p25"]) / latency["median"] if latency["median"] else 0.0
        measured.append(latency)
        if latency["relative_iqr"] <= UNSTABLE_SPREAD:
            break
    best = min(measured, key=lambda latency: latency["relative_iqr"])
    best["stable"] = best["relative_iqr"] <= UNSTABLE_SPREAD
    best["attempts"] = len(measured)
    return best


class EnergyMeter:
    """Energy counters the hardware exposes: Intel RAPL (CPU package) or NVML (NVIDIA GPU)."""

    def __init__(self, device: torch.device, rapl_root: str | Path = "/sys/class/powercap") -> None:
        self.device = device
        self.rapl_root = Path(rapl_root)
        self.source: str | None = None
        self.reason = ""
        self._read: Callable[[], float] | None = None
        self.resolution = 1e-6  # joules per counter tick: RAPL counts µJ, NVML mJ
        if device.type == "cuda":
            self._setup_nvml()
        else:
            self._setup_rapl()

    def _setup_rapl(self) -> None:
        # Package domains only (intel-rapl:N); sub-domains (intel-rapl:N:M, core and dram) lie inside them.
        domains = [p for p in sorted(self.rapl_root.glob("intel-rapl:*")) if p.name.count(":") == 1]
        if not domains:
            self.reason = f"no Intel RAPL counters under {self.rapl_root} on this machine"
            return
        try:
            for domain in domains:
                int((domain / "energy_uj").read_text())
        except (OSError, ValueError) as error:
            self.reason = f"RAPL counters are not readable ({error}); run as root or grant read access"
            return
        ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self.source = f"Intel RAPL ({len(domains)} package domain(s); whole package, includes other processes)"
        self._ranges = ranges
        self._domains = domains
        self._read = lambda: sum(int((d / "energy_uj").read_text()) for d in domains) / 1e6

    def _setup_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as error:  # no pynvml, no driver support (pre-Volta), no permission
            self.reason = f"NVML energy counter unavailable: {type(error).__name__}: {error}"
            return
        self.source = "NVML total energy consumption (whole GPU)"
        self.resolution = 1e-3
        self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

    @property
    def available(self) -> bool:
        return self._read is not None

    def measure(self, call: Callable[[], Any]) -> float:
        """Joules used while ``call`` ran (RAPL counter wrap-around handled for one wrap)."""
        read = self._read
        assert read is not None, "measure() needs an available meter"
        start = read()
        call()
        synchronize(self.device)
        used = read() - start
        if used < 0 and self.source and self.source.startswith("Intel RAPL"):
            used += sum(self._ranges) / 1e6
        return used


ENERGY_SECONDS = 2.0
# A reading of fewer counter ticks than this is too coarse to quote (10 ticks: at most 10 % quantisation error).
MIN_ENERGY_TICKS = 10


def measure_energy(call: Callable[[], Any], images_per_call: int, calls_per_second: float,
                   device: torch.device) -> dict[str, Any]:
    """Energy per image over at least ``ENERGY_SECONDS`` of back-to-back ``call``s, where a counter exists.

    Counters tick coarsely (NVML in mJ, updated every few tens of ms; RAPL in µJ), so one forward pass
    is never timed alone: the window is long enough to read, and a reading of fewer than
    ``MIN_ENERGY_TICKS`` ticks is reported as below resolution rather than as a number.
    """
    meter = EnergyMeter(device)
    if not meter.available:
        return {"measured": False, "reason": meter.reason}
    loops = max(3, math.ceil(ENERGY_SECONDS * calls_per_second))

    def run_calls() -> None:
        for _ in range(loops):
            call()

    start = time.perf_counter()
    joules = meter.measure(run_calls)
    seconds = time.perf_counter() - start
    images = loops * images_per_call
    if joules < MIN_ENERGY_TICKS * meter.resolution:
        return {"measured": False, "below_resolution": True, "source": meter.source,
                "reason": f"below resolution: {meter.source} counted {joules:.3g} J over {images} images in "
                          f"{seconds:.2f} s (one tick = {meter.resolution:g} J)"}
    return {"measured": True, "source": meter.source, "images": images, "seconds": seconds, "joules": joules,
            "joules_per_image": joules / images}


def measure_speed(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, warmup: int,
                  repeats: int) -> dict[str, Any]:
    """Latency per image at batch 1, throughput at ``batch_size``, and energy per image where counters exist."""
    device = next(model.parameters()).device
    model.eval()
    single = torch.randn(1, *input_shape, device=device)
    batch = torch.randn(batch_size, *input_shape, device=device)

    def forward(images: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.no_grad():
                return model(images)

        return call

    latency = stable_latency(forward(single), device, warmup, repeats)
    batch_times = time_calls(forward(batch), device, max(1, warmup // 2), max(3, repeats // 3))
    throughput = spread(batch_size / t for t in batch_times)
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "latency_ms_batch1": latency,
        "throughput_batch": batch_size,
        "throughput_images_per_s": throughput,
        "repeats": repeats,
        "warmup": warmup,
    }
    loops_per_second = throughput["median"] / batch_size
    result["energy"] = measure_energy(forward(batch), batch_size, loops_per_second, device)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def accuracy(model: nn.Module, loader: Iterable, num_classes: int) -> dict[str, float | None]:
    """Top-1 and top-5 accuracy of ``model`` over ``loader`` (eval mode, no gradients)."""
    device = next(model.parameters()).device
    model.eval()
    correct1 = correct5 = total = 0
    k = min(5, num_classes)
    with torch.no_grad():
        for images, labels, *_ in loader:
            images, labels = images.to(device), labels.to(device)
            top = model(images).topk(k, dim=1).indices
            correct1 += (top[:, 0] == labels).sum().item()
            correct5 += (top == labels[:, None]).any(dim=1).sum().item()
            total += len(labels)
    return {"top1": correct1 / total, "top5": correct5 / total if num_classes > 5 else None, "samples": total}
