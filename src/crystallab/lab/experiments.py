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
import warnings
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from crystallab.analysis import Thresholds, analyze_dir
from crystallab.analysis.types import Estimate
from crystallab.console import Console, Stage
from crystallab.errors import UserError, require
from crystallab.lab import universe as U
from crystallab.lab.config import (  # noqa: F401
    EXPERIMENTS,
    RL_TARGETS,
    SFT_DATA,
    LabConfig,
    recorded,
    resolve_lab_config,
)
from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
from crystallab.metrics import js_distance, support_set
from crystallab.models.base import LoadSettings
from crystallab.runconfig import write_config
from crystallab.store import OTHER, ResultStore, atomic_write_bytes, read_table, rows_where, writer_lock
from crystallab.suite import TaskWarning, load_task

LOG_FILE = "train.log"
Log = Callable[[str], None]


def _chat_aggregate(results: Path, label: str, task: str) -> np.ndarray:
    """The measured chat aggregate (renormalised) of a checkpoint's last tracked step."""
    rows = rows_where(read_table(results), checkpoint=label, task=task, prompt_kind="chat")
    last = max(r["step"] or 0 for r in rows)
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        if (r["step"] or 0) == last:
            by.setdefault(r["prompt_id"], {})[r["option"]] = r["prob"]
    opts = [o for o in by[next(iter(by))] if o != OTHER]
    P = np.array([[d[o] for o in opts] for d in by.values()])
    P = P[P.sum(1) > 0]
    return (P / P.sum(1, keepdims=True)).mean(0)


def run_lab(
    cfg: LabConfig, log: Log | None = None, console: Console | None = None, experiment: str = "planted-seed"
) -> dict[str, Any]:
    """Run one experiment into ``cfg.out``; returns its summary (also in summary.json).

    The folder records the resolved settings (``config.yaml``, a valid ``--config`` to rerun it)
    and everything the trainers and libraries log (``train.log``); ``console`` prints one line
    per stage. ``log`` takes crystallab's detail messages (default: the log file)."""
    cfg.validate_control()
    console = console or Console()
    with run_folder(cfg, experiment, console) as out:
        with warnings.catch_warnings():
            # the toy task has one chat family by construction (its instructions are one family)
            warnings.filterwarnings("ignore", message=f".*task '{U.TASK_ID}'", category=TaskWarning)
            s = _run_lab(cfg, log or console.debug, console, experiment)
        s["experiment"] = experiment
        atomic_write_bytes(out / "summary.json", json.dumps(s, indent=1, default=str).encode())
        return s


def timed_stages(console: Console, timings: dict[str, float]) -> Callable[..., Any]:
    """``stage(name, key, **kw)``: a console stage whose seconds add up under ``timings[key]``
    (the replicas of a study add into one figure per kind of stage)."""

    @contextmanager
    def stage(name: str, key: str, **kw: Any) -> Iterator[Stage]:
        t = time.perf_counter()
        with console.stage(name, **kw) as st:
            yield st
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t, 1)

    return stage


@contextmanager
def run_folder(cfg: LabConfig, experiment: str, console: Console) -> Iterator[Path]:
    """The run folder, created and locked (one experiment per folder at a time), with the
    resolved settings written (``config.yaml``) and the libraries' logs going to ``train.log``;
    the lab extra is checked before anything is written."""
    for module in ("torch", "transformers", "datasets", "trl", "peft"):
        require(module, "lab")
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the lab run to {cfg.out}: {exc.strerror or exc}") from exc
    with writer_lock(out), console.logging_to(out / LOG_FILE):
        write_config(out, recorded(cfg, experiment), EXPERIMENTS[experiment].command)
        yield out


