"""The lab's experiments as one readable function: pretrain (or load) → measure the base →
SFT with tracking → GRPO with tracking → analyze → report.

- planted-seed: SFT onto the planted distribution of one family of the toy universe; the
  analysis must name that family's prompt as the seed.
- forced-seed: SFT onto a chosen distribution that is in the base repertoire
  (``--seed-from base-prompt``) or not (``outside``), then RL rewarded for options outside the
  seed's support: can RL escape the support SFT forced?
- variants: ``sft_data="diverse"`` keeps the base diversity (each instruction its own family's
  distribution), ``"format"`` has no random task at all.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from crystallab.errors import UserError
from crystallab.metrics import js_distance

SFT_DATA = ("planted", "base-prompt", "outside", "diverse", "format")
RL_TARGETS = ("seed-top", "outside-support")


@dataclass
class LabConfig:
    out: str = ""  # the run folder (the CLI fills in its default)
    seed: int = 0
    sft_data: str = "planted"  # planted (toy) | base-prompt | outside | diverse | format
    seed_family: str | None = None  # planted: which family (default: drawn with the seed)
    rl: bool = True
    rl_target: str = "seed-top"  # seed-top: the SFT aggregate's top 2 | outside-support: options outside its 90 % support
    rl_rewards: tuple[str, ...] = ("validity", "target")
    base_model: str | None = None  # measure this checkpoint instead of pretraining the toy
    task: str = "toy_number"
    pretrain_steps: int = 400
    sft_steps: int = 150
    sft_examples: int = 1200
    rl_steps: int = 40
    track_every: int = 10
    lora: bool = False
    limit: int | None = None  # prompts of each kind to track (None: all)
    report: bool = True
    n_boot: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw) -> "LabConfig":
        """A fast version for tests: fewer steps everywhere, fewer bootstrap draws."""
        base = dict(pretrain_steps=120, sft_steps=30, sft_examples=200, rl_steps=12, track_every=4, n_boot=200)
        base.update(kw)
        return cls(**base)

    @classmethod
    def from_yaml(cls, path: str, **override) -> "LabConfig":
        """A YAML file of LabConfig fields (see configs/); keyword arguments override it."""
        from crystallab.yamlconf import read_settings

        data = read_settings(path, [f for f in cls.__dataclass_fields__ if f != "extra"], "lab")
        if "rl_rewards" in data:
            data["rl_rewards"] = tuple(data["rl_rewards"])
        return cls(**{**data, **override})

    def validate(self) -> None:
        from crystallab.lab.universe import FAMILIES

        if self.sft_data not in SFT_DATA:
            raise UserError(f"unknown SFT data '{self.sft_data}'; use one of {', '.join(SFT_DATA)}")
        if self.rl_target not in RL_TARGETS:
            raise UserError(f"unknown RL target '{self.rl_target}'; use one of {', '.join(RL_TARGETS)}")
        if self.seed_family and self.seed_family not in {f.name for f in FAMILIES}:
            raise UserError(f"unknown family '{self.seed_family}'; use one of {', '.join(f.name for f in FAMILIES)}")
        for name in ("pretrain_steps", "sft_steps", "sft_examples", "rl_steps", "track_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name.replace('_', '-')} must be positive")


def _chat_aggregate(results: Path, label: str, task: str) -> np.ndarray:
    """The measured chat aggregate (renormalised) of a checkpoint's last tracked step."""
    from crystallab.store import read_table

    rows = [r for r in read_table(results).to_pylist() if r["checkpoint"] == label and r["task"] == task and r["prompt_kind"] == "chat"]
    last = max(r["step"] or 0 for r in rows)
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        if (r["step"] or 0) == last:
            by.setdefault(r["prompt_id"], {})[r["option"]] = r["prob"]
    opts = [o for o in by[next(iter(by))] if o != "⊥"]
    P = np.array([[d[o] for o in opts] for d in by.values()])
    P = P[P.sum(1) > 0]
    return (P / P.sum(1, keepdims=True)).mean(0)


