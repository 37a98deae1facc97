"""From a distribution table to states, transitions and verdicts (docs/analysis.md).

Phases are classified from measured order parameters only, never from the stage name:

- **crystal**: diversity(chat) < 0.1 and entropy_norm of the chat aggregate below the lower
  bound of the base checkpoint's interval;
- otherwise **liquid**: diversity(raw) >= 0.25 or n_distinct(raw) >= 3;
- otherwise **mixed**; **undefined** when no prompt has valid mass.

The three claims per task: **liquid** (the base checkpoint is liquid), **nucleation** (from base
to the next checkpoint, diversity and entropy collapse with separated intervals and the new
chat aggregate matches one base prompt distribution: seed distance <= tau, permutation
p < alpha) and **settling** (the last checkpoint keeps >= 90 % of its mass on the support of the
first post-base one).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from crystallab import __version__
from crystallab import metrics as M
from crystallab.errors import UserError

PARAMS = ("entropy_norm", "n_eff", "top1", "topk_mass", "collision", "chi2_uniform", "diversity", "n_distinct")
OTHER = "⊥"


@dataclass
class Thresholds:
    tau: float = 0.1  # JS distance (nats^1/2): seed match and n_distinct clustering
    alpha: float = 0.01  # seed-match permutation p-value
    cover: float = 0.9  # the SFT support holds this much of its mass
    retention_min: float = 0.9  # settling needs this much mass kept on that support
    crystal_diversity: float = 0.1
    liquid_diversity: float = 0.25
    liquid_n_distinct: int = 3
    n_boot: int = 1000
    n_perm: int = 1000
    level: float = 0.95
    seed: int = 0

    @classmethod
    def from_file(cls, path: str) -> "Thresholds":
        from crystallab.yamlconf import read_settings

        data = read_settings(path, list(cls.__dataclass_fields__), "thresholds")
        for k, v in data.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"{path}: threshold '{k}' must be a number, got {v!r}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# the table as nested arrays


@dataclass
class PromptSet:
    ids: list[str]
    kinds: list[str]
    texts: list[str]
    probs: np.ndarray  # [n, K + 1] with ⊥ last
    n_samples: np.ndarray | None = None  # [n] completions per prompt, for sampled rows

    def subset(self, which: str) -> "PromptSet":
        keep = [i for i, k in enumerate(self.kinds) if which == "all" or k == which]
        ns = None if self.n_samples is None else self.n_samples[keep]
        return PromptSet([self.ids[i] for i in keep], [self.kinds[i] for i in keep], [self.texts[i] for i in keep], self.probs[keep], ns)

    def renormalised(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(P̃ of the prompts with valid mass, valid mass of every prompt, their indices)."""
        valid = 1.0 - self.probs[:, -1]
        keep = [i for i in range(len(self.ids)) if valid[i] > 1e-12]
        P = self.probs[keep, :-1]
        P = P / P.sum(axis=1, keepdims=True) if keep else P
        return P, valid, keep


def _groups(table) -> tuple[dict, list[dict], dict[str, list[str]]]:
    """{(checkpoint_index, step, task): PromptSet}, the checkpoints in ladder order, options per task."""
    cols = table.select(["checkpoint", "checkpoint_index", "stage", "model", "step", "task", "task_version", "prompt_id", "prompt_kind", "prompt_text", "option", "prob", "n_samples"]).to_pydict()
    options: dict[str, list[str]] = {}
    versions: dict[str, dict[int, set]] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    ckpts: dict[int, dict] = {}
    for i in range(len(cols["prob"])):
        task, opt = cols["task"][i], cols["option"][i]
        ci = int(cols["checkpoint_index"][i])
        ckpts.setdefault(ci, {"index": ci, "label": cols["checkpoint"][i], "stage": cols["stage"][i], "model": cols["model"][i]})
        versions.setdefault(task, {}).setdefault(cols["task_version"][i], set()).add(cols["checkpoint"][i])
        if opt != OTHER and opt not in options.setdefault(task, []):
            options[task].append(opt)
        key = (ci, cols["step"][i], task)
        g = rows.setdefault(key, {})
        p = g.setdefault(cols["prompt_id"][i], {"kind": cols["prompt_kind"][i], "text": cols["prompt_text"][i], "probs": {}, "n": int(cols["n_samples"][i] or 0)})
        p["probs"][opt] = float(cols["prob"][i])
    for task, v in versions.items():
        if len(v) > 1:
            detail = "; ".join(f"version {ver}: {', '.join(sorted(c))}" for ver, c in sorted(v.items()))
            raise UserError(f"task '{task}' was measured with different versions across checkpoints ({detail}); re-measure them with one version")
    sets = {}
    for key, g in rows.items():
        opts = [*options[key[2]], OTHER]
        ids = sorted(g, key=lambda pid: (g[pid]["kind"] != "raw", pid))
        probs = np.array([[g[pid]["probs"].get(o, 0.0) for o in opts] for pid in ids])
        ns = np.array([g[pid]["n"] for pid in ids])
        sets[key] = PromptSet(ids, [g[pid]["kind"] for pid in ids], [g[pid]["text"] for pid in ids], probs, ns if ns.any() else None)
    return sets, [ckpts[i] for i in sorted(ckpts)], options


