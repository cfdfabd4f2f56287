"""95 % confidence intervals by the percentile bootstrap over users, paired across policies.

Why the bootstrap rather than a normal approximation: the per-user numbers are skewed and
bounded (most random sessions consume nothing, a few consume one), so mean +- 1.96 SE can
reach below zero and misstates the tails. Why paired: every policy serves the same users, so
each replicate resamples users *once* for all policies; the interval of a difference (the
uplift over random) then reflects how the policies differ, not how the users differ.

A per-user value may be NaN where it is undefined (the mean rating of a user who consumed
nothing); means skip those users, in the point estimate and in every replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
CHUNK_CELLS = 1 << 22  # resampled values held at once: 4M floats = 32 MB


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its bootstrap interval; None when undefined."""

    mean: float | None
    low: float | None
    high: float | None
    users: int  # users the mean is over

    def above(self, other: Estimate) -> bool:
        """True when this interval lies entirely above ``other``'s (no overlap)."""
        if self.low is None or other.high is None:
            return False
        return self.low > other.high


def nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the defined (non-NaN) values; NaN where there is none, without a warning."""
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    count = defined.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``values`` (policies, users) -> replicate means (policies, resamples); all policies
    share each replicate's resampled users."""
    n_policies, n_users = values.shape
    out = np.empty((n_policies, resamples))
    if n_users == 0:
        out.fill(np.nan)
        return out
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_CELLS // n_users)
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        users = rng.integers(0, n_users, size=(stop - start, n_users))
        for p in range(n_policies):
            out[p, start:stop] = nanmean(values[p][users])
    return out


def estimate(values: np.ndarray, samples: np.ndarray, level: float = LEVEL) -> Estimate:
    """The mean of one policy's per-user ``values`` and the percentile interval of its
    replicate means ``samples``."""
    mean = float(nanmean(values))
    return _interval(mean, samples, int((~np.isnan(values)).sum()), level)


def difference(values: np.ndarray, reference: np.ndarray, samples: np.ndarray,
               reference_samples: np.ndarray, level: float = LEVEL) -> Estimate:
    """Mean(values) - mean(reference) with the interval of the paired replicate differences."""
    mean = float(nanmean(values) - nanmean(reference))
    return _interval(mean, samples - reference_samples, int((~np.isnan(values)).sum()), level)


def _interval(mean: float, samples: np.ndarray, users: int, level: float) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if np.isnan(mean) or len(finite) == 0:
        return Estimate(None, None, None, users)
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(mean, float(low), float(high), users)
