"""Series along a tracked training run and its transition test (SCIENCE.md v2, "Dynamics").

The coordinate follows the run's place in the parent graph, never its stage name: a child of
the root is followed by ``d_k*(t)`` (distance of its chat aggregate to the root family it ends
nearest), a later descendant by ``q(S)(t)`` (the mass its chat aggregate keeps on its parent's
support).
"""

from __future__ import annotations

import math

import numpy as np

from crystallab import metrics as M
from crystallab import transitions as TR
from crystallab.analysis.states import Valid, ensemble_state
from crystallab.analysis.table import Ensemble
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Dynamics


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def dynamics(
    checkpoint: str,
    task: str,
    steps: list[int],
    chat: list[Ensemble | None],
    raw: list[Ensemble | None],
    *,
    root_raw: Valid,
    k_star: int | None,
    support: np.ndarray | None,
    train_answers: np.ndarray | None,
    th: Thresholds,
) -> Dynamics:
    """``chat[i]``/``raw[i]``: the run's ensembles at ``steps[i]``; ``k_star`` (an index into the
    root's families) selects the d_k* coordinate, else ``support`` the q(S) one."""
    fam_rows = [np.flatnonzero(root_raw.codes() == k) for k in range(int(root_raw.codes().max()) + 1)]
    names = list(dict.fromkeys(root_raw.families)) if not root_raw.by_prompt else root_raw.ids
    means = np.array([root_raw.P[r].mean(axis=0) for r in fam_rows])
    series: dict[str, list[float | None]] = {f"d[{n}]": [] for n in names}
    for name in ("phi_chat", "spread_chat", "phi_raw", "spread_raw", "h", "valid_mass", "q(S)", "d_data"):
        series[name] = []
    use_d = k_star is not None
    coord = f"d_k*(t) [{names[k_star]}]" if use_d else "q(S)(t)"  # type: ignore[index]
    replicas: dict[int | None, list[float | None]] = {}
    pvar: list[float | None] = []
    for i in range(len(steps)):
        for kind, ens in (("chat", chat[i]), ("raw", raw[i])):
            st = (
                ensemble_state(ens, th, checkpoint=checkpoint, task=task, kind=kind, step=steps[i], intervals=False)
                if ens
                else None
            )
            ok = st is not None and st.state != "undefined"
            series[f"phi_{kind}"].append(_f(st.params["phi"].value) if ok else None)  # type: ignore[union-attr]
            series[f"spread_{kind}"].append(_f(st.params["spread"].value) if ok else None)  # type: ignore[union-attr]
            if kind == "chat":
                series["h"].append(_f(st.params["h"].value) if ok else None)  # type: ignore[union-attr]
                series["valid_mass"].append(_f(st.params["valid_mass"].value) if st else None)
        ens_i = chat[i]
        V = Valid.of(ens_i, th.v_min)[0] if ens_i is not None else None
        if V is None or not V.ids:
            for n in names:
                series[f"d[{n}]"].append(None)
            series["q(S)"].append(None)
            series["d_data"].append(None)
            pvar.append(None)
            for r in replicas:
                replicas[r].append(None)
            continue
        q = V.P.mean(axis=0)
        for k, n in enumerate(names):
            series[f"d[{n}]"].append(M.js_distance(q, means[k]))
        series["q(S)"].append(float(q[support].sum()) if support is not None else None)
        series["d_data"].append(M.js_distance(q, train_answers) if train_answers is not None else None)
        if use_d:
            per_prompt = np.sqrt(M._js_rows(means[k_star], V.P))
        else:
            per_prompt = V.P[:, support].sum(axis=1) if support is not None else np.full(len(V.ids), np.nan)
        pvar.append(_f(float(np.var(per_prompt))) if len(V.ids) > 1 else None)
        for r, rows in V.replica_rows().items():
            qr = V.P[rows].mean(axis=0)
            val = (
                M.js_distance(qr, means[k_star])
                if use_d
                else (float(qr[support].sum()) if support is not None else None)
            )
            replicas.setdefault(r, [None] * i).append(val)
        for r in replicas:
            if len(replicas[r]) < i + 1:
                replicas[r].append(None)
    Y = np.array([[np.nan if v is None else v for v in vals] for vals in replicas.values()], dtype=float)
    if Y.size == 0:
        Y = np.full((1, len(steps)), np.nan)
    ok = np.isfinite(Y).all(axis=0)
    t = np.asarray(steps, dtype=float)
    test = TR.transition_test(t[ok], Y[:, ok], dbic=th.dbic, share=th.sharp_share, n_sd=th.n_sd, level=th.level)
    chi = TR.susceptibility(Y)
    return Dynamics(
        checkpoint=checkpoint,
        task=task,
        steps=[int(s) for s in steps],
        coordinate=coord,
        k_star=names[k_star] if k_star is not None else None,
        series=series,
        replica_series=[[_f(v) for v in row] for row in Y.tolist()],
        test=test.to_json(),
        chi=[_f(v) for v in chi.tolist()],
        prompt_variance=pvar,
    )
