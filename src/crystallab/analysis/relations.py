"""Relations along one parent → child edge (SCIENCE.md v2, "Relations between checkpoints"):
the child's chat aggregate ``q`` against the root's raw basins (nucleation coordinate,
``seed_p``, attraction index) and against its parent's ``q`` (retention, ρ, redistribution).

Replicas pair by label: child replica r is compared with the parent's and the root's replica r
when they have one, else with their only (shared) replica. Points are means over the child's
replicas; ``k*`` is the most common one. Intervals resample the child's replicas, then on each
side families and prompts (the root's families are kept and only their prompts resampled, so
every ``d_k`` keeps its meaning; sampled rows also redraw each prompt's counts).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from crystallab import metrics as M
from crystallab.analysis.states import Valid, _redraw
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Estimate, SeedP, Transition


def _side(V: Valid, r: int | None) -> np.ndarray:
    rows = V.replica_rows()
    return rows[r] if r in rows else next(iter(rows.values()))


def _family_rows(V: Valid, rows: np.ndarray) -> list[np.ndarray]:
    codes = V.codes()[rows]
    return [rows[codes == k] for k in dict.fromkeys(codes.tolist())]


def _rows_P(V: Valid, rows: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    if rng is not None and V.n_samples is not None:
        P, _ = _redraw(V, rows, rng)
        return P if len(P) else V.P[rows]
    return V.P[rows]


def _root_basins(
    V: Valid, fam_rows: list[np.ndarray], eps: float, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    means, radii = [], []
    for members in fam_rows:
        pick = members if rng is None else members[rng.integers(0, members.size, size=members.size)]
        P = _rows_P(V, pick, rng)
        m = P.mean(axis=0)
        means.append(m)
        radii.append(max(eps, float(np.sqrt(M._js_rows(m, P)).mean())))
    return np.array(means), np.array(radii)


def _q(V: Valid, rows: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return V.P[rows].mean(axis=0)
    picked, _ = M.draw_families(_family_rows(V, rows), rng)
    return _rows_P(V, picked, rng).mean(axis=0)


def _figures(
    q: np.ndarray,
    means: np.ndarray,
    radii: np.ndarray,
    q_parent: np.ndarray | None,
    S: np.ndarray | None,
    chat0: np.ndarray | None,
    t: np.ndarray | None,
) -> dict[str, float]:
    c = M.nucleation_coordinate(q, means, radii)
    u = S.size / q.size if S is not None else math.nan
    ret = float(q[S].sum()) if S is not None else math.nan
    out = {
        "margin": c.margin,
        "retention": ret,
        "rho": (ret - u) / (1 - u) if u < 1 else math.nan,
        "redistribution": M.js_distance(q_parent, q) if q_parent is not None else math.nan,
        "d_chat0": M.js_distance(q, chat0) if chat0 is not None else math.nan,
        "k_star": float(c.k_star),
    }
    out.update({f"d{k}": float(c.d[k]) for k in range(len(c.d))})
    out.update({f"z{k}": float(c.z[k]) for k in range(len(c.z))})
    if t is not None:
        out["attraction"] = M.attraction_index(q, t, means[c.k_star])
        out["d_data"] = M.js_distance(q, t)
    return out


def transition(
    task: str,
    *,
    parent: str,
    child: str,
    root: str,
    root_raw: Valid,
    root_chat: Valid | None,
    parent_chat: Valid | None,
    child_chat: Valid,
    options: list[str],
    train_answers: np.ndarray | None,
    th: Thresholds,
) -> Transition:
    """Every figure of one edge, with intervals (the root's raw and the child's chat ensembles
    must be defined; ``parent_chat`` None, a root whose chat is undefined, leaves the figures
    relative to the parent, retention, ρ and redistribution, undefined (NaN))."""
    reps = list(child_chat.replica_rows())
    root_fams = {r: _family_rows(root_raw, _side(root_raw, r)) for r in reps}
    names = list(dict.fromkeys(root_raw.families)) if not root_raw.by_prompt else root_raw.ids
    S = None
    if parent_chat is not None:
        q_parent_point = {r: parent_chat.P[_side(parent_chat, r)].mean(axis=0) for r in reps}
        S = M.support_set(np.mean(list(q_parent_point.values()), axis=0), th.cover)

    def one(r: int | None, rng: np.random.Generator | None) -> dict[str, float]:
        means, radii = _root_basins(root_raw, root_fams[r], th.eps, rng)
        q = _q(child_chat, child_chat.replica_rows()[r], rng)
        qp = None if parent_chat is None else _q(parent_chat, _side(parent_chat, r), rng)
        c0 = None if root_chat is None else _q(root_chat, _side(root_chat, r), rng)
        return _figures(q, means, radii, qp, S, c0, train_answers)

    point_per = [one(r, None) for r in reps]
    point = {
        k: float(np.nanmean([p[k] for p in point_per])) if any(math.isfinite(p[k]) for p in point_per) else math.nan
        for k in point_per[0]
    }
    counts = Counter(names[int(p["k_star"])] for p in point_per)
    k_star = counts.most_common(1)[0][0]
    rng = np.random.default_rng(th.seed)
    boot: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(th.n_boot):
        drawn = [one(reps[i], rng) for i in rng.integers(0, len(reps), size=len(reps))]
        for k in boot:
            vals = [d[k] for d in drawn if math.isfinite(d[k])]
            boot[k].append(float(np.mean(vals)) if vals else math.nan)

    def est(k: str) -> Estimate:
        return Estimate.of(point[k], *M.percentile_interval(boot[k], th.level))

    # seed_p on each replica's q against its root's basins; the median across replicas
    tests = []
    for r in reps:
        means, radii = _root_basins(root_raw, root_fams[r], th.eps, None)
        tests.append(
            M.seed_p(
                child_chat.P[child_chat.replica_rows()[r]].mean(axis=0), means, radii, n_random=th.n_perm, seed=th.seed
            )
        )
    ps = [t.p for t in tests if t.p is not None]
    seed = SeedP(float(np.median(ps)) if ps else None, tests[0].n_relabellings, tests[0].exact, bool(ps))
    k_i = names.index(k_star)
    z_star = est(f"z{k_i}")
    return Transition(
        task=task,
        parent=parent,
        child=child,
        root=root,
        d={n: est(f"d{k}") for k, n in enumerate(names)},
        z={n: est(f"z{k}") for k, n in enumerate(names)},
        k_star=k_star,
        k_star_counts=dict(counts),
        margin=est("margin"),
        inside=None if z_star.value is None else bool(z_star.value <= 1.0),
        d_chat0=est("d_chat0"),
        seed_p=seed,
        attraction=est("attraction") if train_answers is not None else None,
        d_data=est("d_data") if train_answers is not None else None,
        support=[options[i] for i in S] if S is not None else [],
        retention=est("retention"),
        rho=est("rho"),
        redistribution=est("redistribution"),
        replicas=len(reps),
    )