def run_lab(cfg: LabConfig, log=print) -> dict[str, Any]:
    """Run one experiment into ``cfg.out``; returns its summary (also in summary.json)."""
    from crystallab.errors import UserError
    from crystallab.store import writer_lock

    cfg.validate()
    try:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the lab run to {cfg.out}: {exc.strerror or exc}") from exc
    with writer_lock(cfg.out):  # one experiment per run folder at a time
        return _run_lab(cfg, log)


def _run_lab(cfg: LabConfig, log=print) -> dict[str, Any]:
    from crystallab.analysis import Thresholds, analyze_dir
    from crystallab.lab import universe as U
    from crystallab.lab.rl import GRPORecipe, run_grpo
    from crystallab.lab.sft import SFTRecipe, run_sft
    from crystallab.lab.tracker import PhaseTracker
    from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
    from crystallab.models.base import LoadSettings
    from crystallab.metrics import support_set
    from crystallab.suite import load_task

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    ck, results, tasks_dir = out / "checkpoints", out / "results", out / "tasks"
    rng = random.Random(cfg.seed)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    # 1. the base model
    t = time.perf_counter()
    if cfg.base_model:
        base = cfg.base_model
    else:
        U.write_task(tasks_dir)
        base_dir = Path(cfg.extra.get("base_dir", ck / "base"))  # several seeds may share one universe
        base = str(base_dir if (base_dir / "config.json").exists() else U.pretrain(base_dir, seed=cfg.extra.get("universe_seed", cfg.seed), steps=cfg.pretrain_steps, log=log))
    task = load_task(cfg.task, tasks_dir if tasks_dir.exists() else None)
    mcfg = MeasureConfig(model=base, tasks=[cfg.task], out=str(results), tasks_dir=str(tasks_dir) if tasks_dir.exists() else None,
                         progress=False, load=LoadSettings(device="auto"), settings=MeasureSettings(limit=cfg.limit))
    run_measure(replace(mcfg, label="base", stage="base"), log=lambda s: None)
    t = lap("pretrain_and_measure_base", t)

    # 2. SFT onto the chosen answers, tracked
    family, answers, per_instruction, forced = _sft_answers(cfg, results, task, rng)
    tracker = PhaseTracker(replace(mcfg, model="sft-run", label="sft", stage="sft"), every=cfg.track_every)
    recipe = SFTRecipe(model=base, out=str(ck / "sft"), instructions=task.instruction_texts, options=task.labels, answers=answers, per_instruction=per_instruction,
                       n_examples=cfg.sft_examples, steps=cfg.sft_steps, lora=cfg.lora, seed=cfg.seed, callbacks=[tracker])
    sft_ckpt = run_sft(recipe, log=log)
    t = lap("sft", t)

    # 3. RL, tracked
    rl_info: dict[str, Any] = {}
    if cfg.rl:
        q_sft = _chat_aggregate(results, "sft", cfg.task)
        S = set(support_set(q_sft, 0.9).tolist())
        if cfg.rl_target == "seed-top":
            target = {task.labels[i] for i in np.argsort(q_sft)[::-1][:2]}
        else:
            target = {task.labels[i] for i in range(len(task.labels)) if i not in S}
        rl_info = {"target": sorted(target, key=task.labels.index), "sft_support": [task.labels[i] for i in sorted(S)], "rewards": list(cfg.rl_rewards)}
        tracker = PhaseTracker(replace(mcfg, model="rl-run", label="rl", stage="rl"), every=cfg.track_every)
        grpo = GRPORecipe(model=str(sft_ckpt), out=str(ck / "rl"), task=task, rewards=cfg.rl_rewards, target=target, steps=cfg.rl_steps, lora=cfg.lora, seed=cfg.seed, callbacks=[tracker])
        run_grpo(grpo, log=log)
        t = lap("rl", t)

    # 4. analysis and report
    th_file = out / "thresholds.yaml"
    th_file.write_text(f"n_boot: {cfg.n_boot}\nseed: {cfg.seed}\n")
    if answers is not None or per_instruction is not None:  # the attraction index needs what SFT was shown
        shown = np.asarray(answers if answers is not None else np.mean(per_instruction, axis=0), dtype=float)
        _record_train_answers(results, "sft", cfg.task, dict(zip(task.labels, (shown / shown.sum()).tolist())))
    analysis = analyze_dir(str(results), Thresholds.from_file(str(th_file)))
    report = None
    if cfg.report:
        try:
            from crystallab.reporting import write_report
        except ImportError:
            write_report = None
        if write_report:
            report = str(write_report(results))
    lap("analyze_and_report", t)
    summary = _summarise(cfg, analysis, family, rl_info, results, report)
    summary["forced"] = forced
    summary["timings"] = timings | {"total": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _base_prompts(results: Path, task: str) -> list[tuple[str, str, np.ndarray, float]]:
    """The base checkpoint's raw prompts: (prompt_id, family, p̃ over options, valid mass)."""
    from crystallab.store import read_table

    by: dict[str, dict] = {}
    for r in read_table(results).to_pylist():
        if r["checkpoint"] == "base" and r["task"] == task and r["prompt_kind"] == "raw":
            by.setdefault(r["prompt_id"], {"family": r["prompt_family"], "p": {}})["p"][r["option"]] = r["prob"]
    out = []
    for pid, d in sorted(by.items()):
        p = np.array([v for o, v in d["p"].items() if o != "⊥"])
        if p.sum() > 0:
            out.append((pid, d["family"], p / p.sum(), float(p.sum())))
    return out


def _sft_answers(cfg: LabConfig, results: Path, task, rng: random.Random) -> tuple[str | None, list | None, list | None, dict]:
    """(seed family, answer distribution, per-instruction distributions, what was forced)."""
    from crystallab.lab import universe as U

    base = _base_prompts(results, cfg.task)
    if cfg.sft_data == "planted":
        if cfg.base_model or cfg.task != "toy_number":
            raise UserError("--sft-data planted needs the toy universe; on a real model use base-prompt")
        family = cfg.seed_family or rng.choice([f.name for f in U.FAMILIES])
        return family, next(f.planted for f in U.FAMILIES if f.name == family).tolist(), None, {"kind": "planted", "family": family}
    if cfg.sft_data == "base-prompt":  # a distribution the base model already has on one of its prompts
        pool = [b for b in base if b[3] >= 0.3 and (cfg.seed_family is None or b[1] == cfg.seed_family)] or base
        if not pool:
            raise UserError("no base prompt has valid mass: nothing to force")
        pid, fam, p, _ = rng.choice(pool)
        return fam, p.tolist(), None, {"kind": "base-prompt", "prompt_id": pid, "family": fam}
    if cfg.sft_data == "outside":  # mass on the two options the base likes least: in no base prompt's repertoire
        agg = np.mean([b[2] for b in base], axis=0) if base else np.full(len(task.options), 1 / len(task.options))
        q = np.full(len(agg), 0.1 / max(1, len(agg) - 2))
        q[np.argsort(agg)[:2]] = 0.45
        nearest = min((float(js_distance(q, b[2])) for b in base), default=float("nan"))
        return None, (q / q.sum()).tolist(), None, {"kind": "outside", "options": [task.labels[i] for i in np.argsort(agg)[:2]], "nearest_base_js_distance": nearest}
    if cfg.sft_data == "diverse":  # every instruction its own base prompt's distribution: keeps the diversity
        picks = rng.sample(base, k=min(len(base), len(task.instructions)))
        return None, None, [b[2].tolist() for b in picks], {"kind": "diverse", "prompt_ids": [b[0] for b in picks]}
    return None, None, None, {"kind": "format"}


def _record_train_answers(results: Path, label: str, task: str, answers: dict[str, float]) -> None:
    from crystallab.store import ResultStore

    store = ResultStore(results)
    for c in store.manifest["checkpoints"]:
        if c["label"] == label:
            c.setdefault("info", {}).setdefault("train_answers", {})[task] = answers
    store.save_manifest()


def _summarise(cfg: LabConfig, analysis: Any, family: str | None, rl_info: dict, results: Path, report: str | None) -> dict[str, Any]:
    from crystallab.lab import universe as U

    task = cfg.task
    v = analysis.verdicts.get(task, {})
    nuc = v.get("nucleation")
    named_family = nuc.numbers.get("k_star") if nuc else None
    planted = {}
    if not cfg.base_model:
        P = _base_family_means(results, task)
        planted = {f.name: round(float(js_distance(P[f.name], f.planted)), 4) for f in U.FAMILIES if f.name in P}
    chat = [s for s in analysis.states if s.task == task and s.ensemble == "chat" and s.split is None]
    settle = v.get("settling")
    return {
        "config": asdict(cfg), "results": str(results), "report": report, "verdicts": {k: x.value for k, x in v.items()},
        "why": {k: x.why for k, x in v.items()}, "states": [f"{s.checkpoint}:{s.state}" for s in chat],
        "planted_family": family, "named_family": named_family, "seed_named_correctly": family is not None and family == named_family,
        "nucleation": nuc.numbers if nuc else None,
        "base_state": (analysis.state(analysis.root, task, "raw").state if analysis.root and analysis.state(analysis.root, task, "raw") else None),
        "planted_js_distance": planted, "rl": rl_info, "settling": settle.numbers if settle and settle.numbers else None,
        "dynamics": [{"checkpoint": d.checkpoint, "coordinate": d.coordinate, **{k: d.test.get(k) for k in ("verdict", "t0", "w", "share_logistic")}}
                     for d in analysis.dynamics if d.task == task],
    }


def _base_family_means(results: Path, task: str) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = {}
    for _, fam, p, _ in _base_prompts(results, task):
        groups.setdefault(fam, []).append(p)
    return {fam: np.mean(rows, axis=0) for fam, rows in groups.items()}


def _iv(x: Any) -> str:
    """``0.912 [0.880, 0.931]`` from ``[v, lo, hi]``, ``0.912`` from a number, ``n/a`` from None."""
    if isinstance(x, (list, tuple)) and len(x) == 3:
        from crystallab.analysis.types import Estimate

        return Estimate.of(*x).text(".3g")
    return "n/a" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"chat states along the ladder: {' → '.join(s['states'])}"]
    for claim in ("liquid", "nucleation", "settling"):
        if claim in s["verdicts"]:
            lines.append(f"  {claim:<10} {s['verdicts'][claim]:<12} {s['why'][claim]}")
    if s.get("planted_js_distance"):
        lines.append("base vs planted (JS distance per family): " + ", ".join(f"{k} {v:.3f}" for k, v in s["planted_js_distance"].items()))
    if s.get("planted_family"):
        ok = "k* is the planted family" if s["seed_named_correctly"] else f"the analysis found k* = {s['named_family']}"
        n = s.get("nucleation") or {}
        lines.append(f"planted seed family: {s['planted_family']} ({ok}; z_k* {_iv(n.get('z_k_star'))}, "
                     f"seed_p {_iv(n.get('seed_p'))}) [a positive control: SFT was shown this family's answers]")
    if s.get("rl"):
        st = s.get("settling") or {}
        lines.append(f"RL target {s['rl']['target']} vs SFT support {s['rl']['sft_support']}: retention {_iv(st.get('retention'))}, "
                     f"excess retention ρ {_iv(st.get('rho'))}" if st else "RL: no settling figures")
    for d in s.get("dynamics", []):
        lines.append(f"{d['checkpoint']}: {d['coordinate']}: transition test {d['verdict']} (t0 {_iv(d['t0'])}, w {_iv(d['w'])})")
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    lines.append(f"took {s['timings']['total']:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in s["timings"].items() if k != "total"))
    return "\n".join(lines)
