"""Tests for crystallab.metrics (SCIENCE.md v2): hand values, properties, nulls, intervals with planted truths."""

from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------- properties


@st.composite
def distributions(draw, k=None):
    k = draw(st.integers(1, 12)) if k is None else k
    w = draw(
        st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=k, max_size=k).filter(
            lambda xs: sum(xs) > 1e-3
        )
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


@settings(max_examples=50)
@given(prompt_matrices(), st.randoms(use_true_random=False))
def test_order_parameters_invariant_to_option_permutation(P, rnd):
    perm = list(range(P.shape[1]))
    rnd.shuffle(perm)
    fam = [f"f{i % 2}" for i in range(P.shape[0])]
    a, b = M.order_parameters(P, fam, k=2), M.order_parameters(P[:, perm], fam, k=2)
    assert a.keys() == b.keys()
    for name in a:
        assert b[name] == pytest.approx(a[name], abs=1e-9, nan_ok=True), name


@given(distributions(), st.integers(2, 6))
def test_identical_prompts_have_no_spread_and_one_basin(p, n):
    P = np.tile(p, (n, 1))
    assert M.spread(P) <= 1e-12
    assert M.basins(P, None).n_basins == 1


# ---------------------------------------------------------------------------- ensembles


def test_h_spread_phi_hand_values():
    P = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    fam = ["a", "a", "b", "b"]
    assert M.h(P) == 0.0 and M.entropy_norm(M.aggregate(P)) == 1.0
    # 6 pairs: 4 between (JSD log 2), 2 within (0)
    assert M.spread(P) == pytest.approx(4 / 6 * LOG2)
    assert M.phi(P, fam) == pytest.approx(LOG2)
    assert math.isnan(M.spread([[0.5, 0.5]]))
    assert math.isnan(M.phi(P, ["a"] * 4))  # no between-family pair


def test_spread_does_not_grow_with_the_number_of_prompts():
    """v1's diversity grew with n; spread is a U-statistic. On 8 and on 48 prompts drawn from one
    population the means over 200 draws agree within 10 %."""
    rng = np.random.default_rng(0)
    centres = [np.array([0.6, 0.2, 0.1, 0.1]), np.array([0.1, 0.1, 0.2, 0.6]), np.full(4, 0.25)]

    def draw(n: int) -> np.ndarray:
        return np.stack([rng.dirichlet(centres[rng.integers(3)] * 30 + 1e-3) for _ in range(n)])

    small = np.mean([M.spread(draw(8)) for _ in range(200)])
    large = np.mean([M.spread(draw(48)) for _ in range(200)])
    assert abs(small - large) / large < 0.10, (small, large)


def test_phi_permutation_exact_and_random():
    P = np.array([[0.9, 0.1], [0.85, 0.15], [0.8, 0.2], [0.1, 0.9], [0.15, 0.85], [0.2, 0.8]])
    value, p, n, exact = M.phi_permutation(P, list("aaabbb"))
    # 10 ways to split 6 prompts into two unlabelled blocks of 3; the observed split is the best
    assert (n, exact) == (10, True) and p == pytest.approx(1 / 10)
    assert value > 0
    # 4 families of 4: 16! / (4!^4 4!) = 2,627,625 relabellings -> random draws
    rng = np.random.default_rng(1)
    Q = rng.dirichlet(np.ones(3), size=16)
    value, p, n, exact = M.phi_permutation(Q, [f"f{i // 4}" for i in range(16)], n_random=499)
    assert not exact and n == 2627625 and 0.0 < p <= 1.0
    # structureless data: phi_p is roughly uniform, rarely below 0.05
    ps = [
        M.phi_permutation(rng.dirichlet(np.ones(3) * 5, size=9), list("aaabbbccc"), n_random=199)[1] for _ in range(60)
    ]
    assert np.mean(np.array(ps) < 0.05) < 0.15


def test_block_partitions_count_matches_formula():
    for sizes in ([3, 3], [2, 2, 2], [4, 2], [3, 2, 1]):
        parts = list(M._block_partitions(list(range(sum(sizes))), sizes))
        assert len(parts) == M._n_partitions(sizes)
        assert len({tuple(sorted(tuple(sorted(b)) for b in p)) for p in parts}) == len(parts)


def test_basins_use_family_radii_not_a_fixed_tau():
    """Two families whose means are 0.2 apart share a basin when their own wording spread is
    large (radii 0.15 each) and stay apart when it is small."""
    rng = np.random.default_rng(2)
    a, b = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])
    tight = np.stack([rng.dirichlet(a * 3000) for _ in range(4)] + [rng.dirichlet(b * 3000) for _ in range(4)])
    loose = np.stack([rng.dirichlet(a * 8) for _ in range(4)] + [rng.dirichlet(b * 8) for _ in range(4)])
    fam = list("aaaabbbb")
    assert M.basins(tight, fam).n_basins == 2
    bl = M.basins(loose, fam)
    assert bl.n_basins == 1 and (bl.radii > 0.1).all()
    # one family: every prompt its own family at radius ε
    single = M.basins(tight, ["x"] * 8)
    assert single.names[0] == "prompt-0" and (single.radii == M.EPSILON).all() and single.n_basins == 2


def test_complete_link_needs_every_pair_within_reach():
    # a-b and b-c within reach, a-c not: complete link keeps a and c apart
    means = np.array([[0.8, 0.2], [0.65, 0.35], [0.5, 0.5]])
    r = np.full(3, 0.06)
    e = np.sqrt(M.pairwise_jsd(means)) / 0.12
    assert e[0, 1] <= 1 and e[1, 2] <= 1 and e[0, 2] > 1
    assert M._cluster(means, r).max() + 1 == 2 == M.n_basins_of(means, r)