# ---------------------------------------------------------------------------------------------
# per checkpoint × task


def _interval(x: Any) -> list[float | None]:
    return [None if (v is None or (isinstance(v, float) and not math.isfinite(v))) else float(v) for v in x]


def set_summary(ps: PromptSet, th: Thresholds) -> dict[str, Any]:
    P, valid, keep = ps.renormalised()
    out: dict[str, Any] = {"n_prompts": len(ps.ids), "n_valid_prompts": len(keep), "other_mass": float(ps.probs[:, -1].mean()) if len(ps.ids) else None,
                           "no_valid_mass": [ps.ids[i] for i in range(len(ps.ids)) if i not in set(keep)]}
    vm = M.bootstrap_ci(valid[:, None], lambda A: float(A.mean()), n_boot=th.n_boot, level=th.level, seed=th.seed) if len(ps.ids) > 1 else (float("nan"),) * 2
    if not keep:
        out.update(params={p: [None, None, None] for p in PARAMS} | {"valid_mass": _interval([valid.mean() if len(valid) else 0.0, *vm])}, aggregate=None)
        return out
    if ps.n_samples is not None:
        boot = sampled_bootstrap(ps, th)
    else:
        boot = M.bootstrap_order_parameters(P, n_boot=th.n_boot, level=th.level, seed=th.seed, tau=th.tau)
    params = {p: _interval(boot[p]) for p in PARAMS}
    params["valid_mass"] = _interval([float(valid.mean()), *vm])
    out.update(params=params, aggregate=[float(x) for x in M.aggregate(P)])
    return out


def sampled_bootstrap(ps: PromptSet, th: Thresholds, max_boot: int = 400) -> dict[str, tuple[float, float, float]]:
    """Two-level bootstrap for sampled rows: resample prompts, then redraw each chosen prompt's
    counts from its multinomial (N = its n_samples), so intervals carry both the prompt-to-
    prompt spread and the sampling noise. At most ``max_boot`` replicates (each recomputes all
    order parameters, n_distinct's clustering included)."""
    P, _, keep = ps.renormalised()
    point = M.order_parameters(P, tau=th.tau)
    rng = np.random.default_rng(th.seed)
    n = len(ps.ids)
    reps: dict[str, list[float]] = {p: [] for p in PARAMS}
    for _ in range(min(th.n_boot, max_boot)):
        rows = []
        for i in rng.integers(0, n, size=n):
            c = rng.multinomial(int(ps.n_samples[i]), ps.probs[i] / ps.probs[i].sum())[:-1]
            if c.sum() > 0:
                rows.append(c / c.sum())
        if rows:
            op = M.order_parameters(np.array(rows), tau=th.tau)
            for p in PARAMS:
                reps[p].append(op[p])
    a = (1 - th.level) / 2
    return {p: (point[p], *(np.quantile(reps[p], [a, 1 - a]) if reps[p] else (math.nan, math.nan))) for p in PARAMS}


def _point(summary: dict | None, name: str, bound: int = 0) -> float | None:
    if not summary or not summary.get("params"):
        return None
    return summary["params"][name][bound]