def _run_lab(cfg: LabConfig, log: Log, console: Console, experiment: str = "planted-seed") -> dict[str, Any]:
    from crystallab.lab.rl import GRPORecipe, run_grpo  # torch, transformers, trl: only when training
    from crystallab.lab.sft import SFTRecipe, run_sft
    from crystallab.lab.tracker import PhaseTracker
    from crystallab.lab.trainlog import StepProgress

    t0 = time.perf_counter()
    out = Path(cfg.out)
    ck, results, tasks_dir = out / "checkpoints", out / "results", out / "tasks"
    rng = random.Random(cfg.seed)
    timings: dict[str, float] = {}
    stage = timed_stages(console, timings)

    # 1. the base model
    if cfg.base_model:
        base = cfg.base_model
    else:
        U.write_task(tasks_dir)
        base_dir = Path(cfg.base_dir or ck / "base")  # several seeds may share one universe
        if (base_dir / "config.json").exists():
            base = str(base_dir)
            log(f"reusing the toy universe in {base_dir}")
        else:
            with stage("pretrain", "pretrain", total=cfg.pretrain_steps) as st:
                seed = cfg.universe_seed if cfg.universe_seed is not None else cfg.seed
                base = str(
                    U.pretrain(
                        base_dir, seed=seed, steps=cfg.pretrain_steps, log=log, callbacks=[StepProgress(st.advance)]
                    )
                )
    task = load_task(cfg.task, tasks_dir if tasks_dir.exists() else None)
    mcfg = MeasureConfig(
        model=base,
        tasks=[cfg.task],
        out=str(results),
        tasks_dir=str(tasks_dir) if tasks_dir.exists() else None,
        progress=False,
        load=LoadSettings(device="auto"),
        settings=MeasureSettings(limit=cfg.limit),
    )
    with stage("measure base", "measure_base"):
        run_measure(replace(mcfg, label="base", stage="base"), log=log)

    # 2. SFT onto the chosen answers, tracked
    family, answers, per_instruction, forced = _sft_answers(cfg, results, task, rng)
    with stage("sft", "sft", total=cfg.sft_steps) as st:
        tracker = PhaseTracker(replace(mcfg, model="sft-run", label="sft", stage="sft"), every=cfg.track_every, log=log)
        recipe = SFTRecipe(
            model=base,
            out=str(ck / "sft"),
            instructions=task.instruction_texts,
            options=task.labels,
            answers=answers,
            per_instruction=per_instruction,
            n_examples=cfg.sft_examples,
            steps=cfg.sft_steps,
            learning_rate=cfg.sft_lr,
            decay=cfg.sft_decay,
            lora=cfg.lora,
            seed=cfg.seed,
            callbacks=[tracker, StepProgress(st.advance)],
        )
        sft_ckpt = run_sft(recipe, log=log)

    # 3. RL, tracked
    rl_info: dict[str, Any] = {}
    if cfg.rl:
        q_sft = _chat_aggregate(results, "sft", cfg.task)
        S = set(support_set(q_sft, 0.9).tolist())
        if cfg.rl_target == "seed-top":
            target = {task.labels[i] for i in np.argsort(q_sft)[::-1][:2]}
        else:
            target = {task.labels[i] for i in range(len(task.labels)) if i not in S}
        rl_info = {
            "target": sorted(target, key=task.labels.index),
            "sft_support": [task.labels[i] for i in sorted(S)],
            "rewards": list(cfg.rl_rewards),
        }
        with stage("rl", "rl", total=cfg.rl_steps) as st:
            tracker = PhaseTracker(
                replace(mcfg, model="rl-run", label="rl", stage="rl"), every=cfg.track_every, log=log
            )
            grpo = GRPORecipe(
                model=str(sft_ckpt),
                out=str(ck / "rl"),
                task=task,
                rewards=cfg.rl_rewards,
                target=target,
                steps=cfg.rl_steps,
                lora=cfg.lora,
                seed=cfg.seed,
                callbacks=[tracker, StepProgress(st.advance)],
            )
            run_grpo(grpo, log=log)

    # 4. analysis and report
    with stage("analyze", "analyze"):
        ResultStore(results).consolidate()  # the trackers leave it to the end
        th_file = out / "thresholds.yaml"
        th_file.write_text(f"n_boot: {cfg.n_boot}\nseed: {cfg.seed}\n")
        if answers is not None or per_instruction is not None:  # the attraction index needs what SFT was shown
            rows = answers if answers is not None else np.mean(np.asarray(per_instruction), axis=0)
            shown = np.asarray(rows, dtype=float)
            _record_train_answers(results, "sft", cfg.task, dict(zip(task.labels, (shown / shown.sum()).tolist())))
        analysis = analyze_dir(str(results), Thresholds.from_file(str(th_file)))
    report = None
    if cfg.report:
        from crystallab.reporting import write_report

        with stage("report", "report") as st:
            report = str(write_report(results, notes=_control_notes(cfg, experiment)))
            st.note = f"→ {report}"
    summary = _summarise(cfg, analysis, family, rl_info, results, report)
    summary["forced"] = forced
    summary["timings"] = timings | {"total": round(time.perf_counter() - t0, 1)}
    return summary


def _control_notes(cfg: LabConfig, experiment: str) -> list[str]:
    """What a positive control's report says first: its answer is built into its inputs."""
    if not EXPERIMENTS[experiment].control:
        return []
    shown = {
        "planted": "one planted family's answer distribution",
        "base-prompt": "one base prompt's own measured distribution",
        "outside": "mass on the two options the base likes least (outside its repertoire)",
        "diverse": "each instruction its own base prompt's distribution",
        "format": "no random task",
    }[cfg.sft_data]
    return [
        f"`crystallab {EXPERIMENTS[experiment].command}` is a positive control: SFT was shown {shown}, so what "
        "the analysis finds is built into the inputs. A 'holds' here checks the instrument, not the claim; the "
        "non-circular tests are `crystallab lab generic-sft`, `random-target`, `erasure` and `rl-escape`."
    ]


