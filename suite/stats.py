"""Paired-seed statistics for "does the candidate match the reference?" (formulas in docs/statistics.md).

Seed k of every method starts from the same weights, data order and augmentation, so the unit of
evidence is a seed pair: its gap (reference minus candidate accuracy, points) and, on its paired test
predictions, McNemar's exact test. Over seeds: the mean gap; its primary 95% interval, a two-way bootstrap
over seeds and test images (both noise sources) when the predictions are there, else a t interval over
the seed gaps; a TOST equivalence test (t, over the seed gaps) against +-margin; a verdict; descriptive
sign and Wilcoxon tests; and the power of the seed count. Torch-free (numpy + scipy), so the report side
can import it.

The default margin (0.5 points, compare.DEFAULT_MARGIN) is about one fp32 run-to-run sd at the 1-epoch
short-recipe budget (0.53-0.60 measured): a gap smaller than the noise between two fp32 runs of the same
recipe is called a match.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special
from scipy import stats as sps

ALPHA = 0.05
CONFIDENCE = 0.95

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261206  # fixed: the same predictions always give the same interval
BOOTSTRAP_METHOD = "two-way bootstrap (seeds x test images), 10,000 resamples"
WIDENED_NOTE = "; widened to ci95_t, which is wider (few seeds: a percentile bootstrap over n seeds is too narrow)"
T_METHOD = "t interval over seed gaps (no predictions)"

# Planning sd of the seed gaps when fewer than MIN_PAIRS_FOR_SD pairs are measured: the sd of 17 fp32 - tathe4
# seed-pair gaps at the 1-epoch short-recipe budget on CIFAR-10 (docs/training.md). Other budgets differ.
PILOT_SD = 0.47
PILOT_SD_SOURCE = "assumed pilot sd: 17 seed pairs, 1-epoch short recipe, CIFAR-10"
MIN_PAIRS_FOR_SD = 3
POWER_TARGET = 0.8
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(200)  # tost_power's quadrature on [-1, 1]
MAX_SEEDS = 1000  # compare's --seeds limit: "n for 80% power" beyond it is null ("more than 1000")

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
    """Two one-sided t-tests over the seed gaps of H0: mean <= -margin or mean >= +margin; p = max of the two.

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


# ---------------------------------------------------------------------------------------------
# Descriptive tests over the seed gaps (reported, never part of the verdict)


def _clean_gaps(gaps) -> np.ndarray:
    # Gaps are differences of k/N * 100 accuracies: float noise (1e-14) must not turn a tie into a sign.
    return np.round(np.asarray(gaps, dtype=float), 9)


def sign_test_p(gaps) -> float:
    """Exact two-sided binomial sign test of "positive and negative gaps equally likely", ties (gap 0)
    dropped; 1.0 when every gap is 0 (no evidence either way, as for McNemar)."""
    gaps = _clean_gaps(gaps)
    positive, nonzero = int(np.sum(gaps > 0)), int(np.sum(gaps != 0))
    return 1.0 if nonzero == 0 else float(sps.binomtest(positive, nonzero, 0.5, alternative="two-sided").pvalue)


def wilcoxon_p(gaps) -> float | None:
    """Two-sided Wilcoxon signed-rank p over the seed gaps, zeros dropped; None for fewer than 2 gaps or when
    all are 0. scipy picks the method: exact without ties or zeros (n <= 50), an exhaustive (deterministic)
    sign-flip permutation test with them up to 13 gaps, the normal approximation beyond."""
    gaps = _clean_gaps(gaps)
    if gaps.size < 2 or not np.any(gaps):
        return None
    return float(sps.wilcoxon(gaps, alternative="two-sided").pvalue)


# ---------------------------------------------------------------------------------------------
# The two-way bootstrap: seeds x test images


