"""Order parameters, basins, relations between checkpoints and their intervals (SCIENCE.md v2).

Pure numpy/scipy functions; no metric reads files or knows about models. Natural logs,
``0 log 0 = 0``, ``d = sqrt(JSD)`` (nats^½).

Conventions: ``p`` is one distribution of shape ``(K,)`` over the task's K options, already
renormalised over the valid options (⊥ removed, see :func:`renormalize`); ``P`` is a prompt
matrix of shape ``(n, K)`` with one such distribution per prompt, and ``families`` gives each
row's family label. Lists are accepted wherever arrays are.

>>> P = [[0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.0, 0.2, 0.8], [0.0, 0.3, 0.7]]
>>> op = order_parameters(P, ["a", "a", "b", "b"])
>>> op["n_basins"], round(op["phi"], 3), round(op["spread"], 3)
(2.0, 0.516, 0.35)

The transition and sweep statistics of training runs live in :mod:`crystallab.transitions`.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

__all__ = [
    "EPSILON",
    "V_MIN",
    "Basins",
    "Coordinate",
    "SeedTest",
    "Structure",
    "aggregate",
    "attraction_index",
    "basins",
    "basins_coded",
    "chi2_uniform",
    "collision",
    "concentration",
    "entropy",
    "draw_families",
    "entropy_norm",
    "excess_retention",
    "h",
    "hierarchical_bootstrap",
    "holm",
    "js_distance",
    "js_divergence",
    "n_basins_of",
    "n_eff",
    "nucleation_coordinate",
    "order_parameters",
    "pairwise_jsd",
    "percentile_interval",
    "phi",
    "phi_from",
    "phi_permutation",
    "redistribution",
    "renormalize",
    "retention",
    "seed_p",
    "spread",
    "support_set",
    "top1",
    "topk_mass",
]

LOG2 = math.log(2.0)
#: Resolution: two distributions closer than this JS distance are treated as the same.
EPSILON = 0.05
#: Prompts with less valid mass than this are listed and left out of every order parameter.
V_MIN = 0.2
#: Valid mass at or below which the renormalised distribution is undefined.
MIN_VALID_MASS = 1e-12
#: Exact enumeration of relabellings up to this many; above it, random draws.
MAX_EXACT = 2000
#: Random relabellings drawn when exact enumeration is too large.
N_RANDOM = 1999
#: Fewer distinct relabellings than this and a permutation p-value cannot reach 0.05.
MIN_TESTABLE = 20
_TIE = 1e-12


# --------------------------------------------------------------------------------------------
# validation and row kernels


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


def _entropy_rows(A: np.ndarray) -> np.ndarray:
    return special.entr(A).sum(axis=-1)


def _entropy_norm_rows(A: np.ndarray) -> np.ndarray:
    K = A.shape[-1]
    if K == 1:
        return np.zeros(A.shape[:-1])
    return np.clip(_entropy_rows(A) / math.log(K), 0.0, 1.0)


def _js_rows(p: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """JSD (nats) between p and each distribution along the last axis of Q (broadcasting).

    Written as the mean KL to the midpoint so that identical inputs give exactly 0.
    """
    m = 0.5 * (p + Q)
    js = 0.5 * (special.rel_entr(p, m).sum(axis=-1) + special.rel_entr(Q, m).sum(axis=-1))
    return np.clip(js, 0.0, LOG2)


def _families(families: Sequence[str] | None, n: int) -> np.ndarray:
    """Integer family codes; ``None`` or a single family means every prompt is its own family."""
    if families is None:
        return np.arange(n)
    f = list(families)
    if len(f) != n:
        raise ValueError(f"families has {len(f)} labels for {n} prompts")
    names = list(dict.fromkeys(f))
    if len(names) == 1:
        return np.arange(n)
    return np.array([names.index(x) for x in f])


# --------------------------------------------------------------------------------------------
# single distributions


def renormalize(p_with_other: ArrayLike) -> tuple[np.ndarray | None, float]:
    """Split a distribution over ``K`` options plus ⊥ (last entry) into ``(p̃, v)``.

    ``v`` is the valid mass and ``p̃`` the distribution renormalised over the options; ``p̃`` is
    ``None`` when ``v <= 1e-12``. Tiny negative entries from log-space arithmetic are 0.

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
    """Shannon entropy in nats.

    >>> round(entropy([0.5, 0.5, 0.0]), 4)
    0.6931
    """
    return float(_entropy_rows(_dist(p)))