def run_seeds(
    cfg: LabConfig, seeds: int, console: Console | None = None, experiment: str = "planted-seed", log: Log | None = None
) -> dict[str, Any]:
    """``cfg`` with ``seeds`` seeds (cfg.seed, cfg.seed + 1, ...): one run folder each under
    ``cfg.out``, sharing one pretrained toy universe; with planted SFT data, the tally of how
    often the analysis named the planted family (written to ``cfg.out/tally.json``).
    Returns ``{"runs": [summary, ...], "tally": {...} or None}``."""
    if seeds <= 0:
        raise UserError("--seeds must be positive")
    console = console or Console()
    if seeds == 1:
        return {"runs": [run_lab(cfg, log, console, experiment)], "tally": None}
    out = Path(cfg.out)
    runs = []
    for k in range(seeds):
        seed = cfg.seed + k
        run = replace(
            cfg,
            out=str(out / f"seed-{seed}"),
            seed=seed,
            base_dir=cfg.base_dir or str(out / "universe"),
            universe_seed=cfg.universe_seed if cfg.universe_seed is not None else cfg.seed,
        )
        console.line(f"--- seed {seed} ---")
        runs.append(run_lab(run, log, console, experiment))
    tally = None
    if cfg.sft_data == "planted":
        tally = planted_tally(runs)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "tally.json", json.dumps(tally, indent=1, default=str).encode())
        tally["path"] = str(out / "tally.json")
    return {"runs": runs, "tally": tally}


