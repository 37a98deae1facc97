"""Tests for crystallab.metrics: hand-computed values, properties, nulls and transitions."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crystallab import metrics as M

LOG2, LOG3, LOG4 = math.log(2), math.log(3), math.log(4)

UNIFORM4 = [0.25, 0.25, 0.25, 0.25]
ONEHOT4 = [0.0, 1.0, 0.0, 0.0]
HALF3 = [0.5, 0.5, 0.0]

SINGLE = ["entropy", "entropy_norm", "n_eff", "top1", "topk_mass", "collision", "chi2_uniform"]


def _single(p, name):
    fn = getattr(M, name)
    return fn(p, 2) if name == "topk_mass" else fn(p)


# ---------------------------------------------------------------------------- hand values


@pytest.mark.parametrize(
    "p, expected",
    [
        # entropy, entropy_norm, n_eff, top1, top2 mass, collision, chi2_uniform
        (UNIFORM4, (LOG4, 1.0, 4.0, 0.25, 0.5, 0.25, 0.0)),
        (ONEHOT4, (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 3.0)),
        (HALF3, (LOG2, LOG2 / LOG3, 2.0, 0.5, 1.0, 0.5, 0.5)),
    ],
    ids=["uniform", "one-hot", "half-half-zero"],
)
def test_single_distribution_hand_values(p, expected):
    for name, want in zip(SINGLE, expected):
        assert _single(p, name) == pytest.approx(want, abs=1e-12), name


def test_zero_log_zero_is_zero_without_warnings():
    with np.errstate(all="raise"):
        assert M.entropy([1.0, 0.0, 0.0]) == 0.0
        assert M.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(LOG2, abs=1e-15)


def test_entropy_norm_single_option_is_zero():
    assert M.entropy_norm([1.0]) == 0.0


def test_topk_mass_caps_k_and_rejects_zero():
    assert M.topk_mass([0.2, 0.7, 0.1], 10) == pytest.approx(1.0)
    assert M.topk_mass([0.2, 0.7, 0.1], 1) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        M.topk_mass([0.2, 0.8], 0)


def test_js_hand_values():
    assert M.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(LOG2, abs=1e-15)
    # JS([1,0],[.5,.5]): m = [.75,.25]; 0.5*log(4/3) + 0.5*(0.5*log(2/3) + 0.5*log 2)
    want = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * LOG2)
    assert M.js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(want, abs=1e-15)
    assert M.js_distance([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.sqrt(want), abs=1e-15)
    with pytest.raises(ValueError):
        M.js_divergence([1.0, 0.0], [1.0, 0.0, 0.0])


def test_renormalize():
    p, v = M.renormalize([0.2, 0.6, 0.2])
    assert p == pytest.approx([0.25, 0.75]) and v == pytest.approx(0.8)
    p, v = M.renormalize([0.0, 0.0, 1.0])
    assert p is None and v == 0.0
    p, v = M.renormalize([1e-14, 0.0, 1.0])
    assert p is None and v <= 1e-12
    p, v = M.renormalize([0.5, 0.5, -1e-17])  # log-space rounding of ⊥
    assert p == pytest.approx([0.5, 0.5]) and v == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.renormalize([0.5, 0.7, -0.2])
    with pytest.raises(ValueError):
        M.renormalize([1.0])


def test_prompt_set_hand_values():
    # two prompts on disjoint options: maximal diversity, two distinct distributions
    op = M.order_parameters([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], valid=[1.0, 0.5])
    assert op["diversity"] == pytest.approx(1.0)
    assert op["n_distinct"] == 2
    assert op["entropy_norm"] == pytest.approx(LOG2 / LOG3)
    assert op["n_eff"] == pytest.approx(2.0)
    assert op["top1"] == pytest.approx(0.5)
    assert op["topk_mass"] == pytest.approx(1.0)
    assert op["collision"] == pytest.approx(0.5)
    assert op["chi2_uniform"] == pytest.approx(0.5)
    assert op["valid_mass"] == pytest.approx(0.75)
    assert op["n_prompts"] == 2
    # generalized JS of [1,0,0] and [.5,.5,0] equals their pairwise JS; normalised by log 2
    P = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]
    js = M.js_divergence([1.0, 0.0], [0.5, 0.5])
    assert M.generalized_js(P) == pytest.approx(js)
    assert M.diversity(P) == pytest.approx(js / LOG2)
    # identical prompts: no diversity, one distinct distribution, aggregate = the row
    op = M.order_parameters([HALF3, HALF3, HALF3])
    assert op["diversity"] == pytest.approx(0.0, abs=1e-12)
    assert op["n_distinct"] == 1
    assert op["entropy_norm"] == pytest.approx(LOG2 / LOG3)
    assert math.isnan(op["valid_mass"])
    assert M.aggregate([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx([0.5, 0.5])


def test_diversity_degenerate_sizes():
    assert M.diversity([[0.3, 0.7]]) == 0.0  # one prompt
    assert M.diversity([[1.0], [1.0]]) == 0.0  # one option
    assert M.n_distinct([[0.3, 0.7]]) == 1


# ---------------------------------------------------------------------------- properties


@st.composite
def distributions(draw, k=None):
    k = draw(st.integers(1, 12)) if k is None else k
    w = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=k, max_size=k
        ).filter(lambda xs: sum(xs) > 1e-3)
    )
    a = np.asarray(w)
    return a / a.sum()


@st.composite
def prompt_matrices(draw):
    k = draw(st.integers(1, 8))
    n = draw(st.integers(1, 6))
    return np.stack([draw(distributions(k)) for _ in range(n)])


@st.composite
def pairs(draw):
    k = draw(st.integers(1, 12))
    return draw(distributions(k)), draw(distributions(k))


@given(distributions())
def test_entropy_norm_in_unit_interval(p):
    assert 0.0 <= M.entropy_norm(p) <= 1.0


@given(pairs())
def test_js_properties(pq):
    p, q = pq
    d = M.js_divergence(p, q)
    assert d == M.js_divergence(q, p)
    assert 0.0 <= d <= LOG2 + 1e-15
    assert M.js_divergence(p, p) <= 1e-12
    tv = 0.5 * np.abs(p - q).sum()
    if tv > 1e-3:
        assert d > 0.0
        # Pinsker on each KL to the midpoint: JS >= TV^2 / 2
        assert d >= tv**2 / 2 * (1 - 1e-9)


@given(distributions(), st.integers(1, 6))
def test_diversity_zero_when_rows_equal(p, n):
    assert M.diversity(np.tile(p, (n, 1))) <= 1e-12
    assert M.n_distinct(np.tile(p, (n, 1))) == 1


@given(prompt_matrices())
def test_diversity_in_unit_interval(P):
    assert 0.0 <= M.diversity(P) <= 1.0


@settings(max_examples=50)
@given(prompt_matrices(), st.randoms(use_true_random=False))
def test_order_parameters_invariant_to_option_permutation(P, rnd):
    perm = list(range(P.shape[1]))
    rnd.shuffle(perm)
    a, b = M.order_parameters(P, k=2), M.order_parameters(P[:, perm], k=2)
    assert a.keys() == b.keys()
    for name in a:
        assert b[name] == pytest.approx(a[name], abs=1e-9, nan_ok=True), name


# ---------------------------------------------------------------------------- n_distinct


def test_n_distinct_planted_clusters():
    rng = np.random.default_rng(0)
    K = 10
    centres = [np.eye(K)[0] * 0.8 + 0.02, np.eye(K)[4] * 0.8 + 0.02, np.full(K, 0.1)]
    rows = []
    for c in centres:
        for _ in range(6):
            r = c + rng.uniform(0, 1e-3, K)
            rows.append(r / r.sum())
    P = np.array(rows)[rng.permutation(18)]
    assert M.n_distinct(P) == 3
    assert M.n_distinct(P, tau=1.0) == 1  # max sqrt(JS) is sqrt(log 2) < 1
    assert M.n_distinct(P, tau=0.0) == 18  # all rows differ a little


# ---------------------------------------------------------------------------- bootstrap


def _population(n, seed=0, K=10):
    rng = np.random.default_rng(seed)
    centre = np.random.default_rng(123).dirichlet(np.ones(K))
    return rng.dirichlet(centre * 20, size=n)


def _agg_entropy_norm(X):
    return M.entropy_norm(M.aggregate(X))


def test_bootstrap_ci_contains_point_and_narrows():
    small, large = _population(10), _population(200, seed=1)
    lo_s, hi_s = M.bootstrap_ci(small, _agg_entropy_norm, n_boot=500)
    lo_l, hi_l = M.bootstrap_ci(large, _agg_entropy_norm, n_boot=500)
    assert lo_s <= _agg_entropy_norm(small) <= hi_s
    assert lo_l <= _agg_entropy_norm(large) <= hi_l
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)


def test_bootstrap_ci_deterministic_given_seed():
    P = _population(20)
    a = M.bootstrap_ci(P, _agg_entropy_norm, n_boot=300, seed=7)
    assert a == M.bootstrap_ci(P, _agg_entropy_norm, n_boot=300, seed=7)
    assert a != M.bootstrap_ci(P, _agg_entropy_norm, n_boot=300, seed=8)
    b = M.bootstrap_order_parameters(P, n_boot=300, seed=7)
    assert b == M.bootstrap_order_parameters(P, n_boot=300, seed=7)


def test_bootstrap_ci_weights_restrict_resampling():
    P = _population(5)
    lo, hi = M.bootstrap_ci(P, _agg_entropy_norm, n_boot=100, weights=[1, 0, 0, 0, 0])
    assert lo == pytest.approx(M.entropy_norm(P[0])) and hi == pytest.approx(lo)
    with pytest.raises(ValueError):
        M.bootstrap_ci(P, _agg_entropy_norm, weights=[1, 0])


def test_bootstrap_order_parameters_matches_generic_bootstrap():
    P = _population(25)
    valid = np.linspace(0.5, 1.0, 25)
    fast = M.bootstrap_order_parameters(P, valid=valid, n_boot=400, seed=3)
    assert set(fast) == set(M.order_parameters(P))
    direct = {
        "entropy_norm": lambda X: M.entropy_norm(M.aggregate(X)),
        "top1": lambda X: M.top1(M.aggregate(X)),
        "topk_mass": lambda X: M.topk_mass(M.aggregate(X), 3),
        "collision": lambda X: M.collision(M.aggregate(X)),
        "chi2_uniform": lambda X: M.chi2_uniform(M.aggregate(X)),
        "diversity": M.diversity,
    }
    for name, stat in direct.items():
        slow = M.bootstrap_ci(P, stat, n_boot=400, seed=3)
        # same replicates: the same percentile interval, shifted by the bootstrap bias estimate
        reps = np.array([stat(P[i]) for i in M._boot_indices(len(P), 400, 3)])
        shift = M.order_parameters(P)[name] - reps.mean()
        expect = (max(slow[0] + shift, 0.0), slow[1] + shift)
        assert fast[name][1:] == pytest.approx(expect, abs=1e-9), name
        assert fast[name][0] == pytest.approx(M.order_parameters(P)[name])
    lo, hi = fast["valid_mass"][1:]
    assert lo <= valid.mean() <= hi
    # n_distinct: the interval comes from the first 200 of the same resamples
    idx = M._boot_indices(25, 400, 3)[:200]
    nd = np.array([M.n_distinct(P[i]) for i in idx])
    shift = fast["n_distinct"][0] - nd.mean()
    assert fast["n_distinct"][1:] == pytest.approx(tuple(np.quantile(nd, [0.025, 0.975]) + shift))


def test_bootstrap_order_parameters_is_fast():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.full(100, 0.3), size=30)
    M.bootstrap_order_parameters(P, n_boot=50)  # warm up imports
    start = time.perf_counter()
    out = M.bootstrap_order_parameters(P, valid=rng.uniform(size=30), n_boot=1000)
    assert time.perf_counter() - start < 1.0
    assert all(len(v) == 3 for v in out.values())


def test_dirichlet_ci():
    counts = np.array([30, 10, 0])
    mean, lo, hi = M.dirichlet_ci(counts)
    assert mean == pytest.approx((counts + 0.5) / 41.5)
    assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(lo >= 0) and np.all(hi <= 1)
    # agrees with Monte Carlo draws from the posterior
    draws = np.random.default_rng(0).dirichlet(counts + 0.5, size=200_000)
    assert lo == pytest.approx(np.quantile(draws, 0.025, axis=0), abs=3e-3)
    assert hi == pytest.approx(np.quantile(draws, 0.975, axis=0), abs=3e-3)
    # more samples, narrower intervals
    _, lo2, hi2 = M.dirichlet_ci(counts * 100)
    assert np.all(hi2 - lo2 < hi - lo)


def test_intervals_overlap():
    assert M.intervals_overlap((0.1, 0.3), (0.3, 0.5))
    assert M.intervals_overlap((0.0, 1.0), (0.4, 0.5))
    assert not M.intervals_overlap((0.1, 0.2), (0.3, 0.4))
    assert not M.intervals_overlap((0.3, 0.4), (0.1, 0.2))
    assert M.intervals_overlap((math.nan, 0.2), (0.3, 0.4))  # unknown never separates


# ---------------------------------------------------------------------------- seed match


def _peaked_base(n=12, K=20, seed=0):
    return np.random.default_rng(seed).dirichlet(np.full(K, 0.3), size=n)


def test_seed_match_finds_planted_seed():
    P = _peaked_base()
    m = M.seed_match(P[4], P, n_perm=1000)
    assert m.index == 4
    assert m.distance == pytest.approx(0.0, abs=1e-9)
    assert m.p_value < 0.01
    assert m.p_value >= 1 / 1001
    assert m.null_distances.shape == (1000,)
    assert M.nucleation_confirmed(m)


def test_seed_match_uniform_is_not_significant():
    P = _peaked_base()
    m = M.seed_match(np.full(20, 1 / 20), P, n_perm=500)
    assert m.p_value > 0.05
    assert not M.nucleation_confirmed(m)
    # a uniform base row matches a uniform q exactly, but so does every permutation of it:
    # ties count against the match, the shape alone explains it
    with_uniform = np.vstack([P, np.full(20, 1 / 20)])
    m = M.seed_match(np.full(20, 1 / 20), with_uniform, n_perm=200)
    assert m.index == 12 and m.distance == 0.0 and m.p_value == 1.0


def test_seed_match_distance_and_determinism():
    P = _peaked_base()
    q = 0.7 * P[2] + 0.3 * P[9]
    m = M.seed_match(q, P, n_perm=200, seed=1)
    assert m.index == 2
    assert m.distance == pytest.approx(M.js_distance(q, P[2]))
    again = M.seed_match(q, P, n_perm=200, seed=1)
    assert again.p_value == m.p_value and np.array_equal(again.null_distances, m.null_distances)
    assert not M.nucleation_confirmed(M.SeedMatch(0, 0.2, 0.001, np.zeros(1)))
    assert not M.nucleation_confirmed(M.SeedMatch(0, 0.05, 0.02, np.zeros(1)))


# ---------------------------------------------------------------------------- settling


def test_support_set_and_retention():
    q_sft = np.array([0.6, 0.35, 0.05, 0.0, 0.0])
    assert M.support_set(q_sft).tolist() == [0, 1]
    assert M.support_set([0.25, 0.25, 0.25, 0.25], cover=0.5).tolist() == [0, 1]  # stable ties
    assert M.support_set([0.3, 0.6, 0.1], cover=0.9).tolist() == [1, 0]  # float sum 0.9
    same_support = np.array([0.45, 0.5, 0.05, 0.0, 0.0])
    assert M.retention(q_sft, same_support) >= 0.9
    moved = np.array([0.3, 0.2, 0.0, 0.3, 0.2])
    assert M.retention(q_sft, moved) == pytest.approx(0.5)
    assert M.retention(q_sft, moved) < 0.9
    assert M.new_mass(q_sft, moved) == pytest.approx(0.5)
    assert M.redistribution(q_sft, moved) == pytest.approx(M.js_distance(q_sft, moved))
    assert M.redistribution(q_sft, q_sft) == 0.0


# ---------------------------------------------------------------------------- transitions


STEPS = np.arange(0, 101, 2.0)


def test_transition_sigmoid():
    rng = np.random.default_rng(0)
    y = 0.1 + 0.8 / (1 + np.exp((STEPS - 50) / 5)) + rng.normal(0, 0.01, STEPS.size)
    out = M.transition_statistics(STEPS, y)
    assert abs(out["transition_step"] - 50) <= 5
    assert out["method"] == "logistic"
    assert out["rss_logistic"] < out["rss_piecewise"]
    line = M.transition_statistics(STEPS, 0.9 - 0.8 * STEPS / 100)
    assert line["sharpness"] == pytest.approx(0.01, rel=1e-3)  # 1 / (t_last - t_first)
    assert out["sharpness"] > 3 * line["sharpness"]


def test_transition_piecewise_break():
    rng = np.random.default_rng(1)
    y = np.where(STEPS < 30, 0.9, 0.9 - 0.01 * (STEPS - 30)) + rng.normal(0, 0.01, STEPS.size)
    out = M.transition_statistics(STEPS, y)
    assert abs(out["transition_step"] - 30) <= 5
    fit = M.fit_piecewise_linear(STEPS, y)
    assert abs(fit["breakpoint"] - 30) <= 5
    assert fit["slopes"][1] == pytest.approx(-0.01, abs=2e-3)


def test_transition_susceptibility_and_edge_cases():
    spread = np.exp(-(((STEPS - 40) / 10) ** 2))
    y = 1 / (1 + np.exp((STEPS - 45) / 3))
    assert M.transition_statistics(STEPS, y, spread=spread)["susceptibility_peak_step"] == 40
    assert math.isnan(M.transition_statistics(STEPS, y)["susceptibility_peak_step"])
    assert M.susceptibility([0.2, 0.4, 0.6]) == pytest.approx(np.var([0.2, 0.4, 0.6]))
    short = M.transition_statistics([0, 1, 2], [1.0, 0.5, 0.0])
    assert math.isnan(short["transition_step"]) and math.isnan(short["sharpness"])
    assert "4 steps" in short["note"]
    assert "4 steps" in M.fit_logistic([0, 1, 2], [1.0, 0.5, 0.0])["note"]
    flat = M.transition_statistics(STEPS, np.full(STEPS.size, 0.3))
    assert math.isnan(flat["sharpness"]) and math.isnan(flat["transition_step"])
    # NaN points are dropped, not propagated
    y_nan = y.copy()
    y_nan[[3, 7]] = np.nan
    out = M.transition_statistics(STEPS, y_nan)
    assert abs(out["transition_step"] - 45) <= 2 and "dropped 2" in out["note"]


def test_logistic_failure_is_reported(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(M.optimize, "curve_fit", boom)
    fit = M.fit_logistic(STEPS, STEPS / 100)
    assert fit["rss"] == math.inf and "failed" in fit["note"]
    out = M.transition_statistics(STEPS, STEPS / 100)
    assert out["method"] == "piecewise" and out["rss_logistic"] == math.inf


def test_bias_corrected_intervals_contain_their_point():
    """A plain percentile interval of diversity can exclude its own point (resampling
    duplicates prompts, which looks less diverse); the bias-corrected one does not."""
    plain_misses = 0
    for seed in range(5):
        P = np.random.default_rng(seed).dirichlet(np.full(100, 0.05), size=30)  # sparse rows, K=100
        b = M.bootstrap_order_parameters(P, n_boot=500, seed=1)
        plain = M.bootstrap_ci(P, lambda X: M.entropy_norm(M.aggregate(X)), n_boot=500, seed=1)
        plain_misses += not (plain[0] <= b["entropy_norm"][0] <= plain[1])
        for name in ("diversity", "entropy_norm", "n_distinct"):
            pt, lo, hi = b[name]
            assert lo <= pt <= hi, (seed, name, pt, lo, hi)
    assert plain_misses >= 1  # the defect this guards against does occur
