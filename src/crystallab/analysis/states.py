"""The state of one ensemble from its order parameters alone (SCIENCE.md v2, "States"):
undefined below 3 valid prompts, liquid when n_basins >= 2, crystal when n_basins = 1.

With replicas the point estimate of each figure is the mean over replicas (n_basins: the
median), the state is the majority of the replicas' states (a tie reads liquid: the weaker
claim), and intervals resample replicas, then families, then prompts (then, for sampled rows,
each prompt's counts from its multinomial).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crystallab import metrics as M
from crystallab.analysis.table import Ensemble
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import EnsembleState, Estimate, Family

PARAMS = ("h", "entropy_norm", "spread", "phi", "n_basins", "top1", "topk_mass", "collision", "n_eff", "chi2_uniform")
MAX_BOOT_SAMPLED = 200  # sampled rows recompute every distance per resample


@dataclass
class Valid:
    """The valid prompts of one ensemble: renormalised rows, family codes, replica of each."""

    ids: list[str]
    P: np.ndarray  # (n, K) p̃
    probs: np.ndarray  # (n, K + 1) with ⊥, for multinomial redraws
    n_samples: np.ndarray | None
    families: list[str]
    replicas: list[int | None]
    by_prompt: bool  # one family: each prompt its own family

    @classmethod
    def of(cls, ens: Ensemble, v_min: float) -> tuple["Valid", list[str]]:
        v = ens.valid_mass
        keep = [i for i in range(len(ens.ids)) if v[i] >= v_min and v[i] > M.MIN_VALID_MASS]
        sub = ens.subset(keep)
        P = (
            sub.probs[:, :-1] / np.maximum(sub.probs[:, :-1].sum(axis=1, keepdims=True), 1e-300)
            if keep
            else sub.probs[:, :-1]
        )
        by_prompt = len(set(ens.families)) <= 1  # the table's families, not only the valid prompts'
        invalid = [ens.ids[i] for i in range(len(ens.ids)) if i not in set(keep)]
        return cls(sub.ids, P, sub.probs, sub.n_samples, sub.families, sub.replicas, by_prompt), invalid

    def structure(self) -> M.Structure:
        return M.Structure.of(None if self.by_prompt else self.families, self.replicas)

    def replica_rows(self) -> dict[int | None, np.ndarray]:
        return _rows_by_replica(self.replicas)

    def codes(self) -> np.ndarray:
        if self.by_prompt:
            return np.arange(len(self.ids))
        names = list(dict.fromkeys(self.families))
        return np.array([names.index(f) for f in self.families])


def _stats(
    P: np.ndarray, D: np.ndarray, orig: np.ndarray, fam: np.ndarray, copies: np.ndarray, eps: float
) -> dict[str, float]:
    """Order parameters of one (possibly resampled) replica. ``orig`` are the original rows (pairs
    of one prompt drawn twice are left out of spread and phi), ``fam`` their original family
    codes, ``copies`` the family copy ids that basins count."""
    n = len(orig)
    same = orig[:, None] == orig[None, :]
    iu = M._triu(n)
    keep = ~same[iu]
    d = D[iu][keep]
    agg = P.mean(axis=0)
    means, radii = _family_means(P, copies, eps)
    return {
        "h": float(M._entropy_norm_rows(P).mean()),
        "entropy_norm": float(M._entropy_norm_rows(agg)),
        "spread": float(d.mean()) if d.size else math.nan,
        "phi": M.phi_from(D, fam, exclude=same),
        "n_basins": float(M.n_basins_of(means, radii)),
        **M.concentration(agg),
    }


def _family_means(P: np.ndarray, copies: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Family means and radii ``max(eps, mean d(p_i, f̄))`` for dense codes ``0..F-1`` at once."""
    F = int(copies.max()) + 1
    counts = np.bincount(copies, minlength=F).astype(float)
    means = np.zeros((F, P.shape[1]))
    np.add.at(means, copies, P)
    means /= counts[:, None]
    d = np.sqrt(M._js_rows(means[copies], P))
    return means, np.maximum(eps, np.bincount(copies, weights=d, minlength=F) / counts)