def planted_tally(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the analysis named the planted family, and how often nucleation held."""
    rows = [
        {
            "seed": s["config"]["seed"],
            "planted": s["planted_family"],
            "named": s["named_family"],
            "z_k_star": (s["nucleation"] or {}).get("z_k_star"),
            "seed_p": (s["nucleation"] or {}).get("seed_p"),
            "nucleation": s["verdicts"].get("nucleation"),
        }
        for s in runs
    ]
    return {
        "named_correctly": sum(bool(s["seed_named_correctly"]) for s in runs),
        "confirmed": sum(s["verdicts"].get("nucleation") == "holds" for s in runs),
        "seeds": len(runs),
        "runs": rows,
    }


def tally_text(t: dict[str, Any]) -> str:
    lines = [
        f"seed {r['seed']}: planted {r['planted']:<10} k* {str(r['named']):<10} z {_iv(r['z_k_star'])}  "
        f"seed_p {_iv(r['seed_p'])}  nucleation {r['nucleation']}"
        for r in t["runs"]
    ]
    lines.append(
        f"tally (a positive control): k* was the planted family in {t['named_correctly']} of "
        f"{t['seeds']} seeds (nucleation holds in {t['confirmed']}); {t.get('path', 'tally.json')}"
    )
    return "\n".join(lines)


def escape_text(s: dict[str, Any]) -> str | None:
    """forced-seed's answer: did RL escape the support SFT forced? (None without RL figures)."""
    st = s.get("settling") or {}
    if st.get("rho") is None:
        return None
    verdict = s["verdicts"].get("settling")
    answer = {"fails": "yes", "holds": "no"}.get(verdict or "", "inconclusive")
    return (
        f"can RL escape the forced seed's support? {answer} (settling {verdict}): rewarded only for "
        f"{s['rl']['target']}, RL kept excess retention ρ {_iv(st['rho'])} (retention {_iv(st['retention'])}) "
        f"on the SFT support "
        f"{s['rl']['sft_support']}"
    )


def _base_prompts(results: Path, task: str) -> list[tuple[str, str, np.ndarray, float]]:
    """The base checkpoint's raw prompts: (prompt_id, family, p̃ over options, valid mass)."""
    by: dict[str, dict] = {}
    for r in rows_where(read_table(results), checkpoint="base", task=task, prompt_kind="raw"):
        by.setdefault(r["prompt_id"], {"family": r["prompt_family"], "p": {}})["p"][r["option"]] = r["prob"]
    out = []
    for pid, d in sorted(by.items()):
        p = np.array([v for o, v in d["p"].items() if o != OTHER])
        if p.sum() > 0:
            out.append((pid, d["family"], p / p.sum(), float(p.sum())))
    return out


def _sft_answers(
    cfg: LabConfig, results: Path, task, rng: random.Random
) -> tuple[str | None, list | None, list | None, dict]:
    """(seed family, answer distribution, per-instruction distributions, what was forced)."""
    base = _base_prompts(results, cfg.task)
    if cfg.sft_data == "planted":  # validate_control() checked it is the toy universe
        family = cfg.seed_family or rng.choice([f.name for f in U.FAMILIES])
        return (
            family,
            next(f.planted for f in U.FAMILIES if f.name == family).tolist(),
            None,
            {"kind": "planted", "family": family},
        )
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
        return (
            None,
            (q / q.sum()).tolist(),
            None,
            {
                "kind": "outside",
                "options": [task.labels[i] for i in np.argsort(agg)[:2]],
                "nearest_base_js_distance": nearest,
            },
        )
    if cfg.sft_data == "diverse":  # every instruction its own base prompt's distribution: keeps the diversity
        picks = rng.sample(base, k=min(len(base), len(task.instructions)))
        return None, None, [b[2].tolist() for b in picks], {"kind": "diverse", "prompt_ids": [b[0] for b in picks]}
    return None, None, None, {"kind": "format"}


def _record_train_answers(results: Path, label: str, task: str, answers: dict[str, float]) -> None:
    store = ResultStore(results)
    for c in store.manifest["checkpoints"]:
        if c["label"] == label:
            c.setdefault("info", {}).setdefault("train_answers", {})[task] = answers
    store.save_manifest()


def _summarise(
    cfg: LabConfig, analysis: Any, family: str | None, rl_info: dict, results: Path, report: str | None
) -> dict[str, Any]:
    task = cfg.task
    v = analysis.verdicts.get(task, {})
    nuc = v.get("nucleation")
    named_family = nuc.numbers.get("k_star") if nuc else None
    planted = {}
    if cfg.toy:
        P = _base_family_means(results, task)
        planted = {f.name: round(float(js_distance(P[f.name], f.planted)), 4) for f in U.FAMILIES if f.name in P}
    chat = [s for s in analysis.states if s.task == task and s.ensemble == "chat" and s.split is None]
    settle = v.get("settling")
    return {
        "config": asdict(cfg),
        "results": str(results),
        "report": report,
        "verdicts": {k: x.value for k, x in v.items()},
        "why": {k: x.why for k, x in v.items()},
        "states": [f"{s.checkpoint}:{s.state}" for s in chat],
        "planted_family": family,
        "named_family": named_family,
        "seed_named_correctly": family is not None and family == named_family,
        "nucleation": nuc.numbers if nuc else None,
        "base_state": (
            analysis.state(analysis.root, task, "raw").state
            if analysis.root and analysis.state(analysis.root, task, "raw")
            else None
        ),
        "planted_js_distance": planted,
        "rl": rl_info,
        "settling": settle.numbers if settle and settle.numbers else None,
        "dynamics": [
            {
                "checkpoint": d.checkpoint,
                "coordinate": d.coordinate,
                **{k: d.test.get(k) for k in ("verdict", "t0", "w", "share_logistic")},
            }
            for d in analysis.dynamics
            if d.task == task
        ],
    }


def _base_family_means(results: Path, task: str) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = {}
    for _, fam, p, _ in _base_prompts(results, task):
        groups.setdefault(fam, []).append(p)
    return {fam: np.mean(rows, axis=0) for fam, rows in groups.items()}


def _iv(x: Any) -> str:
    """``0.912 [0.880, 0.931]`` from ``[v, lo, hi]``, ``0.912`` from a number, ``n/a`` from None."""
    if isinstance(x, (list, tuple)) and len(x) == 3:
        return Estimate.of(*x).text(".3g")
    return "n/a" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"chat states along the ladder: {' → '.join(s['states'])}"]
    for claim in ("liquid", "nucleation", "settling"):
        if claim in s["verdicts"]:
            lines.append(f"  {claim:<10} {s['verdicts'][claim]:<12} {s['why'][claim]}")
    if s.get("planted_js_distance"):
        lines.append(
            "base vs planted (JS distance per family): "
            + ", ".join(f"{k} {v:.3f}" for k, v in s["planted_js_distance"].items())
        )
    if s.get("planted_family"):
        ok = "k* is the planted family" if s["seed_named_correctly"] else f"the analysis found k* = {s['named_family']}"
        n = s.get("nucleation") or {}
        lines.append(
            f"planted seed family: {s['planted_family']} ({ok}; z_k* {_iv(n.get('z_k_star'))}, "
            f"seed_p {_iv(n.get('seed_p'))}) [a positive control: SFT was shown this family's answers]"
        )
    if s.get("rl"):
        st = s.get("settling") or {}
        lines.append(
            f"RL target {s['rl']['target']} vs SFT support {s['rl']['sft_support']}: "
            f"retention {_iv(st.get('retention'))}, "
            f"excess retention ρ {_iv(st.get('rho'))}"
            if st
            else "RL: no settling figures"
        )
    for d in s.get("dynamics", []):
        lines.append(
            f"{d['checkpoint']}: {d['coordinate']}: transition test {d['verdict']} (t0 {_iv(d['t0'])}, w {_iv(d['w'])})"
        )
    lines.append(
        f"took {s['timings']['total']:.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in s["timings"].items() if k != "total")
    )
    return "\n".join(lines)