# ---------------------------------------------------------------------------- relations


def test_nucleation_coordinate_and_seed_p():
    means = np.array([[0.6, 0.2, 0.1, 0.07, 0.03], [0.03, 0.07, 0.1, 0.2, 0.6], np.full(5, 0.2)])
    radii = np.array([0.05, 0.05, 0.05])
    q = np.array([0.58, 0.22, 0.1, 0.07, 0.03])
    c = M.nucleation_coordinate(q, means, radii)
    assert c.k_star == 0 and c.inside and c.margin > 1
    t = M.seed_p(q, means, radii)
    assert t.testable and t.exact and t.n_relabellings == 119 and t.p < 0.05
    # a uniform-ish q is as close to the uniform family after any relabelling: not significant
    u = np.array([0.21, 0.205, 0.2, 0.195, 0.19])
    assert M.seed_p(u, means, radii).p > 0.5


def test_seed_p_not_testable_for_small_or_symmetric_tasks():
    assert not M.seed_p([0.7, 0.3], [[0.7, 0.3]], [0.05]).testable  # K = 2: one relabelling
    assert M.seed_p([0.5, 0.3, 0.2], [[0.5, 0.3, 0.2]], [0.05]).n_relabellings == 5
    sym = np.array([0.5, 0.5 / 9 * 1] + [0.5 / 9] * 8)  # 10 options, 9 equal: 9 relabellings
    assert M.seed_p(sym, [sym], [0.05]).n_relabellings == 9
    big = M.seed_p(np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum(), [np.full(10, 0.1)], [0.05], n_random=199)
    assert big.testable and not big.exact and big.n_relabellings == math.factorial(10) - 1


def test_attraction_excess_retention_and_holm():
    f_star, t = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    assert M.attraction_index([0.85, 0.15], t, f_star) > 0  # pulled to the basin
    assert M.attraction_index([0.52, 0.48], t, f_star) < 0  # went to the data
    assert math.isnan(M.attraction_index([0.5, 0.5], f_star, f_star))
    parent = [0.5, 0.45, 0.05, 0.0]
    assert M.excess_retention(parent, [0.25] * 4) == pytest.approx(0.0)  # uniform child
    assert M.excess_retention(parent, [0.5, 0.5, 0.0, 0.0]) == pytest.approx(1.0)
    assert math.isnan(M.excess_retention([0.25] * 4, [0.25] * 4))  # S is every option
    assert M.holm([0.01, 0.02, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert M.holm([None, 0.5]) == [None, 0.5]


# ---------------------------------------------------------------------------- intervals


def test_cluster_bootstrap_covers_the_truth_with_family_structure():
    """v1 resampled prompts as if independent (36 % coverage). Simulate families whose centres
    vary around a population and prompts that vary around their family: the 95 % cluster
    bootstrap interval of h and of the aggregate's top option must cover the population value
    at least 90 % of the time with 16 families, where the prompt-level bootstrap falls short.
    (With 6 families the percentile interval covers about 86 %: docs/science.md.)"""
    rng = np.random.default_rng(3)
    pop = np.array([0.4, 0.25, 0.15, 0.1, 0.1])

    def draw(F: int = 16, m: int = 4) -> tuple[np.ndarray, list[str]]:
        rows, fam = [], []
        for f in range(F):
            centre = rng.dirichlet(pop * 20)
            rows += [rng.dirichlet(centre * 60 + 1e-3) for _ in range(m)]
            fam += [f"f{f}"] * m
        return np.stack(rows), fam

    big, _ = draw(4000, 4)
    truth = {"h": M.h(big), "top1_0": float(big.mean(axis=0)[0])}
    hits = {k: 0 for k in truth}
    naive = 0
    n_sim = 100
    for _ in range(n_sim):
        P, fam = draw()

        def stat(d):
            return {"h": M.h(P[d[0][0]]), "top1_0": float(P[d[0][0]].mean(axis=0)[0])}

        seed = int(rng.integers(1 << 30))
        reps = M.hierarchical_bootstrap(M.Structure.of(fam), stat, n_boot=300, seed=seed)
        for k in truth:
            lo, hi = M.percentile_interval(reps[k])
            hits[k] += lo <= truth[k] <= hi
        flat = M.hierarchical_bootstrap(M.Structure.of(None, [0] * len(fam)), stat, n_boot=300, seed=seed)
        lo, hi = M.percentile_interval(flat["h"])
        naive += lo <= truth["h"] <= hi
    for k, n in hits.items():
        assert n / n_sim >= 0.90, (k, n)
    assert naive < hits["h"] - 10, (naive, hits)


def test_hierarchical_bootstrap_resamples_replicas_first():
    # two replicas that disagree: the interval spans both; one replica: it cannot
    P = np.array([0.1] * 6 + [0.9] * 6)
    fam = [f"f{i // 2}" for i in range(12)]
    reps = [0] * 6 + [1] * 6
    s = M.Structure.of(fam, reps)
    assert len(s.replicas) == 2 and all(len(r) == 3 for r in s.replicas)
    out = M.hierarchical_bootstrap(s, lambda d: {"m": float(np.mean([P[r].mean() for r, _ in d]))}, n_boot=400)
    lo, hi = M.percentile_interval(out["m"])
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.9)