def classify(sets: dict[str, dict], base_sets: dict[str, dict] | None, th: Thresholds) -> tuple[str, str]:
    """(state, reason) of one checkpoint × task from its set summaries (SCIENCE.md)."""
    chat = sets.get("chat") or sets.get("all")
    raw = sets.get("raw") or sets.get("all")
    if not any(s and s.get("n_valid_prompts") for s in sets.values()):
        return "undefined", "no prompt has valid mass"
    div_chat, ent_chat = _point(chat, "diversity"), _point(chat, "entropy_norm")
    base_chat = (base_sets or {}).get("chat") or (base_sets or {}).get("all")
    base_lo = _point(base_chat, "entropy_norm", 1)
    if div_chat is not None and ent_chat is not None and base_lo is not None and div_chat < th.crystal_diversity and ent_chat < base_lo:
        return "crystal", f"diversity(chat) = {div_chat:.3f} < {th.crystal_diversity} and entropy_norm(chat) = {ent_chat:.3f} < base lower bound {base_lo:.3f}"
    div_raw, nd_raw = _point(raw, "diversity"), _point(raw, "n_distinct")
    if div_raw is not None and div_raw >= th.liquid_diversity:
        return "liquid", f"diversity(raw) = {div_raw:.3f} >= {th.liquid_diversity}"
    if nd_raw is not None and nd_raw >= th.liquid_n_distinct:
        return "liquid", f"n_distinct(raw) = {nd_raw:.0f} >= {th.liquid_n_distinct}"
    parts = [f"diversity(raw) = {div_raw:.3f}" if div_raw is not None else "no raw set", f"n_distinct(raw) = {nd_raw:.0f}" if nd_raw is not None else "", f"diversity(chat) = {div_chat:.3f}" if div_chat is not None else ""]
    return "mixed", "neither crystal nor liquid: " + ", ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# relations between checkpoints


def _chat_aggregate(sets: dict[str, dict]) -> np.ndarray | None:
    s = sets.get("chat") or sets.get("all")
    return None if not s or s.get("aggregate") is None else np.array(s["aggregate"])


def transition(task: str, a: dict, b: dict, base: dict, base_ps: PromptSet, options: list[str], th: Thresholds) -> dict[str, Any]:
    """Seed match of b against the base prompts, collapse from a to b, retention of a's support."""
    out: dict[str, Any] = {"task": task, "from": a["checkpoint"], "to": b["checkpoint"], "from_index": a["checkpoint_index"], "to_index": b["checkpoint_index"], "from_state": a["state"], "to_state": b["state"]}
    q_b, q_a = _chat_aggregate(b["sets"]), _chat_aggregate(a["sets"])
    P_base, _, keep = base_ps.renormalised()
    seed = None
    if q_b is not None and len(keep):
        m = M.seed_match(q_b, P_base, n_perm=th.n_perm, seed=th.seed)
        i = keep[m.index]
        seed = {"prompt_id": base_ps.ids[i], "prompt_kind": base_ps.kinds[i], "prompt_text": base_ps.texts[i], "distance": float(m.distance), "p_value": float(m.p_value), "confirmed": bool(M.nucleation_confirmed(m, th.tau, th.alpha))}
    out["seed"] = seed
    ca, cb = a["sets"].get("chat") or a["sets"].get("all"), b["sets"].get("chat") or b["sets"].get("all")
    collapse: dict[str, Any] = {"holds": None}
    if ca and cb and ca.get("aggregate") is not None and cb.get("aggregate") is not None:
        d = [ca["params"]["diversity"], cb["params"]["diversity"]]
        e = [ca["params"]["entropy_norm"], cb["params"]["entropy_norm"]]

        def falls(x):
            return x[1][0] < x[0][0] and not M.intervals_overlap((x[0][1], x[0][2]), (x[1][1], x[1][2]))

        collapse = {"diversity": d, "entropy_norm": e, "holds": bool(falls(d) and falls(e))}
    out["collapse"] = collapse
    if q_a is not None and q_b is not None:
        S = M.support_set(q_a, th.cover)
        out.update(retention=float(M.retention(q_a, q_b, th.cover)), new_mass=float(M.new_mass(q_a, q_b, th.cover)), redistribution=float(M.redistribution(q_a, q_b)), support=[options[j] for j in S])
        out["settling_confirmed"] = bool(out["retention"] >= th.retention_min)
    else:
        out.update(retention=None, new_mass=None, redistribution=None, support=None, settling_confirmed=None)
    if a["state"] == "liquid" and b["state"] == "crystal" and seed and seed["confirmed"]:
        out["kind"] = "nucleation"
    elif a["state"] == "crystal" and b["state"] == "crystal" and out["settling_confirmed"]:
        out["kind"] = "settling"
    else:
        out["kind"] = "none"
    return out


