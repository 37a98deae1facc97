"""Order parameters, relations between checkpoints and transition statistics.

Pure numpy/scipy functions; no metric reads files or knows about models. Definitions follow
``SCIENCE.md`` ("Order parameters", "Relations between checkpoints", "Dynamics during
training"). Natural logs everywhere; ``0 * log 0 = 0``.

Conventions: ``p`` is one distribution of shape ``(K,)`` over the task's K options, already
renormalised over the valid options (the "other" mass ⊥ removed, see :func:`renormalize`);
``P`` is a prompt matrix of shape ``(n, K)`` with one such distribution per prompt. Lists are
accepted wherever arrays are.

>>> P = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
>>> op = order_parameters(P)
>>> round(op["top1"], 4), round(op["diversity"], 4), op["n_distinct"]
(0.5, 0.5, 2.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

__all__ = [
    "SeedMatch",
    "aggregate",
    "bootstrap_ci",
    "bootstrap_order_parameters",
    "chi2_uniform",
    "collision",
    "dirichlet_ci",
    "diversity",
    "entropy",
    "entropy_norm",
    "fit_logistic",
    "fit_piecewise_linear",
    "generalized_js",
    "intervals_overlap",
    "js_distance",
    "js_divergence",
    "n_distinct",
    "n_eff",
    "new_mass",
    "nucleation_confirmed",
    "order_parameters",
    "redistribution",
    "renormalize",
    "retention",
    "seed_match",
    "support_set",
    "susceptibility",
    "top1",
    "topk_mass",
    "transition_statistics",
]

LOG2 = math.log(2.0)
#: Valid mass at or below which the renormalised distribution is undefined.
MIN_VALID_MASS = 1e-12
#: Tolerance (in nats of JSD) when comparing null distances with the observed one.
_JS_TIE_TOL = 1e-12
#: Number of bootstrap resamples used for the ``n_distinct`` interval (it needs a clustering
#: per resample, so it is capped; the other order parameters use all ``n_boot`` resamples).
N_BOOT_DISTINCT = 200


# --------------------------------------------------------------------------------------------
# validation helpers


def _dist(p: ArrayLike, name: str = "p") -> np.ndarray:
    a = np.asarray(p, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D distribution, got shape {a.shape}")
    return a


def _matrix(P: ArrayLike, name: str = "P") -> np.ndarray:
    a = np.asarray(P, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, K) matrix, got shape {a.shape}")
    return a


# --------------------------------------------------------------------------------------------
# row-wise kernels (the single source of truth for point estimates and bootstrap)


def _entropy_rows(A: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) along the last axis, 0 log 0 = 0."""
    return special.entr(A).sum(axis=-1)


def _entropy_norm_rows(A: np.ndarray) -> np.ndarray:
    K = A.shape[-1]
    if K == 1:
        return np.zeros(A.shape[:-1])
    return np.clip(_entropy_rows(A) / math.log(K), 0.0, 1.0)


def _topk_rows(A: np.ndarray, k: int) -> np.ndarray:
    K = A.shape[-1]
    k = min(int(k), K)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    part = np.partition(A, K - k, axis=-1)[..., K - k :]
    return part.sum(axis=-1)


def _chi2_rows(A: np.ndarray) -> np.ndarray:
    K = A.shape[-1]
    return K * ((A - 1.0 / K) ** 2).sum(axis=-1)


