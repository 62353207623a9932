"""suite.stats against cases computed by hand (each case's arithmetic is in its comment).

Hand tools: the t distribution with 2 degrees of freedom has the closed form
F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so its quantile is t_q = sqrt(2 u^2 / (1 - u^2)) with u = 2q - 1:
t_{0.975,2} = sqrt(2 * 0.9025 / 0.0975) = 4.30265, t_{0.95,2} = sqrt(2 * 0.81 / 0.19) = 2.91999.
Other quantiles from printed t tables: t_{0.975,3} = 3.182, t_{0.95,11} = 1.796, t_{0.95,12} = 1.782."""

import json
import math

import numpy as np
import pytest

from suite import stats


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
    assert c.verdict == "equivalent" and c.seeds_needed is None
    assert c.mean_gap == pytest.approx(0.2) and c.sd_gap == pytest.approx(0.1)
    assert c.ci95[0] == pytest.approx(-0.04841, abs=1e-4) and c.ci95[1] == pytest.approx(0.44841, abs=1e-4)


def test_worse_better_and_a_significant_gap_inside_the_margin():
    # gaps 2, 2.1, 1.9: CI 2 +- 0.24841 = [1.7516, 2.2484], above 0; TOST p ~ 1: worse.
    assert stats.compare("m", _pairs([2.0, 2.1, 1.9]), 0.5).verdict == "worse"
    assert stats.compare("m", _pairs([-2.0, -2.1, -1.9]), 0.5).verdict == "better"
    # gaps 0.2, 0.21, 0.19: the CI [0.175, 0.225] excludes 0 but lies inside +-0.5: equivalence wins.
    assert stats.compare("m", _pairs([0.2, 0.21, 0.19]), 0.5).verdict == "equivalent"


def test_inconclusive_and_seeds_needed():
    # gaps 1, 2, 3 (mean 2, sd 1): CI [-0.484, 4.484] contains 0, TOST p ~ 0.94. At n = 4:
    # half-width t_{0.975,3} * 1/sqrt(4) = 3.182/2 = 1.591 < 2, so the CI would exclude 0: 4 seeds.
    c = stats.compare("m", _pairs([1.0, 2.0, 3.0]), 0.5)
    assert c.verdict == "inconclusive" and c.seeds_needed == 4
    assert "about 4 seeds in all (1 more)" in c.reason
    # gaps -1, 0, 1 (mean 0, sd 1): 0 is never excluded; equivalence needs t_{0.95,n-1}/sqrt(n) < 0.5:
    # n = 12: 1.796/3.464 = 0.518 (no); n = 13: 1.782/3.606 = 0.494 (yes) -> 13.
    c = stats.compare("m", _pairs([-1.0, 0.0, 1.0]), 0.5)
    assert c.verdict == "inconclusive" and c.seeds_needed == 13
    # mean 0.1, sd 5: equivalence needs 0.1 + 1.66 * 5/sqrt(n) < 0.5, i.e. n > 430; 0 excluded only near
    # n = 9600: beyond the cap of 100.
    c = stats.compare("m", _pairs([0.1 - 5.0, 0.1, 0.1 + 5.0]), 0.5)
    assert c.verdict == "inconclusive" and c.seeds_needed is None and "more than 100 seeds" in c.reason


def test_zero_spread():
    # Two identical gaps: sd 0, the CI is the point itself.
    c = stats.compare("m", _pairs([0.3, 0.3]), 0.5)
    assert c.sd_gap == 0.0 and c.ci95 == pytest.approx((0.3, 0.3)) and c.verdict == "equivalent"
    c = stats.compare("m", _pairs([1.0, 1.0]), 0.5)
    assert c.ci95 == pytest.approx((1.0, 1.0)) and c.tost_p == 1.0 and c.verdict == "worse"


def test_one_seed_is_inconclusive_with_the_reason():
    c = stats.compare("m", _pairs([0.0]), 0.5)
    assert (c.n_seeds, c.sd_gap, c.ci95, c.tost_p, c.seeds_needed) == (1, None, None, None, None)
    assert c.verdict == "inconclusive" and "one seed pair" in c.reason


def test_pair_with_predictions_and_json_shape():
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    pair = stats.make_pair(7, 100.0, 75.0, labels, labels, np.array([0, 1, 2, 0], dtype=np.uint8))
    assert pair.gap == 25.0 and pair.discordant == (1, 0) and pair.mcnemar_p == 1.0  # 2 * (1/2)^1 capped at 1
    doc = stats.compare("m", [pair, stats.make_pair(8, 50.0, 50.0)], 0.5).to_json()
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN
    assert doc["pairs"][0]["discordant"] == [1, 0] and doc["pairs"][1]["discordant"] is None
    assert isinstance(doc["ci95"], list) and len(doc["ci95"]) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="no seed pairs"):
        stats.compare("m", [], 0.5)
    with pytest.raises(ValueError, match="margin must be positive"):
        stats.compare("m", _pairs([1.0, 2.0]), 0.0)


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
