"""onnxruntime as the deployed model sees it: sessions with fixed threads, logits, accuracy, speed, energy.

Threads are set explicitly (intra-op ``threads``, inter-op 1) and recorded, because onnxruntime's
default uses every core and latencies measured that way do not transfer to a device.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from distill.measure import _cpu_name, measure_energy, spread, time_calls

CPU = torch.device("cpu")


def session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with every graph optimisation on (QDQ pairs fuse into int8 kernels) and fixed threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_name(sess: ort.InferenceSession) -> str:
    return sess.get_inputs()[0].name


def run_batches(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for ``images`` (N x C x H x W float32), computed ``batch_size`` at a time."""
    name = input_name(sess)
    outputs = [sess.run(None, {name: np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32)})[0]
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def accuracy(sess: ort.InferenceSession, loader: Iterable, num_classes: int) -> dict[str, Any]:
    """Top-1 and top-5 over every batch of ``loader``, computed by onnxruntime (what ships), not PyTorch."""
    name = input_name(sess)
    correct1 = correct5 = total = 0
    k = min(5, num_classes)
    for images, labels, *_ in loader:
        logits = sess.run(None, {name: images.numpy().astype(np.float32)})[0]
        top = np.argsort(-logits, axis=1)[:, :k]
        labels = labels.numpy()
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(axis=1).sum())
        total += len(labels)
    return {"top1": correct1 / total, "top5": correct5 / total if num_classes > 5 else None, "samples": total}


def measure_speed(sess: ort.InferenceSession, input_shape: tuple[int, ...], threads: int, batch_size: int,
                  warmup: int, repeats: int) -> dict[str, Any]:
    """Batch-1 latency, throughput at ``batch_size`` and energy per image, in the same form as PyTorch's."""
    name = input_name(sess)
    rng = np.random.default_rng(0)
    single = rng.standard_normal((1, *input_shape), dtype=np.float32)
    batch = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)

    def call(images: np.ndarray):
        return lambda: sess.run(None, {name: images})

    latency = spread(t * 1e3 for t in time_calls(call(single), CPU, warmup, repeats))
    batch_times = time_calls(call(batch), CPU, max(1, warmup // 2), max(3, repeats // 3))
    throughput = spread(batch_size / t for t in batch_times)
    return {
        "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        "device": "cpu",
        "device_name": _cpu_name(),
        "threads": threads,
        "latency_ms_batch1": latency,
        "throughput_batch": batch_size,
        "throughput_images_per_s": throughput,
        "repeats": repeats,
        "warmup": warmup,
        "energy": measure_energy(call(batch), batch_size, throughput["median"] / batch_size, CPU),
    }
