"""suite.stats against cases computed by hand (each case's arithmetic is in its comment).

Hand tools: the t distribution with 2 degrees of freedom has the closed form
F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so its quantile is t_q = sqrt(2 u^2 / (1 - u^2)) with u = 2q - 1:
t_{0.975,2} = sqrt(2 * 0.9025 / 0.0975) = 4.30265, t_{0.95,2} = sqrt(2 * 0.81 / 0.19) = 2.91999.
Other quantiles from printed t tables: t_{0.975,3} = 3.182, t_{0.95,11} = 1.796, t_{0.95,12} = 1.782."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from suite import compare as comparemod
from suite import stats
from suite.compare import CompareRequest
from suite.spec import PAPER_ARCH


# ---------------------------------------------------------------------------------------------
# McNemar


def test_mcnemar_one_sided_discordance():
    # 8 images, all label 0; the reference is right on all, the candidate wrong on the last 3: b = 3, c = 0.
    # Two-sided exact: 2 * P(X >= 3 | n=3, 1/2) = 2 * 1/8 = 0.25.
    m = stats.mcnemar_exact([0] * 8, [0] * 8, [0] * 5 + [1] * 3)
    assert (m.b, m.c) == (3, 0) and m.p == pytest.approx(0.25)


def test_mcnemar_both_directions():
    # 7 images; images 0-4: only the reference right (b = 5); image 5: only the candidate right (c = 1);
    # image 6: both right (concordant, ignored). n = 6: P(X <= 1) = (1 + 6) / 64, two-sided 14/64 = 0.21875.
    labels = [0, 0, 0, 0, 0, 1, 1]
    ref = [0, 0, 0, 0, 0, 0, 1]
    cand = [1, 1, 1, 1, 1, 1, 1]
    m = stats.mcnemar_exact(labels, ref, cand)
    assert (m.b, m.c) == (5, 1) and m.p == pytest.approx(14 / 64)


def test_mcnemar_balanced_and_identical():
    # b = c = 2: P(X <= 2 | n=4) = 11/16, doubled exceeds 1 -> p = 1.
    m = stats.mcnemar_exact([0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0])
    assert (m.b, m.c, m.p) == (2, 2, 1.0)
    # Identical predictions: no discordant image, no evidence of a difference: p = 1 (binomtest refuses n=0).
    preds = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    m = stats.mcnemar_exact(np.array([3, 1, 4, 0, 0]), preds, preds.copy())
    assert (m.b, m.c, m.p) == (0, 0, 1.0)


def test_mcnemar_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="equally long"):
        stats.mcnemar_exact([0, 1], [0, 1, 2], [0, 1])


# ---------------------------------------------------------------------------------------------
# t interval and TOST


def test_t_interval_by_hand():
    # gaps 1, 2, 3: mean 2, sd 1, se 1/sqrt(3) = 0.57735; half-width 4.30265 * 0.57735 = 2.48414.
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert lo == pytest.approx(2 - 2.48414, abs=1e-4) and hi == pytest.approx(2 + 2.48414, abs=1e-4)
    assert stats.t_interval([1.0]) is None


def test_tost_by_hand():
    # gaps 0.1, 0.2, 0.3, margin 0.5: mean 0.2, se 0.1/sqrt(3) = 0.057735.
    # upper test: t = (0.2 - 0.5)/0.057735 = -5.19615, F(t) = 0.5 - 5.19615/(2 sqrt(29)) = 0.017549
    # lower test: t = (0.2 + 0.5)/0.057735 = 12.1244, 1 - F(t) = 0.5 - 12.1244/(2 sqrt(149)) = 0.003366
    # p = max = 0.017549.
    assert stats.tost_p([0.1, 0.2, 0.3], 0.5) == pytest.approx(0.017549, abs=1e-5)
    # gaps -1, 0, 1: mean 0, se 0.57735; t = 0.5/0.57735 = 0.86603, both tails 0.5 - 0.86603/(2 sqrt(2.75))
    # = 0.5 - 0.26112 = 0.23888.
    assert stats.tost_p([-1.0, 0.0, 1.0], 0.5) == pytest.approx(0.23888, abs=1e-5)


def test_tost_zero_spread_is_the_limit():
    assert stats.tost_p([0.3, 0.3], 0.5) == 0.0  # inside the margin: both t statistics -> +infinity
    assert stats.tost_p([1.0, 1.0], 0.5) == 1.0  # outside: one of them -> -infinity
    assert stats.tost_p([0.5, 0.5], 0.5) == 0.5  # on the margin: t = 0/0, its limit from above is 0
    assert stats.tost_p([0.3], 0.5) is None


# ---------------------------------------------------------------------------------------------
# Verdicts


def _pairs(gaps):
    return [stats.make_pair(seed, 50.0, 50.0 - gap) for seed, gap in enumerate(gaps)]


def test_equivalent():
    # TOST p 0.0175 (above) < 0.05; the 95% CI 0.2 +- 2.48414 * 0.1 = [-0.0484, 0.4484].
    c = stats.compare("tathe4", _pairs([0.1, 0.2, 0.3]), margin=0.5)
    assert c.verdict == "equivalent" and c.ci95_method == stats.T_METHOD and c.ci95_bootstrap is None
    assert c.mean_gap == pytest.approx(0.2) and c.sd_gap == pytest.approx(0.1)
    assert c.ci95[0] == pytest.approx(-0.04841, abs=1e-4) and c.ci95[1] == pytest.approx(0.44841, abs=1e-4)
    assert c.ci95_t == c.ci95
    # Without predictions ci90 is the 90% t interval: 0.2 +- t_{0.95,2} 0.057735 = 0.2 +- 0.16859.
    assert c.ci90 == pytest.approx((0.2 - 0.16859, 0.2 + 0.16859), abs=1e-4)


def test_worse_better_and_a_significant_gap_inside_the_margin():
    # gaps 2, 2.1, 1.9: CI 2 +- 0.24841 = [1.7516, 2.2484], above 0; TOST p ~ 1: worse.
    assert stats.compare("m", _pairs([2.0, 2.1, 1.9]), 0.5).verdict == "worse"
    assert stats.compare("m", _pairs([-2.0, -2.1, -1.9]), 0.5).verdict == "better"
    # gaps 0.2, 0.21, 0.19: the CI [0.175, 0.225] excludes 0 but lies inside +-0.5: equivalence wins.
    assert stats.compare("m", _pairs([0.2, 0.21, 0.19]), 0.5).verdict == "equivalent"


def test_inconclusive_reports_power_instead_of_seeds_needed():
    # gaps 1, 2, 3 (mean 2, sd 1): CI [-0.484, 4.484] contains 0, TOST p ~ 0.94.
    c = stats.compare("m", _pairs([1.0, 2.0, 3.0]), 0.5)
    assert c.verdict == "inconclusive" and not hasattr(c, "seeds_needed")
    assert c.power.sd_used == pytest.approx(1.0) and c.power.sd_source == "measured: sd of the 3 seed gaps"
    # Planning at gap 0 by the normal approximation: n ~ (z_0.95 + z_0.90)^2 (s/m)^2 = 2.926^2 * 4 = 34.2;
    # the t quantiles add a seed or two.
    assert 34 <= c.power.n_for_80pct_tost_at_0 <= 37
    assert f"80% TOST power needs {c.power.n_for_80pct_tost_at_0} seeds at a true gap of 0" in c.reason
    # sd 5 at margin 0.5: about 8.6 * 100 = 856 seeds at gap 0; at gap 0.25 about (1.645 + 0.84)^2 * 400 = 2470,
    # beyond the 1000 seeds compare allows: null and "more than 1000".
    c = stats.compare("m", _pairs([0.1 - 5.0, 0.1, 0.1 + 5.0]), 0.5)
    assert c.verdict == "inconclusive" and 850 <= c.power.n_for_80pct_tost_at_0 <= 870
    assert c.power.n_for_80pct_tost_at_half_margin is None and "more than 1000 at 0.25" in c.reason


def test_reasons_say_equivalence_not_shown_never_not_equivalent():
    cases = {"worse": [2.0, 2.1, 1.9], "better": [-2.0, -2.1, -1.9], "inconclusive": [1.0, 2.0, 3.0], "one": [0.0]}
    for verdict, gaps in cases.items():
        c = stats.compare("m", _pairs(gaps), 0.5)
        assert c.verdict == ("inconclusive" if verdict == "one" else verdict)
        assert "equivalence within +-0.5 not shown" in c.reason and "not equivalent" not in c.reason, c.reason
    c = stats.compare("m", _pairs([0.1, 0.2, 0.3]), 0.5)
    assert c.verdict == "equivalent" and "not shown" not in c.reason and "+-0.5 points" in c.reason


def test_zero_spread():
    # Two identical gaps: sd 0, the CI is the point itself.
    c = stats.compare("m", _pairs([0.3, 0.3]), 0.5)
    assert c.sd_gap == 0.0 and c.ci95 == pytest.approx((0.3, 0.3)) and c.verdict == "equivalent"
    c = stats.compare("m", _pairs([1.0, 1.0]), 0.5)
    assert c.ci95 == pytest.approx((1.0, 1.0)) and c.tost_p == 1.0 and c.verdict == "worse"


def test_one_seed_is_inconclusive_with_the_reason():
    c = stats.compare("m", _pairs([0.0]), 0.5)
    assert (c.n_seeds, c.sd_gap, c.tost_p, c.wilcoxon_p) == (1, None, None, None)
    assert c.ci95 is c.ci95_t is c.ci90 is c.ci95_method is None
    assert c.verdict == "inconclusive" and "one seed pair" in c.reason
    # Power with one seed: no test is possible (0), and the pilot sd stands in for the unmeasurable one.
    assert c.power.tost_power_at_0 == 0.0 and c.power.sd_used == stats.PILOT_SD
    assert c.power.sd_source == stats.PILOT_SD_SOURCE


def test_pair_with_predictions_and_json_shape():
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    pair = stats.make_pair(7, 100.0, 75.0, labels, labels, np.array([0, 1, 2, 0], dtype=np.uint8))
    assert pair.gap == 25.0 and pair.discordant == (1, 0) and pair.mcnemar_p == 1.0  # 2 * (1/2)^1 capped at 1
    assert pair.image_gaps.tolist() == [0, 0, 0, 1]
    doc = stats.compare("m", [pair, stats.make_pair(8, 50.0, 50.0)], 0.5).to_json()
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN
    assert doc["pairs"][0]["discordant"] == [1, 0] and doc["pairs"][1]["discordant"] is None
    assert set(doc["pairs"][0]) == {"seed", "reference_acc", "candidate_acc", "gap", "mcnemar_p", "discordant"}
    for key in ("ci95", "ci95_t", "ci90"):
        assert isinstance(doc[key], list) and len(doc[key]) == 2
    # One pair without predictions: no bootstrap, the t interval, and the method says why.
    assert doc["ci95_method"] == "t interval over seed gaps (no predictions)" and doc["ci95_bootstrap"] is None
    assert set(doc["power"]) == {"sd_used", "sd_source", "n", "tost_power_at_0", "detect_power_at_margin",
                                 "n_for_80pct_tost_at_0", "n_for_80pct_tost_at_half_margin"}


def test_a_pair_whose_predictions_disagree_with_its_accuracies_is_refused():
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    with pytest.raises(ValueError, match="the predictions give a gap of 25.0000 points, the accuracies 0.0000"):
        stats.make_pair(7, 75.0, 75.0, labels, labels, np.array([0, 1, 2, 0], dtype=np.uint8))


def test_bad_input():
    with pytest.raises(ValueError, match="no seed pairs"):
        stats.compare("m", [], 0.5)
    with pytest.raises(ValueError, match="margin must be positive"):
        stats.compare("m", _pairs([1.0, 2.0]), 0.0)


# ---------------------------------------------------------------------------------------------
# Descriptive tests


def test_sign_test_and_wilcoxon_by_hand():
    # gaps 1, 2, 3, -0.5, 0: the tie (0) is dropped; 3 of 4 positive: 2 P(X >= 3 | 4, 1/2) = 2 * 5/16 = 0.625.
    gaps = [1.0, 2.0, 3.0, -0.5, 0.0]
    assert stats.sign_test_p(gaps) == pytest.approx(0.625)
    # Wilcoxon: |d| ranks 0.5 -> 1, 1 -> 2, 2 -> 3, 3 -> 4; W- = 1. Of the 16 sign patterns 2 have W- <= 1
    # ({} and {1}): two-sided 2 * 2/16 = 0.25.
    assert stats.wilcoxon_p(gaps) == pytest.approx(0.25)
    # A difference of two equal accuracies computed in floats is a tie, not a sign.
    assert stats.sign_test_p([(0.1 + 0.2) - 0.3, 1.0]) == 1.0  # 1 of 1 nonzero: p = 1
    assert stats.sign_test_p([0.0, 0.0]) == 1.0
    assert stats.wilcoxon_p([0.0, 0.0]) is None and stats.wilcoxon_p([1.0]) is None
    c = stats.compare("m", _pairs([0.1, 0.2, 0.3]), 0.5)
    assert c.sign_test_p == pytest.approx(0.25) and c.wilcoxon_p == pytest.approx(0.25)  # 3 of 3: 2/8


# ---------------------------------------------------------------------------------------------
# The two-way bootstrap


def _image_gaps(b: int, c: int, n_images: int) -> np.ndarray:
    """Per-image gaps of one pair: b images only the reference gets right, c only the candidate."""
    row = np.zeros(n_images, dtype=np.int8)
    row[:b], row[b:b + c] = 1, -1
    return row


def test_bootstrap_of_pure_image_noise_matches_the_mcnemar_standard_error():
    # 20 seeds with identical predictions (no seed noise): b = 300, c = 100 of N = 10,000 images. The
    # resampled gap is 100 (B - C)/N with (B, C) multinomial: sd = 100/N sqrt(b + c - (b - c)^2/N)
    # = 0.01 sqrt(396) = 0.19900, the McNemar scale sqrt(b + c)/N * 100 = 0.2 up to the (b - c)^2/N term.
    # 95% width: 2 * 1.95996 * 0.19900 = 0.78005. Tolerance 3%: the Monte Carlo error of a 2.5/97.5%
    # percentile from 10,000 draws is sqrt(0.025 * 0.975 / 10^4) / phi(1.96) = 0.027 sd, ~1% of the width,
    # the gap moves in steps of 0.01 (1.3% of the width), and 400 discordant images are close to normal.
    g = np.tile(_image_gaps(300, 100, 10_000), (20, 1))
    draws = stats.two_way_bootstrap(g)
    assert draws.mean() == pytest.approx(2.0, abs=0.01)
    assert draws.std() == pytest.approx(0.19900, rel=0.03)
    lo, hi = stats.percentile_interval(draws, 0.95)
    assert hi - lo == pytest.approx(2 * 1.95996 * 100 * math.sqrt(400) / 10_000, rel=0.03)
    # compare(): the t interval of 20 equal gaps has width 0, so the primary interval is the bootstrap one.
    pairs = [stats.Pair(k, 80.0, 78.0, 2.0, None, None, g[k]) for k in range(20)]
    c = stats.compare("m", pairs, 0.5)
    assert c.ci95 == c.ci95_bootstrap == pytest.approx((lo, hi)) and c.ci95_method == stats.BOOTSTRAP_METHOD
    assert c.ci95_t == pytest.approx((2.0, 2.0)) and c.verdict == "worse"


def _seed_shift_gaps(gaps_in_images, n_images: int) -> np.ndarray:
    # Pair k: the first a_k images only the reference gets right (a_k < 0: only the candidate).
    return np.stack([_image_gaps(a, 0, n_images) if a >= 0 else _image_gaps(0, -a, n_images) for a in gaps_in_images])


def test_bootstrap_of_seed_noise_is_close_to_the_t_interval():
    # 20 pairs whose gaps differ by seed-level shifts of sd ~100 images (1 point) on 10,000 images; the image
    # noise (about sqrt(200) images per pair, 0.14 points, shared images) is small beside it. A percentile
    # bootstrap of a mean of 20 has width 2 z sqrt((n-1)/n) s/sqrt(n), the t interval 2 t_{0.975,19} s/sqrt(n):
    # ratio 1.960 * 0.9747 / 2.093 = 0.913; the image noise widens it a little. Expect 0.85-1.05.
    shifts = np.round(np.random.default_rng(5).normal(200, 100, size=20)).astype(int)
    g = _seed_shift_gaps(shifts, 10_000)
    gaps = 100.0 * g.mean(axis=1)
    lo, hi = stats.percentile_interval(stats.two_way_bootstrap(g), 0.95)
    t_lo, t_hi = stats.t_interval(gaps)
    assert 0.85 < (hi - lo) / (t_hi - t_lo) < 1.05
    assert (lo + hi) / 2 == pytest.approx(gaps.mean(), abs=0.05 * (t_hi - t_lo))


def test_bootstrap_is_deterministic():
    g = _seed_shift_gaps([120, 80, -30, 260, 5], 2_000)
    g[:, 1500:1600] = np.random.default_rng(0).integers(-1, 2, size=(5, 100))
    first, again = stats.two_way_bootstrap(g), stats.two_way_bootstrap(g.copy())
    assert np.array_equal(first, again)
    gaps = 100.0 * g.mean(axis=1)
    pairs = [stats.Pair(k, 50.0, 50.0 - gap, gap, None, None, row) for k, (gap, row) in enumerate(zip(gaps, g))]
    assert stats.compare("m", pairs, 0.5).to_json() == stats.compare("m", pairs, 0.5).to_json()


def test_bootstrap_shortcut_matches_literal_resampling():
    # The shortcut (multinomial counts per value class) against the definition: draw seeds and images with
    # replacement and average g over them. 20,000 literal draws on 4 pairs x 30 images; the sds agree within
    # 4% (the sampling error of an sd from 10,000 and 20,000 draws is about 0.9% and 0.5%) and the quantiles
    # within 0.1 sd.
    rng = np.random.default_rng(11)
    g = rng.choice(np.array([-1, 0, 0, 0, 1, 1], dtype=np.int8), size=(4, 30))
    fast = stats.two_way_bootstrap(g)
    seeds = rng.integers(0, 4, size=(20_000, 4))
    images = rng.integers(0, 30, size=(20_000, 30))
    literal = 100.0 * g[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))
    assert fast.mean() == pytest.approx(literal.mean(), abs=0.05 * literal.std())
    assert fast.std() == pytest.approx(literal.std(), rel=0.04)
    for q in (0.025, 0.05, 0.5, 0.95, 0.975):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(literal, q), abs=0.1 * literal.std())


def test_few_seeds_keep_the_nominal_false_positive_rate():
    # Under a true gap of 0 with seed noise (sd 20 images = 1 point on 2,000 images; image noise about
    # sqrt(16) = 4 images a pair), 3 pairs: a raw percentile bootstrap excludes 0 whenever the three gaps
    # share a sign (1/4) unless the image noise bridges 0 (measured: 42 of 200); the primary interval,
    # widened to the t interval, stays near 5% (measured: 11 of 200). 200 studies: at 5% a rate above 0.10
    # has probability 0.001; at 21% one of 0.15 or less 0.02 (the draws are seeded: the result is fixed).
    rng = np.random.default_rng(3)
    raw = primary = 0
    for _ in range(200):
        g = _seed_shift_gaps(np.round(rng.normal(0, 20, size=3)).astype(int), 2_000)
        ivs = stats.intervals(100.0 * g.mean(axis=1), g)
        raw += ivs.ci95_bootstrap[0] > 0 or ivs.ci95_bootstrap[1] < 0
        primary += ivs.ci95[0] > 0 or ivs.ci95[1] < 0
    assert raw / 200 > 0.15 and primary / 200 < 0.10


def test_the_verdict_uses_the_interval_with_image_noise():
    # 10 seeds, identical predictions on 100 images, b = 3, c = 1: every gap is 2 points, so the seed-gap t
    # interval is [2, 2] (worse, from accuracies alone), but test-image noise alone has sd
    # sqrt(4 - 0.04)/100 * 100 = 1.99 points: the two-way interval contains 0.
    row = _image_gaps(3, 1, 100)
    with_predictions = [stats.Pair(k, 90.0, 88.0, 2.0, None, None, row) for k in range(10)]
    c = stats.compare("m", with_predictions, 0.5)
    assert c.ci95_t == pytest.approx((2.0, 2.0)) and c.ci95[0] < 0 < c.ci95[1] and c.verdict == "inconclusive"
    assert "(seeds x test images) contains 0" in c.reason
    assert stats.compare("m", _pairs([2.0] * 10), 0.5).verdict == "worse"


def test_bootstrap_time_for_20_seeds_by_10000_images():
    # Real-like columns: discordance concentrated on a fifth of the images. Measured about 0.13 s on 2 busy
    # cores; the bound only catches a fall back to per-resample Python loops (minutes).
    rng = np.random.default_rng(2)
    g = np.zeros((20, 10_000), dtype=np.int8)
    hard = rng.choice(10_000, size=2_000, replace=False)
    g[:, hard] = rng.choice(np.array([-1, 0, 0, 1], dtype=np.int8), size=(20, 2_000))
    started = time.perf_counter()
    stats.two_way_bootstrap(g)
    assert time.perf_counter() - started < 5.0


# ---------------------------------------------------------------------------------------------
# Power


def _simulated_tost_power(n, gap, sd, margin, draws=40_000, seed=1):
    gaps = np.random.default_rng(seed).normal(gap, sd, size=(draws, n))
    mean, se = gaps.mean(axis=1), gaps.std(axis=1, ddof=1) / math.sqrt(n)
    t_c = float(sps.t.ppf(0.95, n - 1))
    return float(np.mean((mean - t_c * se > -margin) & (mean + t_c * se < margin)))


@pytest.mark.parametrize("n, gap, sd", [(3, 0.0, 0.2), (5, 0.0, 0.47), (10, 0.25, 0.47), (20, 0.1, 0.6)])
def test_tost_power_against_simulation(n, gap, sd):
    # 40,000 simulated studies: Monte Carlo sd <= sqrt(0.25 / 40,000) = 0.0025; tolerance 0.01 (4 sd).
    assert stats.tost_power(n, gap, sd, 0.5) == pytest.approx(_simulated_tost_power(n, gap, sd, 0.5), abs=0.01)


def test_tost_power_by_hand():
    # n = 2: t_c = t_{0.95,1} = 6.3138, se = s/sqrt(2), S = s |Z| with Z ~ N(0, 1) (V ~ chi2(1)). With
    # s = 0.47, m = 0.5 the region needs 6.3138 * 0.47 |Z| / sqrt(2) < 0.5, |Z| < 0.2383, where the mean's
    # own window is narrow: the exact value 0.0961 agrees with simulation.
    assert stats.tost_power(2, 0.0, 0.47, 0.5) == pytest.approx(_simulated_tost_power(2, 0.0, 0.47, 0.5), abs=0.01)
    assert stats.tost_power(1, 0.0, 0.47, 0.5) == 0.0
    # Outside the margin TOST may only err: at a true gap of m its power is alpha at most.
    assert stats.tost_power(50, 0.5, 0.47, 0.5) <= 0.05 + 1e-6


def test_detect_power_by_hand():
    # The textbook one-sample t case: effect size 1 (gap = sd), n = 10, two-sided 5%: power 0.8031 (G*Power).
    assert stats.detect_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=1e-4)
    # At a true gap of 0 the power is the level.
    assert stats.detect_power(7, 0.0, 0.5) == pytest.approx(0.05, abs=1e-9)
    assert stats.detect_power(1, 1.0, 1.0) == 0.0


def test_seeds_for_80pct_power_is_the_smallest_such_n():
    for gap in (0.0, 0.25):
        n = stats.seeds_for_tost_power(gap, stats.PILOT_SD, 0.5)
        assert stats.tost_power(n, gap, stats.PILOT_SD, 0.5) >= 0.8 > stats.tost_power(n - 1, gap, stats.PILOT_SD, 0.5)
    power = stats.plan_power(3, stats.PILOT_SD, 0.5)
    # The pilot sd 0.47 at the 0.5 margin: 10 seeds for 80% at a true gap of 0, 24 at 0.25.
    assert (power.n_for_80pct_tost_at_0, power.n_for_80pct_tost_at_half_margin) == (10, 24)
    assert power.tost_power_at_0 == pytest.approx(0.1488, abs=1e-3) and power.sd_source == stats.PILOT_SD_SOURCE


def test_extension_after_a_look_is_in_the_reason():
    c = stats.compare("m", _pairs([1.0, 2.0, 3.0, 1.5]), 0.5, extended_after_look_from=2)
    assert "raised from 2 to 4 after a result existed" in c.reason and "optional stopping" in c.reason
    assert "optional stopping" not in stats.compare("m", _pairs([1.0, 2.0, 3.0, 1.5]), 0.5).reason


# ---------------------------------------------------------------------------------------------
# The parity tolerance


def test_prediction_upper_bound_by_hand():
    # gaps 1, 2, 3, gate of k = 2 seeds, false-fail rate 0.05:
    # 2 + t_{0.95,2} * 1 * sqrt(1/3 + 1/2) = 2 + 2.91999 * 0.912871 = 4.66557.
    assert stats.prediction_upper_bound([1.0, 2.0, 3.0], 2, 0.05) == pytest.approx(4.66557, abs=1e-4)
    # More gate seeds shrink only the 1/k part: k = 1000 -> 2 + 2.91999 * sqrt(1/3 + 0.001) = 3.6879.
    assert stats.prediction_upper_bound([1.0, 2.0, 3.0], 1000, 0.05) == pytest.approx(
        2 + 2.91999 * math.sqrt(1 / 3 + 0.001), abs=1e-4)
    with pytest.raises(ValueError):
        stats.prediction_upper_bound([1.0], 2, 0.05)


# ---------------------------------------------------------------------------------------------
# compare.json: the new fields, old files, the plan's power line, seeds raised after a result

REPO = Path(__file__).resolve().parent.parent


def test_committed_compare_results_still_validate():
    files = sorted((REPO / "reports" / "submitted").glob("**/compare.json"))
    assert files, "no committed compare.json to check"
    for path in files:
        comparemod.validate_result(json.loads(path.read_text()))


def _fake_run(out: Path, method: str, seed: int, preds: np.ndarray, labels: np.ndarray) -> None:
    """A finished run folder as `q4bench train` leaves it, without training."""
    run_dir = out / "runs" / f"{method}-seed{seed}"
    run_dir.mkdir(parents=True)
    acc = 100.0 * float(np.mean(preds == labels))
    history = {"method": method, "seed": seed, "arch": PAPER_ARCH, "recipe": "short", "planned_epochs": 1,
               "precision": "fp32", "final_test_acc": acc, "best_test_acc": acc,
               "epochs": [{"epoch": 1, "test_acc": acc, "test_acc_tta": None}],
               "train_images": 32, "test_images": int(labels.size), "batch_size": 32,
               "data_source": "hand-made predictions", "device_name": "test cpu"}
    (run_dir / "history.json").write_text(json.dumps(history))
    np.save(run_dir / "predictions.npy", preds.astype(np.uint8))


def _fake_pairs(out: Path, seeds, labels: np.ndarray) -> None:
    for seed in seeds:
        rng = np.random.default_rng(seed)
        ref, cand = labels.copy(), labels.copy()
        ref[rng.choice(labels.size, 60, replace=False)] += 1  # 60 and about 64 wrong of 256
        cand[rng.choice(labels.size, 60 + 2 * seed, replace=False)] += 1
        _fake_run(out, "fp32", seed, ref % 10, labels)
        _fake_run(out, "tathe4", seed, cand % 10, labels)


def _request(out: Path, seeds: int) -> CompareRequest:
    return CompareRequest(methods=("tathe4",), seeds=seeds, epochs=1, recipe="short", synthetic=True, subset=32,
                          threads=1, parallel=2, out=str(out))


def test_compare_json_with_power_and_seeds_raised_after_a_result(tmp_path, monkeypatch):
    labels = np.random.default_rng(0).integers(0, 10, size=256).astype(np.uint8)
    monkeypatch.setattr(comparemod, "_labels_loader", lambda req: (lambda seed: labels))
    out = tmp_path / "cmp"
    out.mkdir()
    comparemod.check_identity(out, _request(out, 3))
    _fake_pairs(out, range(3), labels)
    doc = comparemod.build_result(_request(out, 3), 1, out)
    comparemod.validate_result(doc)
    [c] = doc["comparisons"]
    assert doc["seeds_extended_from"] is None and "seeds_needed" not in c and "optional stopping" not in c["reason"]
    assert c["ci95_method"].startswith(stats.BOOTSTRAP_METHOD) and c["power"]["n"] == 3
    (out / "compare.json").write_text(json.dumps(doc))

    # Two more seeds after that result: request.json keeps the first count and the look.
    comparemod.check_identity(out, _request(out, 5))
    saved = json.loads((out / "request.json").read_text())
    assert (saved["seeds"], saved["seeds_first"], saved["seeds_raised_after_result"]) == (5, 3, True)
    comparemod.check_identity(out, _request(out, 5))  # a plain rerun forgets neither
    assert json.loads((out / "request.json").read_text())["seeds_raised_after_result"] is True
    _fake_pairs(out, range(3, 5), labels)
    doc = comparemod.build_result(_request(out, 5), 1, out)
    comparemod.validate_result(doc)
    [c] = doc["comparisons"]
    assert doc["seeds_extended_from"] == 3 and c["n_seeds"] == 5
    assert "raised from 3 to 5 after a result existed" in c["reason"] and "optional stopping" in c["reason"]
    assert c["power"]["sd_source"] == "measured: sd of the 5 seed gaps"
    line = comparemod.summary_line(doc, c)
    assert f"[95% CI {c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}; seeds x test images]" in line
    print(json.dumps({**c, "pairs": c["pairs"][:1] + ["..."]}, indent=1))  # the example in the hand-back


def test_seeds_raised_before_any_result_are_no_look(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    comparemod.check_identity(out, _request(out, 2))
    comparemod.check_identity(out, _request(out, 4))
    saved = json.loads((out / "request.json").read_text())
    assert (saved["seeds_first"], saved["seeds_raised_after_result"]) == (2, False)
    assert comparemod.seed_history(out) == (2, False)
    # A folder from before seeds_first: its recorded count stands in.
    del saved["seeds_first"], saved["seeds_raised_after_result"]
    (out / "request.json").write_text(json.dumps(saved))
    comparemod.check_identity(out, _request(out, 4))
    assert comparemod.seed_history(out) == (4, False)


def test_plan_prints_the_power_of_the_planned_seeds(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    plan = {"epochs": 1, "seconds_per_image": {"fp32": 0.01, "tathe4": 0.01}, "startup_seconds": 2.0}
    lines = "\n".join(comparemod.plan_lines(_request(out, 3), plan, (32, 256), 32, out / "runs"))
    # The pilot sd 0.47 at 3 seeds (test_seeds_for_80pct_power_is_the_smallest_such_n): 15%, 10 and 24 seeds.
    assert ("power, tathe4: with seed-gap sd 0.47 (assumed pilot sd: 17 seed pairs, 1-epoch short recipe, "
            "CIFAR-10) 3 seeds give 15% power") in lines
    assert "80% TOST power needs 10 seeds at a true gap of 0, 24 at 0.25" in lines
    # Three finished pairs in the folder: their sd instead.
    labels = np.random.default_rng(0).integers(0, 10, size=256).astype(np.uint8)
    _fake_pairs(out, range(3), labels)
    lines = "\n".join(comparemod.plan_lines(_request(out, 6), plan, (32, 256), 32, out / "runs"))
    assert "(sd of the 3 finished pairs here) 6 seeds give" in lines
