"""Paired-seed statistics for "does the candidate match the reference?" (formulas in README.md).

Seed k of every method starts from the same weights, data order and augmentation, so the unit of
evidence is a seed pair: its gap (reference minus candidate accuracy, points) and, on its paired test
predictions, McNemar's exact test. Over seeds: the mean gap, its 95% t confidence interval, a TOST
equivalence test against +-margin, and a verdict. Torch-free (numpy + scipy.stats), so the report
side can import it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
CONFIDENCE = 0.95
MAX_SEEDS_NEEDED = 100  # beyond this the estimate says "more than 100": the spread swamps the margin

VERDICTS = ("equivalent", "worse", "better", "inconclusive")


@dataclass(frozen=True)
class McNemar:
    b: int  # test images the reference gets right and the candidate wrong
    c: int  # test images the candidate gets right and the reference wrong
    p: float  # two-sided exact (binomial) p-value; 1.0 when b + c == 0


def mcnemar_exact(labels, reference_pred, candidate_pred) -> McNemar:
    """McNemar's exact test on paired top-1 predictions of the same test images.

    Under H0 (both classifiers equally accurate) each discordant image is reference-right with
    probability 1/2, so b ~ Binomial(b + c, 1/2). With no discordant image there is no evidence either
    way: p = 1 (binomtest refuses n = 0)."""
    labels, ref, cand = (np.asarray(a).ravel() for a in (labels, reference_pred, candidate_pred))
    if not (labels.shape == ref.shape == cand.shape):
        raise ValueError(f"McNemar needs equally long arrays, got {labels.size}, {ref.size}, {cand.size}")
    ref_ok, cand_ok = ref == labels, cand == labels
    b, c = int(np.sum(ref_ok & ~cand_ok)), int(np.sum(~ref_ok & cand_ok))
    p = 1.0 if b + c == 0 else float(sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemar(b, c, p)


def t_interval(gaps, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """mean +- t_{(1+conf)/2, n-1} * sd / sqrt(n) over the paired gaps; None for fewer than 2."""
    gaps = np.asarray(gaps, dtype=float)
    n = gaps.size
    if n < 2:
        return None
    mean, se = float(gaps.mean()), float(gaps.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return (mean - half, mean + half)


def tost_p(gaps, margin: float) -> float | None:
    """Two one-sided t-tests of H0: mean <= -margin or mean >= +margin; p = max of the two.

    p < alpha exactly when the (1 - 2 alpha) t interval lies inside +-margin. With zero spread the
    t statistics are infinite: p is their limit (0 strictly inside the margin, 1 outside, 1/2 on it).
    None for fewer than 2 gaps (no spread to test with)."""
    gaps = np.asarray(gaps, dtype=float)
    n = gaps.size
    if n < 2:
        return None
    mean, se = float(gaps.mean()), float(gaps.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        return 0.0 if abs(mean) < margin else (0.5 if abs(mean) == margin else 1.0)
    p_lower = float(sps.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_upper = float(sps.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    return max(p_lower, p_upper)


def _decided(mean: float, sd: float, n: int, margin: float) -> bool:
    """Would n seeds with this mean and sd give a verdict other than inconclusive?"""
    se = sd / math.sqrt(n)
    excludes_zero = abs(mean) > float(sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    equivalent = abs(mean) + float(sps.t.ppf(1 - ALPHA, n - 1)) * se < margin  # TOST p < alpha
    return excludes_zero or equivalent


def seeds_needed(mean: float, sd: float, n: int, margin: float, cap: int = MAX_SEEDS_NEEDED) -> int | None:
    """The smallest total number of seeds (> n) at which, were the mean and sd to stay as measured,
    the 95% CI would exclude 0 or TOST would show equivalence; None when even ``cap`` seeds would not."""
    for m in range(max(n + 1, 2), cap + 1):
        if _decided(mean, sd, m, margin):
            return m
    return None


@dataclass(frozen=True)
class Pair:
    seed: int
    reference_acc: float
    candidate_acc: float
    gap: float
    mcnemar_p: float | None
    discordant: tuple[int, int] | None


@dataclass(frozen=True)
class Comparison:
    candidate: str
    n_seeds: int
    pairs: tuple[Pair, ...]
    mean_gap: float
    sd_gap: float | None
    ci95: tuple[float, float] | None
    tost_p: float | None
    verdict: str
    seeds_needed: int | None
    reason: str

    def to_json(self) -> dict:
        out = asdict(self)
        out["pairs"] = [
            {**asdict(p), "discordant": list(p.discordant) if p.discordant is not None else None} for p in self.pairs
        ]
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return out


def make_pair(seed: int, reference_acc: float, candidate_acc: float, labels=None, reference_pred=None,
              candidate_pred=None) -> Pair:
    """One seed pair; McNemar only when the predictions (and labels) are given."""
    if labels is None or reference_pred is None or candidate_pred is None:
        return Pair(seed, reference_acc, candidate_acc, reference_acc - candidate_acc, None, None)
    m = mcnemar_exact(labels, reference_pred, candidate_pred)
    return Pair(seed, reference_acc, candidate_acc, reference_acc - candidate_acc, m.p, (m.b, m.c))


def compare(candidate: str, pairs, margin: float) -> Comparison:
    """Mean gap, 95% CI, TOST and the verdict over the seed pairs of one candidate.

    Verdict: equivalent when TOST p < 0.05 (checked first: a small but significant gap inside the margin
    is still equivalent); worse when the 95% CI lies entirely above 0; better when entirely below 0;
    otherwise inconclusive, with the number of seeds that would decide it at the measured mean and sd."""
    pairs = tuple(sorted(pairs, key=lambda p: p.seed))
    if not pairs:
        raise ValueError(f"{candidate}: no seed pairs to compare")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    gaps = np.array([p.gap for p in pairs], dtype=float)
    n, mean = gaps.size, float(gaps.mean())
    if n == 1:
        return Comparison(candidate, 1, pairs, mean, None, None, None, "inconclusive", None,
                          "one seed pair gives no spread, so no confidence interval: run at least 2 seeds")
    sd = float(gaps.std(ddof=1))
    ci, p = t_interval(gaps), tost_p(gaps, margin)
    if p < ALPHA:
        verdict, needed = "equivalent", None
        reason = (f"TOST p = {p:.3g} < {ALPHA}: the 90% CI lies inside +-{margin:g} points "
                  f"(the equivalence margin)")
    elif ci[0] > 0:
        verdict, needed = "worse", None
        reason = f"the 95% CI [{ci[0]:.2f}, {ci[1]:.2f}] lies above 0 and TOST p = {p:.3g} does not show equivalence"
    elif ci[1] < 0:
        verdict, needed = "better", None
        reason = f"the 95% CI [{ci[0]:.2f}, {ci[1]:.2f}] lies below 0 and TOST p = {p:.3g} does not show equivalence"
    else:
        verdict, needed = "inconclusive", seeds_needed(mean, sd, n, margin)
        more = (f"about {needed} seeds in all ({needed - n} more) would decide it if the mean and sd stay as measured"
                if needed is not None else
                f"more than {MAX_SEEDS_NEEDED} seeds would be needed at this spread")
        reason = (f"the 95% CI [{ci[0]:.2f}, {ci[1]:.2f}] contains 0 and TOST p = {p:.3g} >= {ALPHA} "
                  f"(margin +-{margin:g}); {more}")
    return Comparison(candidate, n, pairs, mean, sd, ci, p, verdict, needed, reason)


# ---------------------------------------------------------------------------------------------
# The parity gate's tolerance


def prediction_upper_bound(gaps, future_seeds: int, false_fail_rate: float) -> float:
    """One-sided upper prediction bound for the mean of ``future_seeds`` new paired gaps, from n measured
    ones of the same budget: mean + t_{1-rate, n-1} * sd * sqrt(1/n + 1/k).

    A candidate as good as the measured one exceeds it with probability ``false_fail_rate``: the sqrt term
    counts both the noise of the gate's own k-seed mean and the uncertainty of the measured mean."""
    gaps = np.asarray(gaps, dtype=float)
    n = gaps.size
    if n < 2:
        raise ValueError("a tolerance needs at least 2 measured seed pairs")
    if future_seeds < 1 or not 0 < false_fail_rate < 0.5:
        raise ValueError("future_seeds must be >= 1 and false_fail_rate in (0, 0.5)")
    sd = float(gaps.std(ddof=1))
    return float(gaps.mean()) + float(sps.t.ppf(1 - false_fail_rate, n - 1)) * sd * math.sqrt(1 / n + 1 / future_seeds)