def _redraw(V: Valid, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The rows' distributions redrawn from their multinomials; rows left with no valid count
    are dropped (their positions are returned)."""
    out, kept = [], []
    for j, i in enumerate(rows):
        c = rng.multinomial(int(V.n_samples[i]), V.probs[i] / V.probs[i].sum())[:-1]  # type: ignore[index]
        if c.sum() > 0:
            out.append(c / c.sum())
            kept.append(j)
    return np.array(out).reshape(len(out), V.P.shape[1]), np.array(kept, dtype=int)


def _combine(per_replica: list[dict[str, float]]) -> dict[str, float]:
    if len(per_replica) == 1:
        return dict(per_replica[0])
    out = {}
    for name in PARAMS:
        vals = np.array([r[name] for r in per_replica], dtype=float)
        vals = vals[np.isfinite(vals)]
        out[name] = (float(np.median(vals)) if name == "n_basins" else float(vals.mean())) if vals.size else math.nan
    return out


def bootstrap_params(V: Valid, th: Thresholds) -> dict[str, tuple[float, float]]:
    """Hierarchical percentile intervals of every order parameter of ``V``."""
    D_all = M.pairwise_jsd(V.P)
    codes = V.codes()
    sampled = V.n_samples is not None
    rng = np.random.default_rng(th.seed)

    def stat(draws: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        per = []
        for rows, copies in draws:
            if sampled:
                P, kept = _redraw(V, rows, rng)
                if len(kept) < 2:
                    continue
                rows, copies = rows[kept], copies[kept]
                D = M.pairwise_jsd(P)
            else:
                P, D = V.P[rows], D_all[np.ix_(rows, rows)]
            per.append(_stats(P, D, rows, codes[rows], _dense(copies), th.eps))
        return _combine(per) if per else {k: math.nan for k in PARAMS}

    def basins_only(draws: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        counts = []
        for rows, copies in draws:
            if sampled:
                P, kept = _redraw(V, rows, rng)
                if not len(kept):
                    continue
                copies = copies[kept]
            else:
                P = V.P[rows]
            counts.append(M.n_basins_of(*_family_means(P, _dense(copies), th.eps)))
        return {"n_basins": float(np.median(counts)) if counts else math.nan}

    n_boot = min(th.n_boot, MAX_BOOT_SAMPLED) if sampled else th.n_boot
    reps = M.hierarchical_bootstrap(V.structure(), stat, n_boot=n_boot, seed=th.seed)
    # n_basins counts distinct families, which a resample of families holds only ~63 % of: its
    # interval keeps every family and resamples wording (prompts), replicas and counts only
    reps["n_basins"] = M.hierarchical_bootstrap(
        V.structure(), basins_only, n_boot=n_boot, seed=th.seed, keep_families=True
    )["n_basins"]
    return {k: M.percentile_interval(v, th.level) for k, v in reps.items()}


def _dense(ids: np.ndarray) -> np.ndarray:
    names = list(dict.fromkeys(ids.tolist()))
    return np.array([names.index(x) for x in ids.tolist()])


def ensemble_state(
    ens: Ensemble,
    th: Thresholds,
    *,
    checkpoint: str,
    task: str,
    kind: str,
    step: int | None,
    split: str | None = None,
    intervals: bool = True,
) -> EnsembleState:
    """Classify one ensemble; every figure with its interval."""
    V, invalid = Valid.of(ens, th.v_min)
    vm_all = ens.valid_mass
    vm_struct = M.Structure.of(None if len(set(ens.families)) <= 1 else ens.families, ens.replicas)
    vm_reps = M.hierarchical_bootstrap(
        vm_struct, lambda d: {"v": float(np.mean([vm_all[r].mean() for r, _ in d]))}, n_boot=th.n_boot, seed=th.seed
    )
    vm_point = float(np.mean([vm_all[rows].mean() for rows in _rows_by_replica(ens.replicas).values()]))
    valid_mass = Estimate.of(vm_point, *M.percentile_interval(vm_reps["v"], th.level))
    base: dict[str, Any] = dict(
        checkpoint=checkpoint,
        task=task,
        ensemble=kind,
        step=step,
        split=split,
        n_prompts=len(ens.ids),
        n_valid=len(V.ids),
        invalid_prompts=invalid,
        read_by="prompts" if V.by_prompt else "families",
        prompt_ids=V.ids,
    )
    by_rep = V.replica_rows()
    defined = {r: rows for r, rows in by_rep.items() if rows.size >= 3}
    if not defined:
        why = f"{len(V.ids)} valid prompt(s) (valid mass >= {th.v_min}); a state needs at least 3"
        return EnsembleState(
            **base,
            state="undefined",
            reason=why,
            params={"valid_mass": valid_mass},
            phi_p=None,
            phi_relabellings=None,
            families=[],
            basins=[],
            aggregate=None,
            replicas=len(by_rep),
            replica_states=["undefined"] * len(by_rep),
            families_replica=None,
        )
    codes = V.codes()
    per, states, phi_ps, first, first_rep = [], [], [], None, None
    for r, rows in by_rep.items():
        if rows.size < 3:
            states.append("undefined")
            continue
        P = V.P[rows]
        D = M.pairwise_jsd(P)
        fam = None if V.by_prompt else [V.families[i] for i in rows]
        b = (
            M.basins_coded(P, np.arange(rows.size), [V.ids[i] for i in rows], th.eps)
            if V.by_prompt
            else M.basins(P, fam, th.eps)
        )
        if first is None:
            first, first_rep = (b, P), r
        s = _stats(P, D, np.arange(rows.size), _dense(codes[rows]), _dense(codes[rows]), th.eps)
        per.append(s)
        states.append("liquid" if b.n_basins >= 2 else "crystal")
        if not V.by_prompt:
            value, p, n_rel, _ = M.phi_permutation(P, fam or [], n_random=th.n_perm, seed=th.seed, D=D)
            phi_ps.append((p, n_rel))
    point = _combine(per)
    ci = bootstrap_params(V, th) if intervals else {}
    params = {k: Estimate.of(point[k], *ci.get(k, (None, None))) for k in PARAMS}
    params["valid_mass"] = valid_mass
    n_liquid, n_crystal = states.count("liquid"), states.count("crystal")
    state = "crystal" if n_crystal > n_liquid else "liquid"
    b, P = first  # type: ignore[misc]
    fams = [
        Family(b.names[k], b.sizes[k], [float(x) for x in b.means[k]], float(b.radii[k]), int(b.labels[k]))
        for k in range(len(b.names))
    ]
    nb = params["n_basins"]
    unit = "prompt" if V.by_prompt else "family"
    if state == "liquid":
        plural = "prompts" if V.by_prompt else "families"
        reason = f"n_basins = {nb.text('.0f')}: {len(b.groups())} groups of {plural} stay apart beyond their radii"
    else:
        reason = f"n_basins = {nb.text('.0f')}: every {unit} sits in one basin (h = {point['h']:.2f})"
    if len(states) > 1:
        reason += f"; replicas: {n_liquid} liquid, {n_crystal} crystal, {states.count('undefined')} undefined"
    p_med = float(np.median([p for p, _ in phi_ps])) if phi_ps else None
    pooled = np.concatenate([V.P[rows] for rows in defined.values()]).mean(axis=0)
    return EnsembleState(
        **base,
        state=state,
        reason=reason,
        params=params,
        phi_p=p_med,
        phi_relabellings=phi_ps[0][1] if phi_ps else None,
        families=fams,
        basins=b.groups(),
        aggregate=[float(x) for x in pooled],
        replicas=len(by_rep),
        replica_states=states,
        families_replica=first_rep,
    )


def _rows_by_replica(replicas: list[int | None]) -> dict[int | None, np.ndarray]:
    return {r: np.array([i for i, x in enumerate(replicas) if x == r]) for r in dict.fromkeys(replicas)}