def entropy_norm(p: ArrayLike) -> float:
    """``H(p) / log K`` in ``[0, 1]`` (0.0 when ``K == 1``).

    >>> entropy_norm([0.25] * 4), entropy_norm([1.0, 0.0])
    (1.0, 0.0)
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


def topk_mass(p: ArrayLike, k: int = 3) -> float:
    """Mass of the ``k`` most likely options (``k`` capped at ``K``).

    >>> round(topk_mass([0.2, 0.7, 0.1], 2), 4)
    0.9
    """
    a = _dist(p)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(np.sort(a)[::-1][: min(int(k), a.size)].sum())


def collision(p: ArrayLike) -> float:
    """Collision probability ``sum p²``.

    >>> collision([0.5, 0.5, 0.0])
    0.5
    """
    return float((_dist(p) ** 2).sum())


def chi2_uniform(p: ArrayLike) -> float:
    """Pearson χ² per draw against uniform, ``K * sum (p - 1/K)²`` (0 uniform, K-1 one-hot).

    >>> round(chi2_uniform([1.0, 0.0, 0.0, 0.0]), 4)
    3.0
    """
    a = _dist(p)
    return float(a.size * ((a - 1.0 / a.size) ** 2).sum())


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in nats (symmetric, at most ``log 2``).

    >>> round(js_divergence([1.0, 0.0], [0.0, 1.0]), 4) == round(math.log(2), 4)
    True
    """
    a, b = _dist(p), _dist(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q differ in shape: {a.shape} vs {b.shape}")
    return float(_js_rows(a, b))


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon distance ``sqrt(JSD)``, a metric.

    >>> round(js_distance([1.0, 0.0], [0.5, 0.5]), 4)
    0.4645
    """
    return math.sqrt(js_divergence(p, q))


def aggregate(P: ArrayLike) -> np.ndarray:
    """The ensemble mean ``p̄ = mean_i P_i``.

    >>> aggregate([[1.0, 0.0], [0.0, 1.0]]).tolist()
    [0.5, 0.5]
    """
    return _matrix(P).mean(axis=0)


def concentration(p: ArrayLike, k: int = 3) -> dict[str, float]:
    """The concentration figures of one (aggregate) distribution.

    >>> {k: round(v, 3) for k, v in concentration([0.5, 0.5, 0.0, 0.0]).items()}
    {'top1': 0.5, 'topk_mass': 1.0, 'collision': 0.5, 'n_eff': 2.0, 'chi2_uniform': 1.0}
    """
    return {
        "top1": top1(p),
        "topk_mass": topk_mass(p, k),
        "collision": collision(p),
        "n_eff": n_eff(p),
        "chi2_uniform": chi2_uniform(p),
    }


# --------------------------------------------------------------------------------------------
# ensembles: h, spread, phi


def pairwise_jsd(P: ArrayLike) -> np.ndarray:
    """Symmetric ``(n, n)`` matrix of JSD (nats) between rows, zero diagonal.

    >>> pairwise_jsd([[1.0, 0.0], [0.0, 1.0]]).round(4).tolist()
    [[0.0, 0.6931], [0.6931, 0.0]]
    """
    A = _matrix(P)
    n = A.shape[0]
    D = np.zeros((n, n))
    for i in range(n - 1):
        D[i, i + 1 :] = _js_rows(A[i], A[i + 1 :])
    return D + D.T


def h(P: ArrayLike) -> float:
    """Mean over prompts of ``H(p̃_i) / log K``: how spread each answer is.

    >>> h([[0.5, 0.5], [1.0, 0.0]])
    0.5
    """
    return float(_entropy_norm_rows(_matrix(P)).mean())


def spread(P: ArrayLike, D: np.ndarray | None = None) -> float:
    """Mean JSD over pairs ``i < j``: how much the prompt moves the answer (NaN for one prompt).

    A U-statistic, so its expectation does not depend on the number of prompts.

    >>> round(spread([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), 4)
    0.4621
    """
    A = _matrix(P)
    n = A.shape[0]
    if n < 2:
        return math.nan
    D = pairwise_jsd(A) if D is None else D
    return float(D[np.triu_indices(n, 1)].mean())


def phi_from(D: np.ndarray, codes: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """``phi`` from a JSD matrix and integer family codes; ``exclude`` marks pairs to leave out
    (the bootstrap drops pairs of one prompt drawn twice, whose JSD is 0 by construction).

    >>> D = pairwise_jsd([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(phi_from(D, np.array([0, 0, 1])), 4)
    0.6931
    """
    iu = _triu(codes.size)
    d = D[iu]
    same = codes[iu[0]] == codes[iu[1]]
    if exclude is not None:
        keep = ~exclude[iu]
        same, d = same[keep], d[keep]
    return float(_phi_many(d, same[None, :])[0])


def _phi_many(d: np.ndarray, same: np.ndarray) -> np.ndarray:
    """phi for many labellings at once: ``same`` is (m, n_pairs), True for within-family pairs."""
    n_same = same.sum(axis=1)
    n_diff = same.shape[1] - n_same
    with np.errstate(invalid="ignore", divide="ignore"):
        within = (same * d).sum(axis=1) / n_same
        between = ((~same) * d).sum(axis=1) / n_diff
    out = between - within
    out[(n_same == 0) | (n_diff == 0)] = np.nan
    return out


_TRIU: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _triu(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _TRIU:
        _TRIU[n] = np.triu_indices(n, 1)
    return _TRIU[n]


def phi(P: ArrayLike, families: Sequence[str], D: np.ndarray | None = None) -> float:
    """Context sensitivity: mean JSD over pairs from different families minus the mean over pairs
    from the same family (NaN without both kinds of pair). 0 when only wording matters.

    >>> round(phi([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]], ["a", "a", "b", "b"]), 3)
    0.268
    """
    A = _matrix(P)
    codes = _families(list(families), A.shape[0])
    return phi_from(pairwise_jsd(A) if D is None else D, codes)


def _block_partitions(items: list[int], sizes: list[int]) -> Iterator[list[list[int]]]:
    """Every partition of ``items`` into unlabelled blocks of the given sizes, each once."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for s in sorted(set(sizes)):  # the block holding the first item; equal sizes are one choice
        left = list(sizes)
        left.remove(s)
        for others in itertools.combinations(rest, s - 1):
            remaining = [x for x in rest if x not in others]
            for tail in _block_partitions(remaining, left):
                yield [[first, *others], *tail]


def _n_partitions(sizes: list[int]) -> int:
    n = math.factorial(sum(sizes))
    for s in sizes:
        n //= math.factorial(s)
    for m in Counter(sizes).values():
        n //= math.factorial(m)
    return n


def phi_permutation(
    P: ArrayLike,
    families: Sequence[str],
    *,
    max_exact: int = MAX_EXACT,
    n_random: int = N_RANDOM,
    seed: int = 0,
    D: np.ndarray | None = None,
) -> tuple[float, float, int, bool]:
    """``(phi, phi_p, n_relabellings, exact)``: the permutation p-value of ``phi`` with family
    labels reassigned at random (family sizes kept).

    Distinct relabellings are partitions of the prompts into blocks of the family sizes; they
    are enumerated exactly when there are at most ``max_exact`` (the observed one included, so
    ``p = #{phi' >= phi} / N``), else ``n_random`` random ones (``p = (1 + #) / (1 + n)``).

    >>> P = [[0.9, 0.1], [0.85, 0.15], [0.8, 0.2], [0.1, 0.9], [0.15, 0.85], [0.2, 0.8]]
    >>> value, p, n, exact = phi_permutation(P, list("aaabbb"))
    >>> round(value, 3), round(p, 3), n, exact
    (0.27, 0.1, 10, True)
    """
    A = _matrix(P)
    n = A.shape[0]
    codes = _families(list(families), n)
    D = pairwise_jsd(A) if D is None else D
    observed = phi_from(D, codes)
    sizes = sorted(Counter(codes.tolist()).values(), reverse=True)
    total = _n_partitions(sizes)
    if not math.isfinite(observed):
        return observed, math.nan, total, True
    iu = _triu(n)
    d = D[iu]
    if total <= max_exact:
        C = np.empty((total, n), dtype=int)
        for row, blocks in enumerate(_block_partitions(list(range(n)), sizes)):
            for b, block in enumerate(blocks):
                C[row, block] = b
        v = _phi_many(d, C[:, iu[0]] == C[:, iu[1]])
        return observed, float(np.mean(v >= observed - _TIE)), total, True
    rng = np.random.default_rng(seed)
    C = np.array([rng.permutation(codes) for _ in range(n_random)])
    hits = int((_phi_many(d, C[:, iu[0]] == C[:, iu[1]]) >= observed - _TIE).sum())
    return observed, (1.0 + hits) / (1.0 + n_random), total, False


# --------------------------------------------------------------------------------------------
# families and basins


@dataclass(frozen=True)
class Basins:
    """Family means ``f̄_k`` (F, K), radii ``r_k``, prompt counts, and the basin of each family."""

    names: tuple[str, ...]
    means: np.ndarray
    radii: np.ndarray
    sizes: tuple[int, ...]
    labels: np.ndarray  # basin index (0..n_basins-1) per family, in order of first appearance

    @property
    def n_basins(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def groups(self) -> list[list[str]]:
        """The families of each basin."""
        return [[self.names[i] for i in np.flatnonzero(self.labels == b)] for b in range(self.n_basins)]


def _linkage(means: np.ndarray, radii: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(0.0, pairwise_jsd(means)))
    e = d / (radii[:, None] + radii[None, :])  # a pair may share a cluster only if e <= 1
    np.fill_diagonal(e, 0.0)
    return hierarchy.linkage(squareform(e, checks=False), method="complete")


def _cluster(means: np.ndarray, radii: np.ndarray) -> np.ndarray:
    if means.shape[0] == 1:
        return np.zeros(1, dtype=int)
    raw = hierarchy.fcluster(_linkage(means, radii), t=1.0 + 1e-12, criterion="distance")
    order = list(dict.fromkeys(raw.tolist()))
    return np.array([order.index(x) for x in raw])


def n_basins_of(means: np.ndarray, radii: np.ndarray) -> int:
    """The number of basins alone (the bootstrap's fast path): complete-link merge heights only
    grow, so the clusters at the cut are F minus the merges at height <= 1.

    >>> n_basins_of(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), np.array([0.2, 0.2, 0.05]))
    2
    """
    F = means.shape[0]
    if F == 1:
        return 1
    return F - int((_linkage(means, radii)[:, 2] <= 1.0 + 1e-12).sum())


def basins(P: ArrayLike, families: Sequence[str] | None, eps: float = EPSILON) -> Basins:
    """Family means, radii ``r_k = max(eps, mean_i d(p̃_i, f̄_k))`` and complete-link basins:
    families a and b may share a basin only if ``d(f̄_a, f̄_b) <= r_a + r_b``.

    ``families=None`` (or one family) reads the ensemble prompt by prompt: every prompt is its
    own family with radius ``eps``.

    >>> b = basins([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.15, 0.85]], list("aabbc"))
    >>> b.n_basins, b.groups()
    (2, [['a'], ['b', 'c']])
    """
    A = _matrix(P)
    n = A.shape[0]
    f = list(families) if families is not None else None
    codes = _families(f, n)
    if f is None or len(set(f)) == 1:
        names = tuple(f"prompt-{i}" for i in range(n))
    else:
        names = tuple(dict.fromkeys(f))
    return basins_coded(A, codes, names, eps)


def basins_coded(A: np.ndarray, codes: np.ndarray, names: Sequence[str], eps: float = EPSILON) -> Basins:
    """:func:`basins` with integer family codes ``0..F-1`` (the bootstrap's entry point).

    >>> basins_coded(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), ["x", "y"]).n_basins
    2
    """
    F = int(codes.max()) + 1
    means = np.stack([A[codes == k].mean(axis=0) for k in range(F)])
    radii = np.array([max(eps, float(np.sqrt(_js_rows(means[k], A[codes == k])).mean())) for k in range(F)])
    sizes = tuple(int((codes == k).sum()) for k in range(F))
    return Basins(tuple(names), means, radii, sizes, _cluster(means, radii))


def order_parameters(
    P: ArrayLike, families: Sequence[str] | None, eps: float = EPSILON, k: int = 3
) -> dict[str, float]:
    """Every order parameter of one ensemble: ``h``, ``entropy_norm`` (of ``p̄``), ``spread``,
    ``phi``, ``n_basins`` and the concentration figures of ``p̄``.

    >>> op = order_parameters([[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
    >>> op["h"], op["entropy_norm"], op["n_basins"], math.isnan(op["phi"])
    (0.0, 1.0, 2.0, True)
    """
    A = _matrix(P)
    D = pairwise_jsd(A)
    codes = _families(None if families is None else list(families), A.shape[0])
    agg = A.mean(axis=0)
    return {
        "h": h(A),
        "entropy_norm": float(_entropy_norm_rows(agg)),
        "spread": spread(A, D),
        "phi": phi_from(D, codes),
        "n_basins": float(basins(A, families, eps).n_basins),
        **concentration(agg, k),
    }


# --------------------------------------------------------------------------------------------
# relations between checkpoints


@dataclass(frozen=True)
class Coordinate:
    """The nucleation coordinate of ``q`` against a root's families."""

    d: np.ndarray  # d(q, f̄_k) per family
    z: np.ndarray  # d_k / r_k
    k_star: int
    margin: float  # z_(2) - z_(1); NaN with one family

    @property
    def inside(self) -> bool:
        return bool(self.z[self.k_star] <= 1.0)


def nucleation_coordinate(q: ArrayLike, means: ArrayLike, radii: ArrayLike) -> Coordinate:
    """``d_k = d(q, f̄_k)``, ``z_k = d_k / r_k``, ``k* = argmin z``, margin ``z_(2) - z_(1)``.

    >>> c = nucleation_coordinate([0.85, 0.15], [[0.9, 0.1], [0.1, 0.9]], [0.05, 0.05])
    >>> c.k_star, round(float(c.z[0]), 2), c.inside
    (0, 1.07, False)
    """
    qq = _dist(q, "q")
    Fm = _matrix(means, "means")
    r = np.asarray(radii, dtype=float)
    d = np.sqrt(_js_rows(qq, Fm))
    z = d / r
    order = np.argsort(z, kind="stable")
    margin = float(z[order[1]] - z[order[0]]) if z.size > 1 else math.nan
    return Coordinate(d, z, int(order[0]), margin)


@dataclass(frozen=True)
class SeedTest:
    """``seed_p``: how often a relabelled ``q`` lands as deep in some basin as ``q`` itself."""

    p: float | None  # None when not testable
    n_relabellings: int
    exact: bool
    testable: bool


def _distinct_relabellings(q: np.ndarray, limit: int) -> tuple[int, list[tuple[int, ...]] | None]:
    """The number of distinct ``πq`` other than ``q`` and, when at most ``limit``, the
    permutations giving them (one each)."""
    keys = np.round(q, 12)
    counts = Counter(keys.tolist())
    total = math.factorial(q.size)
    for c in counts.values():
        total //= math.factorial(c)
    total -= 1
    if total > limit:
        return total, None
    seen: set[tuple[float, ...]] = {tuple(keys.tolist())}
    perms: list[tuple[int, ...]] = []
    for perm in _multiset_perms(keys):
        key = tuple(keys[list(perm)].tolist())
        if key not in seen:
            seen.add(key)
            perms.append(perm)
    return total, perms


def _multiset_perms(keys: np.ndarray) -> Iterator[tuple[int, ...]]:
    """Index permutations giving each distinct arrangement of ``keys`` once."""
    groups: dict[float, list[int]] = {}
    for i, v in enumerate(keys.tolist()):
        groups.setdefault(v, []).append(i)
    values = list(groups)
    pools = {v: list(idx) for v, idx in groups.items()}
    K = keys.size
    out: list[int] = []

    def rec(pos: int) -> Iterator[tuple[int, ...]]:
        if pos == K:
            yield tuple(out)
            return
        for v in values:
            if pools[v]:
                out.append(pools[v].pop())
                yield from rec(pos + 1)
                pools[v].append(out.pop())

    yield from rec(0)


def seed_p(
    q: ArrayLike,
    means: ArrayLike,
    radii: ArrayLike,
    *,
    max_exact: int = MAX_EXACT,
    n_random: int = N_RANDOM,
    min_testable: int = MIN_TESTABLE,
    seed: int = 0,
) -> SeedTest:
    """The fraction of distinct option relabellings ``π`` of ``q`` (identity and every ``π`` that
    leaves ``q`` unchanged excluded) with ``min_k z_k(πq) <= z_k*(q)``.

    Exact when there are at most ``max_exact`` distinct relabellings, else ``n_random`` random
    permutations (redrawn when they give ``q`` back); not testable below ``min_testable``.

    >>> means, radii = [[0.6, 0.2, 0.1, 0.07, 0.03], [0.03, 0.07, 0.1, 0.2, 0.6]], [0.05, 0.05]
    >>> t = seed_p([0.58, 0.22, 0.1, 0.07, 0.03], means, radii)
    >>> t.testable, t.n_relabellings, round(t.p, 4)
    (True, 119, 0.0084)
    >>> seed_p([0.6, 0.3, 0.1], [[0.6, 0.3, 0.1]], [0.05]).testable
    False
    """
    qq = _dist(q, "q")
    Fm = _matrix(means, "means")
    r = np.asarray(radii, dtype=float)
    z_obs = float((np.sqrt(_js_rows(qq, Fm)) / r).min())
    total, perms = _distinct_relabellings(qq, max_exact)
    if total < min_testable:
        return SeedTest(None, total, perms is not None, False)

    def deeper(Q: np.ndarray) -> np.ndarray:  # (m, K) relabelled q's -> whether min z <= z_obs
        z = np.sqrt(_js_rows(Q[:, None, :], Fm[None, :, :])) / r[None, :]
        return z.min(axis=1) <= z_obs + _TIE

    if perms is not None:
        Q = qq[np.array(perms)]
        return SeedTest(float(deeper(Q).mean()), total, True, True)
    rng = np.random.default_rng(seed)
    keys = np.round(qq, 12)
    rows: list[np.ndarray] = []
    while len(rows) < n_random:
        perm = rng.permutation(qq.size)
        if not np.array_equal(keys[perm], keys):
            rows.append(qq[perm])
    return SeedTest(float(deeper(np.array(rows)).mean()), total, False, True)


def attraction_index(q: ArrayLike, t: ArrayLike, f_star: ArrayLike) -> float:
    """``A = (d(q, t) - d(q, f̄_k*)) / d(t, f̄_k*)``: > 0 when the model landed closer to the base
    basin than to its training answers ``t`` (NaN when ``t`` is the basin itself).

    >>> round(attraction_index([0.8, 0.2], [0.5, 0.5], [0.9, 0.1]), 3)
    0.393
    """
    base = js_distance(t, f_star)
    if base <= _TIE:
        return math.nan
    return (js_distance(q, t) - js_distance(q, f_star)) / base


def support_set(q: ArrayLike, cover: float = 0.9) -> np.ndarray:
    """Indices of the smallest option set holding ``>= cover`` of ``q`` (by decreasing mass).

    >>> support_set([0.1, 0.5, 0.1, 0.3]).tolist()
    [1, 3, 0]
    """
    qq = _dist(q, "q")
    if not 0.0 < cover <= 1.0:
        raise ValueError(f"cover must be in (0, 1], got {cover}")
    order = np.argsort(-qq, kind="stable")
    reached = np.nonzero(np.cumsum(qq[order]) >= cover - 1e-12)[0]
    return order[: int(reached[0]) + 1 if reached.size else qq.size]


def retention(q_parent: ArrayLike, q_child: ArrayLike, cover: float = 0.9) -> float:
    """``q_child(S)``, S the parent's support set.

    >>> round(retention([0.6, 0.35, 0.05, 0.0], [0.3, 0.3, 0.0, 0.4]), 4)
    0.6
    """
    a, b = _dist(q_parent, "q_parent"), _dist(q_child, "q_child")
    if a.shape != b.shape:
        raise ValueError(f"q_parent and q_child differ in shape: {a.shape} vs {b.shape}")
    return float(b[support_set(a, cover)].sum())


def excess_retention(q_parent: ArrayLike, q_child: ArrayLike, cover: float = 0.9) -> float:
    """``ρ = (q_child(S) - u(S)) / (1 - u(S))``: 0 for a uniform child, 1 for all mass on S
    (NaN when S is every option, which leaves nothing to escape to).

    >>> excess_retention([0.5, 0.45, 0.05, 0.0], [0.25] * 4), excess_retention([0.5, 0.45, 0, 0], [0.6, 0.4, 0, 0])
    (0.0, 1.0)
    """
    a = _dist(q_parent, "q_parent")
    S = support_set(a, cover)
    u = S.size / a.size
    if u >= 1.0:
        return math.nan
    return (retention(a, q_child, cover) - u) / (1.0 - u)


def redistribution(q_parent: ArrayLike, q_child: ArrayLike) -> float:
    """How far the child moved: ``d(q_parent, q_child)``.

    >>> redistribution([0.5, 0.5], [0.5, 0.5])
    0.0
    """
    return js_distance(q_parent, q_child)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None and NaN stay None and are not counted).

    >>> holm([0.01, 0.04, None, 0.03])
    [0.03, 0.06, None, 0.06]
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    m, running = len(idx), 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = round(running, 15)
    return out


# --------------------------------------------------------------------------------------------
# intervals: replicas -> families -> prompts (-> multinomial counts)


@dataclass(frozen=True)
class Structure:
    """Which rows of an ensemble belong to which replica and family.

    ``replicas[r]`` lists the families of replica r, each an array of row indices into ``P``.
    """

    replicas: tuple[tuple[np.ndarray, ...], ...]

    @classmethod
    def of(cls, families: Sequence[str] | None, replicas: Sequence[object] | None = None) -> "Structure":
        """Group rows by replica label, then by family (every row its own family when there is
        only one family, the prompt-by-prompt reading).

        >>> s = Structure.of(list("aabb"), [0, 0, 1, 1])
        >>> [[f.tolist() for f in r] for r in s.replicas]
        [[[0], [1]], [[2], [3]]]
        """
        n = len(families) if families is not None else len(replicas or [])
        reps = list(replicas) if replicas is not None else [0] * n
        out = []
        for r in dict.fromkeys(reps):
            rows = [i for i in range(n) if reps[i] == r]
            fam = [families[i] for i in rows] if families is not None else None
            codes = _families(fam, len(rows))
            out.append(
                tuple(np.array([rows[j] for j in range(len(rows)) if codes[j] == k]) for k in range(codes.max() + 1))
            )
        return cls(tuple(out))


def percentile_interval(values: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite values (NaNs when none).

    >>> percentile_interval([1.0, 2.0, 3.0, 4.0, float("nan")], 0.5)
    (1.75, 3.25)
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


def draw_families(
    fams: Sequence[np.ndarray], rng: np.random.Generator, keep_families: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One cluster-bootstrap draw of one replica: families with replacement (or each family once,
    ``keep_families``), then prompts within each drawn family; returns (row indices, family copy
    ids).

    >>> rows, ids = draw_families([np.array([0, 1]), np.array([2])], np.random.default_rng(0))
    >>> len(rows) == len(ids) and set(rows.tolist()) <= {0, 1, 2}
    True
    >>> draw_families([np.array([0, 1]), np.array([2])], np.random.default_rng(0), keep_families=True)[1].tolist()
    [0, 0, 1]
    """
    picks = np.arange(len(fams)) if keep_families else rng.integers(0, len(fams), size=len(fams))
    sizes = np.array([fams[f].size for f in picks])
    ids = np.repeat(np.arange(len(picks)), sizes)
    u = rng.random(ids.size)
    rows = np.concatenate([fams[f] for f in picks])
    offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)  # where each drawn family starts
    return rows[offsets + (u * sizes[ids]).astype(int)], ids


def _draws(structure: Structure, rng: np.random.Generator, keep_families: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """One hierarchical resample: per drawn replica, (row indices, family copy ids)."""
    reps = structure.replicas
    return [draw_families(reps[r], rng, keep_families) for r in rng.integers(0, len(reps), size=len(reps))]


def hierarchical_bootstrap(
    structure: Structure,
    statistic: Callable[[list[tuple[np.ndarray, np.ndarray]]], dict[str, float]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    keep_families: bool = False,
) -> dict[str, np.ndarray]:
    """Replicates of ``statistic`` under resampling of replicas, then families within each
    drawn replica (every family once with ``keep_families``: for a count of distinct families,
    which a resample holding only some of them would bias low), then prompts within each drawn
    family (percentile intervals come from :func:`percentile_interval`). ``statistic`` gets one
    ``(rows, family_copy_ids)`` pair per drawn replica and returns named floats. A family drawn
    twice is two families.

    >>> s = Structure.of(list("aabbcc"))
    >>> P = np.array([0.1, 0.2, 0.5, 0.6, 0.9, 1.0])
    >>> reps = hierarchical_bootstrap(s, lambda d: {"mean": float(P[d[0][0]].mean())}, n_boot=200)
    >>> lo, hi = percentile_interval(reps["mean"])
    >>> lo < 0.55 < hi
    True
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for name, v in statistic(_draws(structure, rng, keep_families)).items():
            values.setdefault(name, []).append(v)
    return {k: np.asarray(v, dtype=float) for k, v in values.items()}