def two_way_bootstrap(image_gaps, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap draws of the mean gap (points) with both noise sources resampled.

    ``image_gaps`` is K x N (K seed pairs, N test images): +1 where only the reference is right on image i
    in pair k, -1 where only the candidate is, else 0. One resample draws K seeds with replacement (counts
    w ~ Multinomial(K, 1/K)) and N test images with replacement, the same images for every seed (they share
    one test set), and gives 100 / (K N) * sum_k w_k sum_i c_i g_ki (c: the image counts).

    Computed exactly without the K x N draw: given w, image i adds v_i = sum_k w_k g_ki, an integer in
    [-K, K]; the number of drawn images with each value v is Multinomial(N, S_v / N), S_v = #{i: v_i = v}.
    S_v is counted over the distinct columns of g (most images are concordant in every pair, so few), one
    bincount per multiplicity class. Measured (CPU seconds, one thread, 2 loaded cores): 7 real CIFAR-10 pairs
    (582 distinct columns) 0.06 s; 20 pairs x 10,000 images 0.12-0.23 s with real-like columns (582-2,001
    distinct), 0.40-0.55 s when nearly every column differs (independent random predictions, the worst case).
    Synthetic data has a test set per seed; the shared image draw is then approximately the independent one
    (columns of unrelated images have no covariance to reproduce)."""
    g = np.asarray(image_gaps, dtype=np.int8)
    k, n_images = g.shape
    patterns, multiplicity = np.unique(g.T, axis=0, return_counts=True)
    informative = patterns.any(axis=1)  # an image concordant in every pair adds 0 to every resample
    patterns, multiplicity = patterns[informative], multiplicity[informative]
    if patterns.shape[0] == 0:
        return np.zeros(resamples)
    order = np.argsort(multiplicity, kind="stable")
    patterns, multiplicity = patterns[order].astype(np.float32), multiplicity[order]
    classes = np.split(np.arange(multiplicity.size), np.flatnonzero(np.diff(multiplicity)) + 1)
    rng = np.random.default_rng(seed)
    chunk = int(min(1000, max(64, 4_000_000 // patterns.shape[0])))  # bounds the U x chunk work array
    values = np.arange(-k, k + 1, dtype=np.float64)
    draws = np.empty(resamples)
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        seed_counts = rng.multinomial(k, np.full(k, 1 / k), size=r).astype(np.float32)
        sizes = _value_class_sizes(patterns, multiplicity, classes, seed_counts, n_images)
        image_counts = rng.multinomial(n_images, sizes / n_images)
        draws[start:start + r] = image_counts @ values
    return draws * (100.0 / (k * n_images))


def _value_class_sizes(patterns, multiplicity, classes, seed_counts, n_images: int) -> np.ndarray:
    """S_v for each resample (rows) and value v = -K..K (columns): how many test images add v."""
    r, k = seed_counts.shape
    width = 2 * k + 1
    # Exact in float32: |v| <= K <= 1000. Shifted by K and by a row offset so one bincount fills every row.
    keys = (patterns @ seed_counts.T).astype(np.int32)
    keys += (np.arange(r, dtype=np.int32) * width + k)[None, :]
    sizes = np.zeros(r * width)
    for rows in classes:  # patterns of one multiplicity: a plain (unweighted, fast) bincount, times it
        sizes += multiplicity[rows[0]] * np.bincount(keys[rows[0]:rows[-1] + 1].ravel(), minlength=r * width)
    sizes = sizes.reshape(r, width)
    sizes[:, k] += n_images - sizes.sum(axis=1)  # the images left out above all add 0
    return sizes


def percentile_interval(draws, confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [0.5 - confidence / 2, 0.5 + confidence / 2])
    return (float(lo), float(hi))


def _hull(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (min(a[0], b[0]), max(a[1], b[1]))


@dataclass(frozen=True)
class Intervals:
    ci95: tuple[float, float]  # the primary interval: verdicts worse/better
    ci90: tuple[float, float]  # the equivalence reading: inside +-margin?
    ci95_t: tuple[float, float]  # descriptive: t over the seed gaps only
    ci95_bootstrap: tuple[float, float] | None  # the raw two-way percentile interval
    method: str


def intervals(gaps, image_gaps=None) -> Intervals:
    """The primary 95% and 90% intervals of the mean gap (n >= 2 gaps).

    With per-image gaps: the two-way bootstrap percentile interval, widened to the t interval of the same
    level where that one is wider. Why: the percentile bootstrap over n seeds uses z quantiles and the
    (n-1)/n plug-in variance, so with 2-5 seeds it is far too narrow (at n = 3 under a true gap of 0 it
    excludes 0 whenever all three gaps share a sign: 25% of the time); the t interval has the right width
    for seed noise but ignores test-image noise, which the bootstrap adds. The hull covers both.
    Without per-image gaps: the t intervals.

    Conservative: a seed pair's gap already carries its own test-image noise (the seed x image interaction),
    and resampling seeds and images both counts that term again (no exact bootstrap exists for crossed
    designs: McCullagh 2000; Owen 2007, "The pigeonhole bootstrap", puts it at about three times). On the 7
    committed CIFAR-10 pairs (gate-spread-cpu) the bootstrap sd is 1.5x a two-way ANOVA moment estimate,
    and the test-image share common to all seeds is about 1% of the variance of the mean gap."""
    t95, t90 = t_interval(gaps, 0.95), t_interval(gaps, 0.90)
    if image_gaps is None:
        return Intervals(t95, t90, t95, None, T_METHOD)
    draws = two_way_bootstrap(image_gaps)
    b95, b90 = percentile_interval(draws, 0.95), percentile_interval(draws, 0.90)
    ci95 = _hull(b95, t95)
    return Intervals(ci95, _hull(b90, t90), t95, b95, BOOTSTRAP_METHOD + ("" if ci95 == b95 else WIDENED_NOTE))


# ---------------------------------------------------------------------------------------------
# Power of n seed pairs


def tost_power(n: int, true_gap: float, sd: float, margin: float, alpha: float = ALPHA) -> float:
    """P(TOST at level alpha shows equivalence within +-margin) for n paired seeds whose gaps are
    N(true_gap, sd^2); exact up to quadrature (< 1e-6), 0 for n < 2.

    TOST rejects both H0 iff -m + t_c S/sqrt(n) < mean < m - t_c S/sqrt(n), t_c = t_{1-alpha, n-1}. The mean
    ~ N(d, se^2), se = s/sqrt(n), is independent of S = s sqrt(V/nu), V ~ chi2(nu), nu = n - 1, so
        power = E_V[ max(0, Phi((m - d)/se - t_c sqrt(V/nu)) - Phi((-m - d)/se + t_c sqrt(V/nu))) ]
    (Owen's Q form, what PASS and TOSTER call exact). Integrated over u = F_chi2(V) in
    (0, F_chi2(nu (m / (t_c se))^2)), beyond which the interval is empty, by 200-node Gauss-Legendre
    (agrees with adaptive quadrature to 1e-6 and with 40,000-draw simulations, tests/test_stats.py)."""
    if n < 2:
        return 0.0
    nu, se = n - 1, sd / math.sqrt(n)
    t_c = float(special.stdtrit(nu, 1 - alpha))
    u_max = float(special.chdtr(nu, nu * (margin / (t_c * se)) ** 2))
    u = (_GL_NODES + 1) * (u_max / 2)
    half = t_c * np.sqrt(special.chdtri(nu, 1 - u) / nu)  # t_c S / se at each chi-square quantile
    accepted = special.ndtr((margin - true_gap) / se - half) - special.ndtr((-margin - true_gap) / se + half)
    return min(1.0, max(0.0, float(np.maximum(accepted, 0.0) @ _GL_WEIGHTS) * u_max / 2))


def detect_power(n: int, true_gap: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level alpha to find a true gap: with delta = gap sqrt(n)/sd,
    P(T > t_{1-alpha/2, n-1}) + P(T < -t_{1-alpha/2, n-1}), T ~ noncentral t(n - 1, delta); 0 for n < 2."""
    if n < 2:
        return 0.0
    nu, delta = n - 1, true_gap * math.sqrt(n) / sd
    t_c = float(sps.t.ppf(1 - alpha / 2, nu))
    return float(sps.nct.sf(t_c, nu, delta) + sps.nct.cdf(-t_c, nu, delta))


def seeds_for_tost_power(true_gap: float, sd: float, margin: float, target: float = POWER_TARGET,
                         cap: int = MAX_SEEDS) -> int | None:
    """The smallest n (2..cap) whose TOST power at this true gap reaches target; None beyond cap.
    Bisection: for |true_gap| < margin the power grows with n."""
    if tost_power(cap, true_gap, sd, margin) < target:
        return None
    lo, hi = 1, cap  # power(lo) < target <= power(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tost_power(mid, true_gap, sd, margin) >= target else (mid, hi)
    return hi


@dataclass(frozen=True)
class Power:
    sd_used: float
    sd_source: str
    n: int
    tost_power_at_0: float
    detect_power_at_margin: float
    n_for_80pct_tost_at_0: int | None
    n_for_80pct_tost_at_half_margin: int | None


def plan_power(n: int, sd: float, margin: float, sd_source: str = PILOT_SD_SOURCE) -> Power:
    """What n seed pairs can show if the seed gaps have this sd: TOST power at a true gap of 0, power to
    detect a gap of one margin, and the n giving 80% TOST power at a true gap of 0 and of margin/2."""
    if sd <= 0 or margin <= 0:
        raise ValueError(f"power needs a positive sd and margin, got sd {sd}, margin {margin}")
    return Power(sd, sd_source, n, tost_power(n, 0.0, sd, margin), detect_power(n, margin, sd),
                 seeds_for_tost_power(0.0, sd, margin), seeds_for_tost_power(margin / 2, sd, margin))


def comparison_power(gaps, margin: float) -> Power:
    """plan_power at the measured n with the measured sd once there are MIN_PAIRS_FOR_SD pairs (an sd from
    2 gaps is too rough to plan with), else with the pilot sd."""
    gaps = np.asarray(gaps, dtype=float)
    sd = float(gaps.std(ddof=1)) if gaps.size >= MIN_PAIRS_FOR_SD else 0.0
    if sd > 0:
        return plan_power(gaps.size, sd, margin, f"measured: sd of the {gaps.size} seed gaps")
    source = PILOT_SD_SOURCE + (" (the measured sd is 0)" if gaps.size >= MIN_PAIRS_FOR_SD else "")
    return plan_power(gaps.size, PILOT_SD, margin, source)


def power_text(power: Power, margin: float) -> str:
    def seeds(n):
        return f"{n}" if n is not None else f"more than {MAX_SEEDS}"

    give = "seeds give" if power.n != 1 else "seed gives"
    return (f"with seed-gap sd {power.sd_used:.2f} ({power.sd_source}) {power.n} {give} "
            f"{power.tost_power_at_0:.0%} power to show equivalence within +-{margin:g} if the true gap is 0 and "
            f"{power.detect_power_at_margin:.0%} to detect a {margin:g}-point gap; 80% TOST power needs "
            f"{seeds(power.n_for_80pct_tost_at_0)} seeds at a true gap of 0, "
            f"{seeds(power.n_for_80pct_tost_at_half_margin)} at {margin / 2:g}")


# ---------------------------------------------------------------------------------------------
# Pairs, comparisons, verdicts


@dataclass(frozen=True)
class Pair:
    seed: int
    reference_acc: float
    candidate_acc: float
    gap: float
    mcnemar_p: float | None
    discordant: tuple[int, int] | None
    # int8 per test image: +1 only the reference right, -1 only the candidate; None without predictions.
    image_gaps: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        return {"seed": self.seed, "reference_acc": self.reference_acc, "candidate_acc": self.candidate_acc,
                "gap": self.gap, "mcnemar_p": self.mcnemar_p,
                "discordant": list(self.discordant) if self.discordant is not None else None}


def make_pair(seed: int, reference_acc: float, candidate_acc: float, labels=None, reference_pred=None,
              candidate_pred=None) -> Pair:
    """One seed pair; McNemar and the per-image gaps only when the predictions (and labels) are given, and
    then the accuracies must be the predictions' own."""
    gap = reference_acc - candidate_acc
    if labels is None or reference_pred is None or candidate_pred is None:
        return Pair(seed, reference_acc, candidate_acc, gap, None, None)
    m = mcnemar_exact(labels, reference_pred, candidate_pred)
    labels = np.asarray(labels).ravel()
    ref_ok = np.asarray(reference_pred).ravel() == labels
    cand_ok = np.asarray(candidate_pred).ravel() == labels
    image_gaps = ref_ok.astype(np.int8) - cand_ok.astype(np.int8)
    if abs(100.0 * float(image_gaps.mean()) - gap) > 1e-6:
        raise ValueError(f"seed {seed}: the predictions give a gap of {100.0 * image_gaps.mean():.4f} points, "
                         f"the accuracies {gap:.4f}")
    return Pair(seed, reference_acc, candidate_acc, gap, m.p, (m.b, m.c), image_gaps)


@dataclass(frozen=True)
class Comparison:
    candidate: str
    n_seeds: int
    pairs: tuple[Pair, ...]
    mean_gap: float
    sd_gap: float | None
    ci95: tuple[float, float] | None
    ci95_method: str | None
    ci95_t: tuple[float, float] | None
    ci95_bootstrap: tuple[float, float] | None
    ci90: tuple[float, float] | None
    tost_p: float | None
    sign_test_p: float
    wilcoxon_p: float | None
    verdict: str
    power: Power
    reason: str

    def to_json(self) -> dict:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["pairs"] = [p.to_json() for p in self.pairs]
        for key in ("ci95", "ci95_t", "ci95_bootstrap", "ci90"):
            out[key] = list(out[key]) if out[key] is not None else None
        out["power"] = asdict(self.power)
        return out


def _image_gap_matrix(pairs) -> np.ndarray | None:
    """K x N per-image gaps when every pair has them on equally many test images, else None."""
    rows = [p.image_gaps for p in pairs]
    if any(r is None for r in rows) or len({r.size for r in rows}) != 1:
        return None
    return np.stack(rows)


def _ci_text(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _verdict(ivs: Intervals, gaps: np.ndarray, p: float, margin: float, power: Power) -> tuple[str, str]:
    """Equivalent when TOST p < alpha (checked first: a small but significant gap inside the margin is still
    equivalent); worse when the primary 95% CI lies above 0, better when below; otherwise inconclusive."""
    not_shown = f"equivalence within +-{margin:g} not shown (TOST p = {p:.3g})"
    kind = "seeds x test images" if ivs.ci95_bootstrap is not None else "t over seed gaps"
    if p < ALPHA:
        reason = (f"TOST over the seed gaps p = {p:.3g} < {ALPHA}: the 90% t interval "
                  f"{_ci_text(t_interval(gaps, 0.90))} lies inside +-{margin:g} points (the equivalence margin)")
        if ivs.ci95_bootstrap is not None:
            inside = -margin < ivs.ci90[0] and ivs.ci90[1] < margin
            reason += (f"; the 90% CI with test-image noise {_ci_text(ivs.ci90)} "
                       + ("lies inside it too" if inside else
                          f"reaches past +-{margin:g}: shown for this test set, not beyond it"))
        return "equivalent", reason
    ci = ivs.ci95
    if ci[0] > 0:
        return "worse", f"the 95% CI {_ci_text(ci)} ({kind}) lies above 0; {not_shown}"
    if ci[1] < 0:
        return "better", f"the 95% CI {_ci_text(ci)} ({kind}) lies below 0; {not_shown}"
    return "inconclusive", f"the 95% CI {_ci_text(ci)} ({kind}) contains 0 and {not_shown}; {power_text(power, margin)}"


def _extension_text(extended_from: int | None, n: int) -> str:
    if extended_from is None or extended_from >= n:
        return ""
    return (f"; the seeds were raised from {extended_from} to {n} after a result existed: with a look before "
            f"extending, the nominal 5% error rates no longer hold exactly (optional stopping)")


def compare(candidate: str, pairs, margin: float, extended_after_look_from: int | None = None) -> Comparison:
    """Mean gap, the primary 95% CI (see intervals), TOST, the verdict, descriptive tests and power over the
    seed pairs of one candidate. ``extended_after_look_from``: the seed count of an earlier result in the
    same study, when the seeds were raised after it (the reason then says the error rates are nominal)."""
    pairs = tuple(sorted(pairs, key=lambda p: p.seed))
    if not pairs:
        raise ValueError(f"{candidate}: no seed pairs to compare")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    gaps = np.array([p.gap for p in pairs], dtype=float)
    n, mean = gaps.size, float(gaps.mean())
    power, signs = comparison_power(gaps, margin), sign_test_p(gaps)
    extension = _extension_text(extended_after_look_from, n)
    if n == 1:
        reason = (f"one seed pair gives no spread, so no confidence interval and equivalence within +-{margin:g} "
                  f"not shown: run at least 2 seeds; {power_text(power, margin)}")
        return Comparison(candidate, 1, pairs, mean, None, None, None, None, None, None, None, signs, None,
                          "inconclusive", power, reason + extension)
    ivs, p = intervals(gaps, _image_gap_matrix(pairs)), tost_p(gaps, margin)
    verdict, reason = _verdict(ivs, gaps, p, margin, power)
    return Comparison(candidate, n, pairs, mean, float(gaps.std(ddof=1)), ivs.ci95, ivs.method, ivs.ci95_t,
                      ivs.ci95_bootstrap, ivs.ci90, p, signs, wilcoxon_p(gaps), verdict, power, reason + extension)


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