def verdicts(task: str, states: list[dict], transitions: list[dict], first_after_base: dict | None, th: Thresholds) -> dict[str, dict]:
    base = states[0]
    out: dict[str, dict] = {}
    raw = base["sets"].get("raw") or base["sets"].get("all")
    nums = {"diversity_raw": raw["params"]["diversity"] if raw and raw.get("params") else None, "n_distinct_raw": raw["params"]["n_distinct"] if raw and raw.get("params") else None, "state": base["state"]}
    if base["state"] == "undefined":
        out["liquid"] = {"value": "inconclusive", "why": f"base checkpoint '{base['checkpoint']}' has no valid mass on {task}", "numbers": nums}
    else:
        out["liquid"] = {"value": "holds" if base["state"] == "liquid" else "fails", "why": f"base '{base['checkpoint']}' is {base['state']}: {base['reason']}", "numbers": nums}

    if first_after_base is None:
        out["nucleation"] = {"value": "inconclusive", "why": "the ladder has no checkpoint after the base", "numbers": {}}
    else:
        t = first_after_base
        seed, col = t["seed"], t["collapse"]
        nums = {"from": t["from"], "to": t["to"], "to_state": t["to_state"], "collapse": col.get("holds"), "diversity": col.get("diversity"), "entropy_norm": col.get("entropy_norm")}
        if seed:
            nums.update(seed_prompt_id=seed["prompt_id"], seed_prompt_text=seed["prompt_text"], seed_distance=seed["distance"], seed_p_value=seed["p_value"])
        if seed is None or col.get("holds") is None or t["to_state"] == "undefined":
            out["nucleation"] = {"value": "inconclusive", "why": f"no valid chat distribution at '{t['from']}' or '{t['to']}'", "numbers": nums}
        elif not col["holds"]:
            out["nucleation"] = {"value": "fails", "why": f"no collapse from '{t['from']}' to '{t['to']}': diversity and entropy_norm intervals do not both fall apart", "numbers": nums}
        elif not seed["confirmed"]:
            out["nucleation"] = {"value": "fails", "why": f"collapse, but onto no base distribution: seed distance {seed['distance']:.3f} (tau {th.tau}), p = {seed['p_value']:.3g} (alpha {th.alpha})", "numbers": nums}
        else:
            out["nucleation"] = {"value": "holds", "why": f"collapse onto base prompt {seed['prompt_id']} (distance {seed['distance']:.3f}, p = {seed['p_value']:.3g})", "numbers": nums}

    later = [s for s in states if first_after_base and s["checkpoint_index"] > first_after_base["to_index"]]
    if first_after_base is None or not later:
        out["settling"] = {"value": "inconclusive", "why": "the ladder needs a checkpoint after the first post-base one", "numbers": {}}
    else:
        sft = next(s for s in states if s["checkpoint_index"] == first_after_base["to_index"])
        last = later[-1]
        q_a, q_b = _chat_aggregate(sft["sets"]), _chat_aggregate(last["sets"])
        if q_a is None or q_b is None:
            out["settling"] = {"value": "inconclusive", "why": f"no valid chat distribution at '{sft['checkpoint']}' or '{last['checkpoint']}'", "numbers": {}}
        else:
            S = M.support_set(q_a, th.cover)
            ret = float(M.retention(q_a, q_b, th.cover))
            nums = {"from": sft["checkpoint"], "to": last["checkpoint"], "retention": ret, "new_mass": 1 - ret, "redistribution": float(M.redistribution(q_a, q_b)), "support": [raw_opt for raw_opt in np.array(sft["options"])[S].tolist()], "to_state": last["state"]}
            ok = ret >= th.retention_min
            out["settling"] = {"value": "holds" if ok else "fails", "why": f"'{last['checkpoint']}' keeps {ret:.1%} of its mass on the support of '{sft['checkpoint']}' ({'>=' if ok else '<'} {th.retention_min:.0%})", "numbers": nums}
    return out


# ---------------------------------------------------------------------------------------------
# dynamics along training steps


def dynamics(label: str, task: str, steps: list[int], per_step: list[PromptSet], th: Thresholds) -> dict[str, Any]:
    which = "chat" if any("chat" in ps.kinds for ps in per_step) else "all"
    series: dict[str, list] = {"diversity": [], "entropy_norm": [], "valid_mass": [], "susceptibility": []}
    for ps in per_step:
        s = ps.subset(which)
        summ = set_summary(s, th)
        for name in ("diversity", "entropy_norm", "valid_mass"):
            series[name].append(summ["params"][name])
        P, _, keep = s.renormalised()
        series["susceptibility"].append(M.susceptibility([M.entropy_norm(p) for p in P]) if len(keep) > 1 else None)
    div = [x[0] if x[0] is not None else math.nan for x in series["diversity"]]
    spread = [x if x is not None else math.nan for x in series["susceptibility"]]
    stats = M.transition_statistics(steps, div, spread=spread)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in stats.items() if k in ("transition_step", "sharpness", "method", "rss_piecewise", "rss_logistic", "susceptibility_peak_step", "note")}
    return {"checkpoint": label, "task": task, "set": which, "steps": [int(s) for s in steps], "series": series, **clean}


