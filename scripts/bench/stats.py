"""Statistics for a benchmark table over seeds: Welch intervals, the teacher-student gap closed, real differences.

Each method is a handful of independent runs (seeds); a difference between two methods is called real only
when the 95 % Welch t interval of the difference of their means excludes zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """``estimate`` with its confidence interval [low, high]; ``dof`` the Welch–Satterthwaite degrees of freedom."""

    estimate: float
    low: float
    high: float
    dof: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); std 0 for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def median_after_first(values: Sequence[float], per_epoch: int = 1) -> float:
    """The median of ``values`` without the first epoch's ``per_epoch`` values (warm-up: allocation, first
    kernels, caches), or of all of them when there are no more."""
    return statistics.median(values[per_epoch:] if len(values) > per_epoch else values)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval | None:
    """The interval of mean(a) − mean(b) by Welch's t (unequal variances); None when a side has < 2 values.

    ``se² = s_a²/n_a + s_b²/n_b``, ``dof = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1))``,
    interval ``diff ± t_{(1+level)/2, dof} · se``. Identical constant samples give a zero-width interval.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = var_a + var_b
    if se2 == 0:
        return Interval(diff, diff, diff, math.inf)
    dof = se2**2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + level) / 2, dof)) * math.sqrt(se2)
    return Interval(diff, diff - half, diff + half, dof)


def gap_closed(method: float | None, baseline: float | None, teacher: float | None) -> float | None:
    """(method − baseline) / (teacher − baseline): 0 is the student alone, 1 the teacher; None without a gap."""
    if method is None or baseline is None or teacher is None or teacher == baseline:
        return None
    return (method - baseline) / (teacher - baseline)


def real_differences(samples: dict[str, Sequence[float]], level: float = 0.95) -> list[tuple[str, str, Interval]]:
    """Every ordered pair (better, worse) whose difference's interval excludes zero, largest difference first."""
    pairs = []
    for name, values in samples.items():
        for other, other_values in samples.items():
            interval = welch_interval(values, other_values, level) if other != name else None
            if interval is not None and interval.low > 0:
                pairs.append((name, other, interval))
    return sorted(pairs, key=lambda pair: -pair[2].estimate)
