"""Plain helpers shared by the loss tests: float64 tensors, hand-computed softmax/KD, pooling written out."""

from __future__ import annotations

import math

import torch

DOUBLE = torch.float64


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=DOUBLE)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def hand_kd(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """KL(p_t || p_s) per row, summed over classes, averaged over rows, times T^2."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s = softmax([v / temperature for v in s_row])
        p_t = softmax([v / temperature for v in t_row])
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return total / len(student) * temperature**2


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def unit(v):
    norm = math.sqrt(dot(v, v))
    return [x / norm for x in v]


def avg_pool_2x2(feature: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling written out, for maps of even size."""
    return (feature[..., 0::2, 0::2] + feature[..., 1::2, 0::2] + feature[..., 0::2, 1::2]
            + feature[..., 1::2, 1::2]) / 4


def pooled(feature: torch.Tensor, size: int) -> list[float]:
    """Average pooling of an h x h map to size x size (h divisible by size), by loops."""
    n, c, h, _ = feature.shape
    k = h // size
    return [sum(feature[i, j, y * k + a, x * k + b].item() for a in range(k) for b in range(k)) / (k * k)
            for i in range(n) for j in range(c) for y in range(size) for x in range(size)]


STUDENT_LOGITS = [[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 2.5, 1.0], [3.0, 1.0, 0.0, 0.5]]
TEACHER_LOGITS = [[2.0, 3.5, -1.0, 0.0], [1.0, 0.0, 4.0, -2.0], [2.0, 2.5, -0.5, 1.0]]