def _js_rows(p: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """JSD (nats) between p and each distribution along the last axis of Q (broadcasting).

    Written as the mean KL to the midpoint so that identical inputs give exactly 0.
    """
    m = 0.5 * (p + Q)
    js = 0.5 * (special.rel_entr(p, m).sum(axis=-1) + special.rel_entr(Q, m).sum(axis=-1))
    return np.clip(js, 0.0, LOG2)


def _pairwise_js_distance(P: np.ndarray) -> np.ndarray:
    """Symmetric (n, n) matrix of sqrt(JSD) between rows, zero diagonal."""
    n = P.shape[0]
    D = np.zeros((n, n))
    for i in range(n - 1):
        D[i, i + 1 :] = np.sqrt(_js_rows(P[i], P[i + 1 :]))
    return D + D.T


def _n_clusters(D: np.ndarray, tau: float) -> int:
    """Complete-link clusters with diameter <= tau from a square distance matrix."""
    n = D.shape[0]
    if n == 1:
        return 1
    Z = hierarchy.linkage(squareform(D, checks=False), method="complete")
    return int(hierarchy.fcluster(Z, t=tau, criterion="distance").max())


# --------------------------------------------------------------------------------------------
# single distributions


def renormalize(p_with_other: ArrayLike) -> tuple[np.ndarray | None, float]:
    """Split a distribution over ``K`` options plus ⊥ (last entry) into ``(p̃, v)``.

    ``v`` is the valid mass (share of the total on the K options) and ``p̃`` the
    distribution renormalised over the options; ``p̃`` is ``None`` when ``v <= 1e-12``
    (undefined: callers skip the prompt and report it). Tiny negative entries from
    log-space arithmetic (``>= -1e-9``) are treated as 0.

    >>> p, v = renormalize([0.2, 0.6, 0.2])
    >>> p.round(4).tolist(), round(v, 4)
    ([0.25, 0.75], 0.8)
    >>> renormalize([0.0, 0.0, 1.0])
    (None, 0.0)
    """
    a = _dist(p_with_other, "p_with_other")
    if a.size < 2:
        raise ValueError("p_with_other needs K >= 1 options plus the ⊥ entry (last)")
    if not np.all(np.isfinite(a)) or np.any(a < -1e-9):
        raise ValueError(f"p_with_other must be finite and non-negative, got {a.tolist()}")
    a = np.clip(a, 0.0, None)
    total = float(a.sum())
    valid = a[:-1]
    v = float(valid.sum()) / total if total > 0 else 0.0
    if v <= MIN_VALID_MASS:
        return None, v
    return valid / valid.sum(), v


def entropy(p: ArrayLike) -> float:
    """Shannon entropy in nats, with ``0 log 0 = 0``.

    >>> round(entropy([0.5, 0.5, 0.0]), 4)
    0.6931
    """
    return float(_entropy_rows(_dist(p)))


def entropy_norm(p: ArrayLike) -> float:
    """``H(p) / log K`` in ``[0, 1]``: 1 = uniform, 0 = one option (0.0 when ``K == 1``).

    >>> entropy_norm([0.25] * 4), entropy_norm([1.0, 0.0]), entropy_norm([1.0])
    (1.0, 0.0, 0.0)
    """
    return float(_entropy_norm_rows(_dist(p)))


def n_eff(p: ArrayLike) -> float:
    """Effective number of options ``exp H(p)``.

    >>> round(n_eff([0.5, 0.5, 0.0]), 4)
    2.0
    """
    return float(np.exp(_entropy_rows(_dist(p))))


def top1(p: ArrayLike) -> float:
    """Mass of the most likely option.

    >>> top1([0.2, 0.7, 0.1])
    0.7
    """
    return float(_dist(p).max())


def topk_mass(p: ArrayLike, k: int) -> float:
    """Mass of the ``k`` most likely options (``k`` is capped at ``K``).

    >>> round(topk_mass([0.2, 0.7, 0.1], 2), 4)
    0.9
    """
    return float(_topk_rows(_dist(p), k))


def collision(p: ArrayLike) -> float:
    """Collision probability ``sum p²`` (two independent draws agree).

    >>> collision([0.5, 0.5, 0.0])
    0.5
    """
    return float((_dist(p) ** 2).sum())


def chi2_uniform(p: ArrayLike) -> float:
    """Pearson χ² per draw against uniform: ``K * sum (p - 1/K)²`` (0 = uniform, K-1 = one-hot).

    >>> round(chi2_uniform([1.0, 0.0, 0.0, 0.0]), 4)
    3.0
    """
    return float(_chi2_rows(_dist(p)))


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in nats: symmetric, 0 iff ``p == q``, at most ``log 2``.

    >>> round(js_divergence([1.0, 0.0], [0.0, 1.0]), 4) == round(math.log(2), 4)
    True
    >>> js_divergence([0.3, 0.7], [0.3, 0.7])
    0.0
    """
    a, b = _dist(p), _dist(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q differ in shape: {a.shape} vs {b.shape}")
    return float(_js_rows(a, b))


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon distance ``sqrt(JSD)`` (nats^½), a metric on distributions.

    >>> round(js_distance([1.0, 0.0], [0.5, 0.5]), 4)
    0.4645
    """
    return math.sqrt(js_divergence(p, q))


# --------------------------------------------------------------------------------------------
# prompt sets


def aggregate(P: ArrayLike) -> np.ndarray:
    """Aggregate distribution ``p̄ = mean_i P_i`` of a prompt set.

    >>> aggregate([[1.0, 0.0], [0.0, 1.0]]).tolist()
    [0.5, 0.5]
    """
    return _matrix(P).mean(axis=0)


def generalized_js(P: ArrayLike) -> float:
    """Generalised JS divergence ``H(mean_i P_i) - mean_i H(P_i)`` (nats, >= 0).

    >>> round(generalized_js([[1.0, 0.0], [0.0, 1.0]]), 4)
    0.6931
    """
    A = _matrix(P)
    return max(0.0, float(_entropy_rows(A.mean(axis=0)) - _entropy_rows(A).mean()))


def diversity(P: ArrayLike) -> float:
    """The liquid order parameter: ``generalized_js(P) / log min(n, K)`` in ``[0, 1]``.

    0 when every prompt gives the same distribution (and when ``min(n, K) < 2``); 1 when
    ``min(n, K)`` prompts put their mass on disjoint options.

    >>> diversity([[1.0, 0.0], [0.0, 1.0]]), diversity([[0.3, 0.7], [0.3, 0.7]])
    (1.0, 0.0)
    """
    A = _matrix(P)
    m = min(A.shape)
    if m < 2:
        return 0.0
    return float(np.clip(generalized_js(A) / math.log(m), 0.0, 1.0))


def n_distinct(P: ArrayLike, tau: float = 0.1) -> int:
    """Number of distinct promptable distributions among the rows of ``P``.

    Complete-link hierarchical clustering of the rows with distance ``sqrt(JSD)``, cut so that
    every cluster's complete-link diameter is ``<= tau`` (nats^½). One row gives 1.

    >>> n_distinct([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])
    2
    """
    A = _matrix(P)
    return _n_clusters(_pairwise_js_distance(A), tau)


def susceptibility(E: ArrayLike) -> float:
    """Across-prompt variance (``ddof=0``) of the per-prompt ``entropy_norm`` values ``E``.

    >>> round(susceptibility([0.2, 0.4, 0.6]), 4)
    0.0267
    """
    return float(_dist(E, "E").var())


def order_parameters(P: ArrayLike, valid: ArrayLike | None = None, k: int = 3, tau: float = 0.1) -> dict[str, float]:
    """All order parameters of one prompt set (``P``: one renormalised distribution per row).

    ``entropy_norm``, ``n_eff``, ``top1``, ``topk_mass`` (top ``k``), ``collision`` and
    ``chi2_uniform`` are computed on the aggregate ``mean_i P_i``; ``diversity`` and
    ``n_distinct`` (τ = 0.1) across rows; ``valid_mass`` is ``mean(valid)`` (NaN when
    ``valid`` is not given); ``n_prompts`` is ``n``. All values are floats.

    >>> op = order_parameters([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], valid=[0.9, 0.7])
    >>> {k: round(v, 4) for k, v in op.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'entropy_norm': 0.6309, 'n_eff': 2.0, 'top1': 0.5, 'topk_mass': 1.0, 'collision': 0.5,
     'chi2_uniform': 0.5, 'diversity': 1.0, 'n_distinct': 2.0, 'valid_mass': 0.8,
     'n_prompts': 2.0}
    """
    A = _matrix(P)
    agg = A.mean(axis=0)
    v_mass = math.nan if valid is None else float(np.mean(np.asarray(valid, dtype=float)))
    return {
        "entropy_norm": float(_entropy_norm_rows(agg)),
        "n_eff": float(np.exp(_entropy_rows(agg))),
        "top1": float(agg.max()),
        "topk_mass": float(_topk_rows(agg, k)),
        "collision": float((agg**2).sum()),
        "chi2_uniform": float(_chi2_rows(agg)),
        "diversity": diversity(A),
        "n_distinct": float(n_distinct(A, tau)),
        "valid_mass": v_mass,
        "n_prompts": float(A.shape[0]),
    }


# --------------------------------------------------------------------------------------------
# uncertainty


def _boot_indices(n: int, n_boot: int, seed: int, weights: ArrayLike | None = None) -> np.ndarray:
    """(n_boot, n) row indices, resampled with replacement; deterministic given seed."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if weights is None:
        return rng.integers(0, n, size=(n_boot, n))
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be n non-negative finite numbers with a positive sum")
    return rng.choice(n, size=(n_boot, n), replace=True, p=w / w.sum())


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - level
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    P: ArrayLike,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    weights: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(P)``, resampling prompts (rows).

    Each of ``n_boot`` resamples draws ``n`` rows with replacement (with probabilities
    proportional to ``weights`` when given, else uniformly) and evaluates ``statistic`` on the
    resampled matrix; non-finite values are dropped. Deterministic given ``seed``; with the
    same seed it uses the same resamples as :func:`bootstrap_order_parameters`.

    >>> P = [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]]
    >>> lo, hi = bootstrap_ci(P, lambda X: top1(aggregate(X)), n_boot=200)
    >>> lo <= top1(aggregate(P)) <= hi
    True
    """
    A = _matrix(P)
    idx = _boot_indices(A.shape[0], n_boot, seed, weights)
    values = np.array([float(statistic(A[i])) for i in idx])
    return _percentile_interval(values, level)


def bootstrap_order_parameters(
    P: ArrayLike,
    valid: ArrayLike | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    k: int = 3,
    tau: float = 0.1,
    n_boot_distinct: int = N_BOOT_DISTINCT,
) -> dict[str, tuple[float, float, float]]:
    """``{name: (point, lo, hi)}`` for every order parameter: a bias-corrected percentile
    bootstrap over prompts (see :func:`_bias_corrected_interval`).

    Vectorised: all resampled aggregates are one matrix product. ``n_distinct`` needs one
    clustering per resample, so its interval uses only the first ``n_boot_distinct`` (default
    200) of the same resamples, on distances computed once. Resampling with replacement can
    only lose distinct rows, so the ``n_distinct`` interval leans low. ``valid_mass`` is
    resampled together with the rows (NaN when ``valid`` is None); ``n_prompts`` is constant.

    >>> P = [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.5, 0.4, 0.1], [0.7, 0.2, 0.1]]
    >>> b = bootstrap_order_parameters(P, n_boot=200)
    >>> point, lo, hi = b["entropy_norm"]
    >>> lo <= point <= hi, b["n_prompts"]
    (True, (4.0, 4.0, 4.0))
    """
    A = _matrix(P)
    n, K = A.shape
    point = order_parameters(A, valid=valid, k=k)
    if tau != 0.1:
        point["n_distinct"] = float(n_distinct(A, tau))
    idx = _boot_indices(n, n_boot, seed)
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    W = counts / n  # (n_boot, n) resampling weights; row b gives the b-th resample's mean
    agg = W @ A
    H_agg = _entropy_rows(agg)
    m = min(n, K)
    if m < 2:
        div = np.zeros(n_boot)
    else:
        gjs = np.maximum(H_agg - W @ _entropy_rows(A), 0.0)
        div = np.clip(gjs / math.log(m), 0.0, 1.0)
    boot: dict[str, np.ndarray] = {
        "entropy_norm": _entropy_norm_rows(agg),
        "n_eff": np.exp(H_agg),
        "top1": agg.max(axis=1),
        "topk_mass": _topk_rows(agg, k),
        "collision": (agg**2).sum(axis=1),
        "chi2_uniform": _chi2_rows(agg),
        "diversity": div,
    }
    D = _pairwise_js_distance(A)
    boot["n_distinct"] = np.array(
        [_n_clusters(D[np.ix_(u, u)], tau) for u in (np.unique(r) for r in idx[:n_boot_distinct])],
        dtype=float,
    )
    if valid is not None:
        v = np.asarray(valid, dtype=float)
        if v.shape != (n,):
            raise ValueError(f"valid must have one entry per prompt ({n}), got shape {v.shape}")
        boot["valid_mass"] = W @ v
    else:
        boot["valid_mass"] = np.full(n_boot, math.nan)
    boot["n_prompts"] = np.full(n_boot, float(n))
    return {name: (point[name], *_bias_corrected_interval(point[name], boot[name], level, name)) for name in point}


_UNIT = {"entropy_norm", "top1", "topk_mass", "collision", "diversity", "valid_mass"}


def _bias_corrected_interval(point: float, reps: np.ndarray, level: float, name: str = "") -> tuple[float, float]:
    """The percentile interval shifted by the bootstrap's estimate of bias (mean of the
    replicates minus the point), clipped to the parameter's range.

    Plug-in entropies, diversity and n_distinct are biased under resampling with replacement
    (duplicated prompts look less diverse), so a plain percentile interval can exclude its own
    point estimate; the shift removes that first-order bias.

    >>> reps = np.array([0.4, 0.45, 0.5, 0.55, 0.6])
    >>> tuple(round(x, 3) for x in _bias_corrected_interval(0.7, reps, 0.9, "diversity"))
    (0.61, 0.79)
    """
    lo, hi = _percentile_interval(reps, level)
    finite = reps[np.isfinite(reps)]
    if finite.size and math.isfinite(point) and math.isfinite(lo):
        bias = float(finite.mean()) - point
        lo, hi = lo - bias, hi - bias
    lo, hi = max(lo, 0.0), hi
    if name in _UNIT:
        hi = min(hi, 1.0)
    if name == "n_distinct":
        lo = max(lo, 1.0)
    return lo, hi


def dirichlet_ci(
    counts: ArrayLike,
    level: float = 0.95,
    n_draws: int = 4000,
    seed: int = 0,
    prior: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean and per-option equal-tailed credible interval of a multinomial.

    Posterior ``Dirichlet(counts + prior)`` (Jeffreys prior 0.5 by default). Each option's
    marginal is ``Beta(a_i, a_0 - a_i)``, so the interval is computed exactly from Beta
    quantiles; ``n_draws`` and ``seed`` are kept for interface stability and do not change
    the result. Returns ``(mean, lo, hi)``, each of shape ``(K,)``.

    >>> mean, lo, hi = dirichlet_ci([30, 10, 0])
    >>> mean.round(4).tolist()
    [0.7349, 0.253, 0.012]
    >>> bool(np.all(lo <= mean)) and bool(np.all(mean <= hi))
    True
    """
    c = _dist(counts, "counts")
    if np.any(c < 0) or not np.isfinite(c).all() or prior < 0:
        raise ValueError("counts and prior must be finite and non-negative")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = c + prior
    a0 = float(a.sum())
    if a0 <= 0:
        raise ValueError("posterior undefined: no counts and prior == 0")
    mean = a / a0
    b = a0 - a
    alpha = 1.0 - level
    lo = np.empty_like(mean)
    hi = np.empty_like(mean)
    for i in range(a.size):
        if a[i] <= 0:  # degenerate at 0
            lo[i] = hi[i] = 0.0
        elif b[i] <= 0:  # degenerate at 1
            lo[i] = hi[i] = 1.0
        else:
            lo[i], hi[i] = stats.beta.ppf([alpha / 2, 1 - alpha / 2], a[i], b[i])
    return mean, lo, hi


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals overlap (touching counts as overlap).

    An interval with a NaN end is treated as overlapping everything, so a missing interval
    never supports a claim of separation.

    >>> intervals_overlap((0.1, 0.3), (0.25, 0.5)), intervals_overlap((0.1, 0.2), (0.3, 0.4))
    (True, False)
    """
    a_lo, a_hi = sorted(float(x) for x in a)
    b_lo, b_hi = sorted(float(x) for x in b)
    if any(math.isnan(x) for x in (a_lo, a_hi, b_lo, b_hi)):
        return True
    return a_lo <= b_hi and b_lo <= a_hi


# --------------------------------------------------------------------------------------------
# relations between checkpoints


@dataclass(frozen=True)
class SeedMatch:
    """Result of :func:`seed_match`: the closest base distribution and its significance."""

    index: int
    distance: float
    p_value: float
    null_distances: np.ndarray


def seed_match(q: ArrayLike, P_base: ArrayLike, n_perm: int = 1000, seed: int = 0) -> SeedMatch:
    """Find the base prompt distribution closest to ``q`` and test the match.

    ``index = argmin_i JSD(q, P_base[i])``, ``distance = sqrt(JSD(q, P_base[index]))``.

    Permutation null: each of ``n_perm`` draws applies ONE random permutation of the K option
    columns to every base distribution and records the minimum distance from ``q`` over the
    permuted rows. ``p_value = (1 + #{null <= distance}) / (n_perm + 1)`` (ties within
    1e-12 nats of JSD count as ``<=``). The null asks whether the base repertoire matches ``q``
    better than it would with option identities scrambled: a small p-value says the match is
    about *which* options carry the mass, not just about the shape of the distribution
    (a ``q`` whose shape alone, e.g. uniform, explains the match gets a large p-value).

    >>> P_base = [[0.7, 0.2, 0.1, 0.0], [0.0, 0.1, 0.3, 0.6], [0.25, 0.25, 0.25, 0.25]]
    >>> m = seed_match([0.68, 0.22, 0.1, 0.0], P_base, n_perm=200)
    >>> m.index, round(m.distance, 2), m.p_value < 0.2
    (0, 0.02, True)
    """
    qq = _dist(q, "q")
    B = _matrix(P_base, "P_base")
    n, K = B.shape
    if qq.shape != (K,):
        raise ValueError(f"q has {qq.size} options, P_base has {K}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    js = _js_rows(qq, B)
    index = int(np.argmin(js))
    seed_js = float(js[index])
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, K)), axis=1)
    null_js = np.empty(n_perm)
    chunk = max(1, 1_000_000 // (n * K))
    for start in range(0, n_perm, chunk):
        Bp = B[:, perms[start : start + chunk]]  # (n, chunk, K)
        null_js[start : start + chunk] = _js_rows(qq, Bp).min(axis=0)
    p_value = (1.0 + np.count_nonzero(null_js <= seed_js + _JS_TIE_TOL)) / (n_perm + 1.0)
    return SeedMatch(index, math.sqrt(seed_js), float(p_value), np.sqrt(null_js))


def nucleation_confirmed(match: SeedMatch, tau: float = 0.1, alpha: float = 0.01) -> bool:
    """A nucleation is confirmed when ``distance <= tau`` and ``p_value < alpha``.

    >>> nucleation_confirmed(SeedMatch(0, 0.05, 0.001, np.array([0.4])))
    True
    """
    return bool(match.distance <= tau and match.p_value < alpha)


def support_set(q: ArrayLike, cover: float = 0.9) -> np.ndarray:
    """Indices of the smallest set of options holding ``>= cover`` of ``q``.

    Options are taken by decreasing probability, ties by index (stable sort); the indices come
    back in that order. A tolerance of 1e-12 absorbs float noise in the running sum.

    >>> support_set([0.1, 0.5, 0.1, 0.3]).tolist()
    [1, 3, 0]
    """
    qq = _dist(q, "q")
    if not 0.0 < cover <= 1.0:
        raise ValueError(f"cover must be in (0, 1], got {cover}")
    order = np.argsort(-qq, kind="stable")
    csum = np.cumsum(qq[order])
    reached = np.nonzero(csum >= cover - 1e-12)[0]
    size = int(reached[0]) + 1 if reached.size else qq.size
    return order[:size]


def retention(q_sft: ArrayLike, q_rl: ArrayLike, cover: float = 0.9) -> float:
    """Mass ``q_rl(S)`` that the later checkpoint keeps on the SFT support ``S``.

    ``S = support_set(q_sft, cover)``. Settling is confirmed when this is ``>= 0.9``.

    >>> round(retention([0.6, 0.35, 0.05, 0.0], [0.3, 0.3, 0.0, 0.4]), 4)
    0.6
    """
    a, b = _dist(q_sft, "q_sft"), _dist(q_rl, "q_rl")
    if a.shape != b.shape:
        raise ValueError(f"q_sft and q_rl differ in shape: {a.shape} vs {b.shape}")
    return float(b[support_set(a, cover)].sum())


def new_mass(q_sft: ArrayLike, q_rl: ArrayLike, cover: float = 0.9) -> float:
    """``1 - retention``: mass the later checkpoint puts outside the SFT support.

    >>> round(new_mass([0.6, 0.35, 0.05, 0.0], [0.3, 0.3, 0.0, 0.4]), 4)
    0.4
    """
    return 1.0 - retention(q_sft, q_rl, cover)


def redistribution(q_sft: ArrayLike, q_rl: ArrayLike) -> float:
    """How far the later checkpoint moved: ``sqrt(JSD(q_sft, q_rl))``.

    >>> redistribution([0.5, 0.5], [0.5, 0.5])
    0.0
    """
    return js_distance(q_sft, q_rl)


# --------------------------------------------------------------------------------------------
# transition statistics along a training run


def _series(steps: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray, str]:
    t = np.asarray(steps, dtype=float).ravel()
    v = np.asarray(y, dtype=float).ravel()
    if t.shape != v.shape:
        raise ValueError(f"steps and y differ in length: {t.size} vs {v.size}")
    keep = np.isfinite(t) & np.isfinite(v)
    note = "" if keep.all() else f"dropped {int((~keep).sum())} non-finite point(s)"
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    return t[order], v[order], note


def _too_short(n: int, note: str, **extra: Any) -> dict[str, Any] | None:
    if n >= 4:
        return None
    msg = f"need at least 4 steps, got {n}" + (f"; {note}" if note else "")
    return {**extra, "note": msg}


def fit_piecewise_linear(steps: ArrayLike, y: ArrayLike, n_grid: int = 400) -> dict[str, Any]:
    """Best continuous two-segment linear fit (least squares).

    Model ``y = a + b t + d max(t - c, 0)``; the breakpoint ``c`` is searched over a grid of
    ``n_grid`` points plus every observed step between the 2nd and the 2nd-last step.
    Returns ``breakpoint``, ``rss``, ``fitted`` (at the sorted steps), ``slopes`` (before,
    after), ``max_slope`` (largest absolute slope) and ``note``. Fewer than 4 finite points
    give NaNs and a note.

    >>> t = np.arange(0, 101, 5.0)
    >>> fit = fit_piecewise_linear(t, np.where(t < 40, 1.0, 1.0 - 0.02 * (t - 40)))
    >>> round(fit["breakpoint"], 1), round(fit["max_slope"], 4), fit["rss"] < 1e-12
    (40.0, 0.02, True)
    """
    t, v, note = _series(steps, y)
    short = _too_short(
        t.size, note, breakpoint=math.nan, rss=math.nan, fitted=np.full(t.size, math.nan),
        slopes=(math.nan, math.nan), max_slope=math.nan,
    )
    if short is not None:
        return short
    t0, span = float(t[0]), float(t[-1] - t[0]) or 1.0
    u = (t - t0) / span  # scaled time for conditioning
    grid = np.union1d(np.linspace(u[1], u[-2], n_grid), u[1:-1])
    best = (math.inf, math.nan, None)
    ones = np.ones_like(u)
    for c in grid:
        X = np.column_stack([ones, u, np.maximum(u - c, 0.0)])
        coef, *_ = np.linalg.lstsq(X, v, rcond=None)
        rss = float(((X @ coef - v) ** 2).sum())
        if rss < best[0] - 1e-15:
            best = (rss, float(c), coef)
    rss, c, coef = best
    X = np.column_stack([ones, u, np.maximum(u - c, 0.0)])
    slopes = (float(coef[1] / span), float((coef[1] + coef[2]) / span))
    return {
        "breakpoint": float(t0 + c * span),
        "rss": rss,
        "fitted": X @ coef,
        "slopes": slopes,
        "max_slope": max(abs(slopes[0]), abs(slopes[1])),
        "note": note,
    }


def _logistic(u: np.ndarray, a: float, b: float, u0: float, w: float) -> np.ndarray:
    return a + b * special.expit((u - u0) / w)


def fit_logistic(steps: ArrayLike, y: ArrayLike) -> dict[str, Any]:
    """Least-squares fit of ``y = a + b / (1 + exp(-(t - t0) / w))`` (scipy ``curve_fit``).

    Robust: several initial guesses (midpoint crossing and quartiles of the step range, two
    widths), ``t0`` bounded to the observed range and ``w > 0``; the best fit is kept. If no
    fit converges, ``rss`` is ``inf`` and ``note`` says why. Returns ``a``, ``b``, ``t0``,
    ``w``, ``rss``, ``fitted``, ``max_slope = |b| / (4 w)`` and ``note``.

    >>> t = np.arange(0, 101, 2.0)
    >>> fit = fit_logistic(t, 0.2 + 0.6 / (1 + np.exp(-(t - 50) / 5)))
    >>> round(fit["t0"], 2), round(fit["w"], 2), round(fit["max_slope"], 4)
    (50.0, 5.0, 0.03)
    """
    t, v, note = _series(steps, y)
    nan_fit = dict(
        a=math.nan, b=math.nan, t0=math.nan, w=math.nan, fitted=np.full(t.size, math.nan),
        max_slope=math.nan,
    )
    short = _too_short(t.size, note, rss=math.inf, **nan_fit)
    if short is not None:
        return short
    t_first, span = float(t[0]), float(t[-1] - t[0]) or 1.0
    u = (t - t_first) / span
    n_edge = max(1, t.size // 10)
    a0 = float(v[:n_edge].mean())
    b0 = float(v[-n_edge:].mean()) - a0
    if abs(b0) < 1e-12:
        b0 = float(np.ptp(v)) or 1e-3
    mid = a0 + b0 / 2
    crossed = np.nonzero((v - mid) * np.sign(b0) >= 0)[0]
    u_mid = float(u[crossed[0]]) if crossed.size else 0.5
    scale = max(float(np.ptp(v)), 1e-12)
    bounds = ([-np.inf, -np.inf, 0.0, 1e-4], [np.inf, np.inf, 1.0, 10.0])
    best: tuple[float, np.ndarray | None] = (math.inf, None)
    errors: list[str] = []
    for u0 in dict.fromkeys([u_mid, 0.5, 0.25, 0.75]):
        for w0 in (0.05, 0.2):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    popt, _ = optimize.curve_fit(
                        _logistic, u, v, p0=[a0, b0, u0, w0], bounds=bounds, maxfev=5000,
                        x_scale=[scale, scale, 0.1, 0.1],
                    )
            except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
                errors.append(type(exc).__name__)
                continue
            rss = float(((_logistic(u, *popt) - v) ** 2).sum())
            if np.isfinite(rss) and rss < best[0]:
                best = (rss, popt)
    rss, popt = best
    if popt is None:
        msg = "logistic fit failed: " + ", ".join(sorted(set(errors)) or ["no finite fit"])
        return {**nan_fit, "rss": math.inf, "note": "; ".join(filter(None, [note, msg]))}
    a, b, u0, w = (float(x) for x in popt)
    return {
        "a": a,
        "b": b,
        "t0": float(t_first + u0 * span),
        "w": float(w * span),
        "rss": rss,
        "fitted": _logistic(u, *popt),
        "max_slope": float(abs(b) / (4 * w * span)),
        "note": note,
    }


def transition_statistics(
    steps: ArrayLike, y: ArrayLike, spread: ArrayLike | None = None
) -> dict[str, Any]:
    """Change point and sharpness of an order parameter (e.g. ``diversity``) along training.

    Fits :func:`fit_piecewise_linear` and :func:`fit_logistic` (4 parameters each) and keeps
    the one with the lower residual sum of squares (ties go to the piecewise fit):
    ``transition_step`` is its breakpoint or ``t0``, ``method`` is ``'piecewise'`` or
    ``'logistic'``, and both ``rss_piecewise`` and ``rss_logistic`` are reported.
    ``sharpness`` = max |slope| of the chosen fitted curve / ``|fit(last) - fit(first)|``
    (units 1/step; a straight line over the whole run gives ``1 / (t_last - t_first)``); the
    observed total change is used when the fitted one is ~0, and ``sharpness`` is NaN when
    there is no total change; a flat series also has a NaN ``transition_step``.
    ``susceptibility_peak_step`` is the step where ``spread`` (across-prompt variance of
    ``entropy_norm``, one value per step) peaks, NaN when ``spread`` is None. Fewer than 4
    finite points give NaNs and a ``note``.

    >>> t = np.arange(0, 101, 2.0)
    >>> y, spread = 1 / (1 + np.exp((t - 50) / 4)), np.exp(-((t - 48) ** 2))
    >>> out = transition_statistics(t, y, spread=spread)
    >>> out["method"], round(out["transition_step"]), out["susceptibility_peak_step"]
    ('logistic', 50, 48.0)
    """
    t_raw = np.asarray(steps, dtype=float).ravel()
    peak = math.nan
    if spread is not None:
        s = np.asarray(spread, dtype=float).ravel()
        if s.shape != t_raw.shape:
            raise ValueError(f"spread has {s.size} values for {t_raw.size} steps")
        ok = np.isfinite(s) & np.isfinite(t_raw)
        if ok.any():
            peak = float(t_raw[ok][np.argmax(s[ok])])
    t, v, note = _series(steps, y)
    out: dict[str, Any] = {
        "transition_step": math.nan,
        "method": None,
        "rss_piecewise": math.nan,
        "rss_logistic": math.nan,
        "sharpness": math.nan,
        "max_slope": math.nan,
        "total_change": math.nan,
        "susceptibility_peak_step": peak,
        "fitted": np.full(t.size, math.nan),
        "note": note,
    }
    short = _too_short(t.size, note)
    if short is not None:
        out["note"] = short["note"]
        return out
    pw, lg = fit_piecewise_linear(t, v), fit_logistic(t, v)
    chosen = lg if lg["rss"] < pw["rss"] else pw
    fitted = chosen["fitted"]
    total = abs(float(fitted[-1] - fitted[0]))
    scale = max(1.0, float(np.abs(v).max()))
    if total <= 1e-12 * scale:
        total = abs(float(v[-1] - v[0]))
    changed = total > 1e-12 * scale
    flat = float(np.ptp(v)) <= 1e-12 * scale
    notes = [lg["note"] if math.isinf(lg["rss"]) else note, "flat series" if flat else ""]
    if not changed and not flat:
        notes.append("no total change: sharpness undefined")
    step = chosen["t0"] if chosen is lg else chosen["breakpoint"]
    out.update(
        transition_step=math.nan if flat else step,
        method="logistic" if chosen is lg else "piecewise",
        rss_piecewise=pw["rss"],
        rss_logistic=lg["rss"],
        sharpness=float(chosen["max_slope"] / total) if changed else math.nan,
        max_slope=float(chosen["max_slope"]),
        total_change=total,
        fitted=fitted,
        note="; ".join(filter(None, notes)),
    )
    return out