# ---------------------------------------------------------------------------------------------


def analyze(table, thresholds: Thresholds | None = None, method: str | None = None) -> dict[str, Any]:
    """The whole analysis of a distribution table (see docs/analysis.md)."""
    th = thresholds or Thresholds()
    methods = set(table.column("method").to_pylist()) if table.num_rows else set()
    if not methods:
        raise UserError("the results table is empty: measure something first")
    method = method or ("exact" if "exact" in methods else sorted(methods)[0])
    if method not in methods:
        raise UserError(f"no rows measured with method '{method}' (found: {', '.join(sorted(methods))})")
    import pyarrow.compute as pc

    table = table.filter(pc.equal(table.column("method"), method))
    sets, ckpts, options = _groups(table)
    tasks = [t for t in sorted(options) if len(options[t]) >= 2]  # entropy and distances over one option mean nothing
    warnings = [f"task '{t}' has {len(options[t])} option(s) in the table; a random task needs at least 2, so it was left out" for t in sorted(options) if t not in tasks]
    out: dict[str, Any] = {"crystallab_version": __version__, "method": method, "thresholds": asdict(th), "checkpoints": ckpts, "tasks": tasks, "states": [], "transitions": [], "verdicts": {}, "dynamics": [], "warnings": warnings}
    for task in tasks:
        ladder: list[tuple[dict, Any, PromptSet]] = []
        for c in ckpts:
            steps = sorted({k[1] for k in sets if k[0] == c["index"] and k[2] == task}, key=lambda s: -1 if s is None else s)
            if not steps:
                continue
            ladder.append((c, steps[-1], sets[(c["index"], steps[-1], task)]))
            real = [s for s in steps if s is not None]
            if len(real) >= 4:
                out["dynamics"].append(dynamics(c["label"], task, real, [sets[(c["index"], s, task)] for s in real], th))
        if not ladder:
            continue
        base_i = next((i for i, (c, _, _) in enumerate(ladder) if c["stage"] == "base"), 0)
        ladder = ladder[base_i:]
        states: list[dict] = []
        base_sets = None
        for c, step, ps in ladder:
            summaries = {w: set_summary(ps.subset(w), th) for w in ("raw", "chat", "all") if (w == "all" or w in ps.kinds)}
            state, reason = classify(summaries, base_sets, th)
            if base_sets is None:
                base_sets = summaries
            states.append({"checkpoint": c["label"], "checkpoint_index": c["index"], "stage": c["stage"], "step": step, "task": task, "state": state, "reason": reason, "options": options[task], "sets": summaries})
            if summaries["all"].get("no_valid_mass"):
                ids = summaries["all"]["no_valid_mass"]
                out["warnings"].append(f"{c['label']}/{task}: {len(ids)} prompt(s) put all their mass on ⊥ and were left out of the metrics: {', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}")
        base_ps = ladder[0][2]
        trans = [transition(task, a, b, states[0], base_ps, options[task], th) for a, b in zip(states, states[1:])]
        out["states"] += states
        out["transitions"] += trans
        out["verdicts"][task] = verdicts(task, states, trans, trans[0] if trans else None, th)
    return out


def summary_text(analysis: dict[str, Any]) -> str:
    """A short terminal summary: states along the ladder and the three verdicts per task."""
    lines = [f"checkpoints: {' → '.join(c['label'] for c in analysis['checkpoints'])}   (method: {analysis['method']})"]
    for task in analysis["tasks"]:
        st = [s for s in analysis["states"] if s["task"] == task]
        lines.append(f"{task}: " + " → ".join(f"{s['checkpoint']}={s['state']}" for s in st))
        for claim, v in analysis["verdicts"].get(task, {}).items():
            lines.append(f"  {claim:<10} {v['value']:<12} {v['why']}")
    for w in analysis.get("warnings", []):
        lines.append(f"note: {w}")
    for d in analysis["dynamics"]:
        ts = d.get("transition_step")
        lines.append(f"dynamics {d['checkpoint']}/{d['task']}: transition at step {ts:.0f}, sharpness {d.get('sharpness') or float('nan'):.3g} ({d.get('method')})" if ts is not None else f"dynamics {d['checkpoint']}/{d['task']}: no transition found ({d.get('note')})")
    return "\n".join(lines)
