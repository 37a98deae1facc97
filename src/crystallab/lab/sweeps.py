"""``crystallab lab sweep``: is post-training a phase transition? (SCIENCE.md v2, "Sharpness
against a control parameter").

The control is a **mixture** of the SFT data between two base families A and B: at ``λ`` the
answers are drawn from ``(1-λ)·f̄_A + λ·f̄_B`` (``f̄``: a family's mean p̃ on the base). Each
grid point is trained ``replicas`` times from the same base, and each end state is read on the
held-out chat prompts as ``m = (d_A - d_B) / d(f̄_A, f̄_B)``: -1 at A, +1 at B. A model that only
fits its data follows the fitting null ``m_lin(λ)`` (``m`` of the data mixture itself); a
transition is steeper (``Σ``), bimodal across replicas near ``λ_c`` (the dip test), and
remembers where it came from (hysteresis: training continued at ``λ_c`` from the A-trained and
from the B-trained checkpoints ends apart). ``--sizes`` repeats the sweep on toy models of
several widths: a true transition narrows as the system grows, a crossover does not.

Nothing here fixes a verdict: ``analysis.sweeps.sweep`` computes it from the end states.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from crystallab import transitions as TR
from crystallab.analysis import Thresholds, analyze_dir
from crystallab.analysis.sweeps import order_parameter, size_trend, sweep, transition_width
from crystallab.analysis.types import Estimate, Sweep
from crystallab.console import Console
from crystallab.errors import UserError
from crystallab.lab.config import LabConfig
from crystallab.lab.study import Arm, Base, Log, _base_model, aggregates, arm_examples, base_view, measure_config
from crystallab.measuring import run_measure
from crystallab.metrics import js_distance
from crystallab.store import ResultStore, atomic_write_bytes, read_table
from crystallab.suite import Task, load_task

# ---------------------------------------------------------------------------------------------
# the sweep's parts


def pick_families(base: Base, spec: str | None) -> tuple[str, str]:
    """``A, B``: the two named families (``"qa,code"``), or the two most distant base families.

    >>> b = Base({"a": np.array([0.8, 0.1, 0.1]), "b": np.array([0.7, 0.2, 0.1]),
    ...           "c": np.array([0.1, 0.1, 0.8])}, ["1", "2", "3"])
    >>> pick_families(b, None), pick_families(b, "b,a")
    (('a', 'c'), ('b', 'a'))
    """
    if spec:
        names = [x.strip() for x in spec.split(",") if x.strip()]
        if len(names) != 2 or names[0] == names[1]:
            raise UserError(f"--families takes two different family names, A,B; got '{spec}'")
        missing = [n for n in names if n not in base.families]
        if missing:
            raise UserError(
                f"unknown family '{missing[0]}' (or no valid base prompt in it); "
                f"the base has {', '.join(sorted(base.families))}"
            )
        return names[0], names[1]
    if len(base.families) < 2:
        raise UserError("the base has fewer than 2 families with valid prompts: no mixture to sweep")
    a, b = max(combinations(sorted(base.families), 2), key=lambda p: js_distance(*(base.families[x] for x in p)))
    return a, b


def lambda_grid(n: int) -> list[float]:
    """``n`` evenly spaced values from 0 to 1 (rounded, so that labels are stable).

    >>> lambda_grid(5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return [round(float(x), 6) for x in np.linspace(0.0, 1.0, n)]


@dataclass(frozen=True)
class Point:
    """One grid point of a sweep: what its runs are trained on, and for how long."""

    label: str  # the checkpoint label of its runs
    value: float  # the control's value: λ, SFT steps or the learning rate
    lam: float  # the SFT data's mixture
    steps: int
    lr: float


def control_points(cfg: LabConfig) -> list[Point]:
    """The sweep's grid: ``--grid`` values of λ in [0, 1] (``mixture``), or at the fixed mixture
    ``--at``, SFT steps on a log grid from ``max(1, sft_steps/32)`` to ``2·sft_steps`` (``steps``: each
    point a run of its own, with its own warm-up and constant rate, so that the schedule does not
    confound the amount) or the learning rate from ``sft_lr/30`` to ``3·sft_lr`` (``lr``).

    >>> from crystallab.lab.config import LabConfig
    >>> [p.value for p in control_points(LabConfig(control="steps", sft_steps=32, grid=4))]
    [1.0, 4.0, 16.0, 64.0]
    >>> [p.label for p in control_points(LabConfig(control="lr", sft_lr=3e-4, grid=3))]
    ['lr-1e-05', 'lr-9.49e-05', 'lr-0.0009']
    """
    if cfg.control == "mixture":
        return [Point(_label(x), x, x, cfg.sft_steps, cfg.sft_lr) for x in lambda_grid(cfg.grid)]
    if cfg.control == "steps":
        ns = sorted(
            {max(1, round(float(x))) for x in np.geomspace(max(1.0, cfg.sft_steps / 32), 2 * cfg.sft_steps, cfg.grid)}
        )
        if len(ns) < 3:
            raise UserError(f"--control steps: --sft-steps {cfg.sft_steps} gives fewer than 3 distinct step counts")
        return [Point(f"steps-{n}", float(n), cfg.at, n, cfg.sft_lr) for n in ns]
    lrs = [float(f"{x:.3g}") for x in np.geomspace(cfg.sft_lr / 30, 3 * cfg.sft_lr, cfg.grid)]
    return [Point(f"lr-{v:.3g}", v, cfg.at, cfg.sft_steps, v) for v in lrs]


AXES = {"mixture": "λ", "steps": "log10 SFT steps", "lr": "log10 learning rate"}


def mixture(f_A: ArrayLike, f_B: ArrayLike, lam: float) -> np.ndarray:
    """The SFT answer distribution at ``λ``: ``(1-λ)·f̄_A + λ·f̄_B``, renormalised.

    >>> mixture([1.0, 0.0], [0.0, 1.0], 0.25).tolist()
    [0.75, 0.25]
    """
    q = (1 - lam) * np.asarray(f_A, dtype=float) + lam * np.asarray(f_B, dtype=float)
    return q / q.sum()


# ---------------------------------------------------------------------------------------------
# the run


def run_sweep(cfg: LabConfig, console: Console | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run the mixture sweep (at every ``cfg.sizes``) into ``cfg.out``; returns the summary (also
    ``cfg.out/summary.json``)."""
    from crystallab.lab.experiments import run_folder

    cfg.validate()
    control_points(cfg)  # a grid that cannot be built is one line before anything is trained
    sizes = cfg.size_list()
    if sizes and not cfg.toy:
        raise UserError("--sizes needs the toy universe (a given base model has one size)")
    console = console or Console()
    t0 = time.perf_counter()
    with run_folder(cfg, "sweep", console) as out:
        runs = []
        todo: list[int | None] = list(sizes) or [None]
        for h in todo:
            folder = out if h is None or len(sizes) == 1 else out / f"size-{h}"
            if h is not None and len(sizes) > 1:
                console.line(f"--- toy size: hidden {h} ---")
            base_dir = cfg.base_dir
            if base_dir and len(sizes) > 1:
                base_dir = str(Path(base_dir) / f"size-{h}")
            one = replace(cfg, out=str(folder), base_dir=base_dir)
            runs.append(_sweep_one(one, h, console, log or console.debug))
        s: dict[str, Any] = {
            "experiment": "sweep",
            "config": asdict(cfg),
            "sizes": runs,
            "took_s": round(time.perf_counter() - t0, 1),
        }
        if len(runs) > 1:
            widths = {r["size"]: r["sweep"]["numbers"]["width"] for r in runs}
            trend, why = size_trend(widths)
            s["size_scaling"] = {"widths": widths, "trend": trend, "why": why}
            if cfg.report:
                _sizes_report(runs, out)
                s["report"] = str(out / "report.html")
        atomic_write_bytes(out / "summary.json", json.dumps(s, indent=1, default=str).encode())
    return s


def _label(lam: float) -> str:
    return f"mix-{lam:.3f}".rstrip("0").rstrip(".") if lam not in (0.0, 1.0) else f"mix-{int(lam)}"


def _sweep_one(cfg: LabConfig, hidden: int | None, console: Console, log: Log) -> dict[str, Any]:
    from crystallab.lab.experiments import timed_stages
    from crystallab.lab.sft import SFTRecipe, run_sft
    from crystallab.lab.trainlog import StepProgress

    out = Path(cfg.out)
    ck, results, tasks_dir, data_dir = out / "checkpoints", out / "results", out / "tasks", out / "data"
    timings: dict[str, float] = {}
    stage = timed_stages(console, timings)
    base_model = _base_model(cfg, tasks_dir, ck, stage, log, StepProgress, hidden=hidden)
    task = load_task(cfg.task, tasks_dir)
    mcfg = measure_config(cfg, base_model, results, tasks_dir)
    chat = replace(mcfg.settings, prompts="chat")  # m is read on the chat prompts; the base needs its raw ones
    store = ResultStore(results)
    done = {(g[0], g[5]) for g in store.done_groups()}  # (checkpoint, replica): resumable
    with stage("measure base", "measure_base") as st:
        if ("base", None) in done:
            st.note = "reused"
        else:
            run_measure(replace(mcfg, label="base", stage="base"), log=log)
    base = base_view(results, task)
    fa, fb = pick_families(base, cfg.families)
    f_A, f_B = base.families[fa], base.families[fb]
    points = control_points(cfg)
    mix = cfg.control == "mixture"
    ends = {0.0: "A", 1.0: "B"} if mix else {}  # only the mixture has two ends to continue from

    def train(
        label: str, parent: str, start: str, answers: np.ndarray, r: int, keep: bool, st: Any, steps: int, lr: float
    ) -> None:
        """SFT one replica from ``start`` onto ``answers``, measure it, and delete its checkpoint
        unless it is needed again (the ends start the hysteresis runs)."""
        path = ck / label / f"r{r}"
        if (label, r) in done and (not keep or (path / "config.json").exists()):
            st.advance(steps)
            return
        seed = cfg.seed + r
        examples = arm_examples(Arm(label, "mix", answers=answers.tolist()), task, cfg.sft_examples, seed)
        ckpt = run_sft(
            SFTRecipe(
                model=start,
                out=str(path),
                examples=examples,
                data_file=str(data_dir / f"sft-{label}-r{r}.jsonl"),
                steps=steps,
                learning_rate=lr,
                decay=cfg.sft_decay,
                lora=cfg.lora,
                seed=seed,
                callbacks=[StepProgress(st.advance)],
            ),
            log=log,
        )
        t = time.perf_counter()
        from crystallab.models.hf import load_backend

        # one model name per label (its replicas are one checkpoint to the analysis), as the tracker does
        run_measure(
            replace(mcfg, model=f"{label}-run", label=label, stage="sft", parent=parent, replica=r, settings=chat),
            backend=load_backend(str(ckpt), mcfg.load),
            log=log,
            consolidate=False,
        )
        timings["measure"] = round(timings.get("measure", 0.0) + time.perf_counter() - t, 1)
        if not keep:
            shutil.rmtree(ckpt, ignore_errors=True)  # a merged Gemma checkpoint is 1 GB; the rows stay
            if ckpt.parent.is_dir() and not any(ckpt.parent.iterdir()):
                ckpt.parent.rmdir()

    what = {"mixture": "λ", "steps": "steps", "lr": "lr"}[cfg.control]
    for p in points:
        with stage(f"sft {what} = {p.value:g} ({cfg.replicas} replicas)", "sft", total=p.steps * cfg.replicas) as st:
            for r in range(cfg.replicas):
                train(
                    p.label, "base", base_model, mixture(f_A, f_B, p.lam), r, mix and p.lam in ends, st, p.steps, p.lr
                )
    ResultStore(results).consolidate()
    M = _end_states(results, [p.label for p in points], task, f_A, f_B, cfg.replicas)
    th = Thresholds(n_boot=cfg.n_boot, seed=cfg.seed)
    if not mix:
        s = _amount_sweep(cfg, points, M, results, task, f_A, f_B, th)
        return _finish(cfg, s, None, None, None, M, (fa, fb), f_A, f_B, task, hidden, base_model, timings, stage)
    grid = [p.value for p in points]
    first = sweep("mixture", "λ", grid, M, f_A, f_B, th=th)  # λ_c, before the hysteresis runs
    from_A: list[float] | None = None
    from_B: list[float] | None = None
    lam_h = first.numbers.get("dip_at")
    if lam_h is not None:
        from_A, from_B = [], []
        for side, end, out_list in (("A", 0.0, from_A), ("B", 1.0, from_B)):
            label = f"hyst-from-{side}"
            with stage(f"hysteresis: λ = {lam_h:g} from {side} ({cfg.replicas} replicas)", "hysteresis") as st:
                for r in range(cfg.replicas):
                    start = ck / _label(end) / f"r{r}"
                    train(
                        label,
                        _label(end),
                        str(start),
                        mixture(f_A, f_B, lam_h),
                        r,
                        False,
                        st,
                        cfg.sft_steps,
                        cfg.sft_lr,
                    )
            ResultStore(results).consolidate()
            out_list.extend(_end_states(results, [label], task, f_A, f_B, cfg.replicas)[:, 0].tolist())
    s = sweep("mixture", "λ", grid, M, f_A, f_B, ends_from_A=from_A, ends_from_B=from_B, th=th)
    return _finish(cfg, s, lam_h, from_A, from_B, M, (fa, fb), f_A, f_B, task, hidden, base_model, timings, stage)


def _amount_sweep(
    cfg: LabConfig,
    points: list[Point],
    M: np.ndarray,
    results: Path,
    task: Task,
    f_A: np.ndarray,
    f_B: np.ndarray,
    th: Thresholds,
) -> Sweep:
    """A sweep of the training amount (steps or learning rate) at the fixed mixture ``--at``:
    slopes in ``log10`` of the control, against the relaxation null from the base's own chat
    ``m`` to the data's ``m``."""
    x = np.array([p.value for p in points])
    m_end = float(TR.fitting_null([cfg.at], f_A, f_B)[0])
    base = _end_states(results, ["base"], task, f_A, f_B, 1)[0, 0]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(M, axis=0)
    note = ""
    m_start = float(base)
    if not math.isfinite(m_start):  # the base assistant does not answer in-set: start where training is first read
        m_start = float(med[0])
        note = "the base's held-out chat answers are below v_min: the null starts at the first grid point's median"
    m_null = TR.relaxation_null(x, m_start, m_end, med)
    s = sweep(cfg.control, AXES[cfg.control], np.log10(x).tolist(), M, f_A, f_B, m_null=m_null, th=th)
    s.numbers.update(
        {
            "values": x.tolist(),
            "at": cfg.at,
            "m_start": _round(m_start),
            "m_end": _round(m_end),
            "null_note": note,
        }
    )
    return s


def _finish(
    cfg: LabConfig,
    s: Sweep,
    lam_h: float | None,
    from_A: list[float] | None,
    from_B: list[float] | None,
    M: np.ndarray,
    families: tuple[str, str],
    f_A: np.ndarray,
    f_B: np.ndarray,
    task: Task,
    hidden: int | None,
    base_model: str,
    timings: dict[str, float],
    stage: Any,
) -> dict[str, Any]:
    """The sweep's own numbers, its analysis and report, and its summary entry."""
    out = Path(cfg.out)
    results = out / "results"
    fa, fb = families
    width = transition_width(s.grid, M, n_boot=cfg.n_boot, seed=cfg.seed)
    s.numbers.update(
        {
            "control": cfg.control,
            "families": [fa, fb],
            "f_A": [round(float(x), 4) for x in f_A],
            "f_B": [round(float(x), 4) for x in f_B],
            "d_AB": round(float(js_distance(f_A, f_B)), 4),
            "options": list(task.labels),
            "hysteresis_lambda": lam_h,
            "hysteresis_diff": _round(float(np.nanmean(from_A) - np.nanmean(from_B))) if from_A and from_B else None,
            "width": [_round(x) for x in width],
            "size": hidden,
            "n_params": _n_params(base_model) if cfg.toy else None,
            "valid_runs": int(np.isfinite(M).sum()),
            "runs": int(M.size),
        }
    )
    if hidden is not None:
        s = replace(s, name=f"{s.name} h={hidden}")
    th = Thresholds(n_boot=cfg.n_boot, seed=cfg.seed)
    with stage("analyze", "analyze"):
        an = analyze_dir(str(results), th)
        an = replace(an, sweeps=[s])
        atomic_write_bytes(results / "analysis.json", json.dumps(an.to_json(), default=str).encode())
    if cfg.report:
        from crystallab.reporting import write_report

        with stage("report", "report") as st:
            write_report((an, results), notes=[sweep_note(s, cfg)])
            st.note = f"→ {results / 'report.html'}"
    return {
        "folder": str(out),
        "results": str(results),
        "report": str(results / "report.html") if cfg.report else None,
        "base_model": base_model,
        "size": hidden,
        "task": task.id,
        "replicas": cfg.replicas,
        "sweep": _sweep_json(s),
        "timings": timings,
    }


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _n_params(path: str) -> int | None:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    h, L, V = cfg.get("hidden_size"), cfg.get("num_hidden_layers"), cfg.get("vocab_size")
    if not (h and L and V):
        return None
    return int(V * h + L * (4 * h * h + 3 * h * cfg.get("intermediate_size", 2 * h)))


def _end_states(
    results: Path, labels: list[str], task: Task, f_A: np.ndarray, f_B: np.ndarray, replicas: int
) -> np.ndarray:
    """``m`` of each (replica, label) end state on the held-out chat prompts; NaN where no
    held-out prompt has valid mass ≥ v_min (an assistant that stops answering is no state)."""
    table = read_table(results)
    M = np.full((replicas, len(labels)), np.nan)
    for j, label in enumerate(labels):
        by_step = aggregates(table, label, task.id, options=task.labels)
        final = by_step[max(by_step)] if by_step else {}
        for r, q in final.items():
            if r < replicas:
                M[r, j] = order_parameter(q, f_A, f_B)
    return M


def _sweep_json(s: Sweep) -> dict[str, Any]:
    return {
        "name": s.name,
        "verdict": s.verdict,
        "grid": s.grid,
        "m": s.m,
        "m_median": [_round(x) for x in np.nanmedian(np.array(s.m, dtype=float), axis=0)] if s.m else [],
        "m_lin": [round(x, 4) for x in s.m_lin],
        "sharpness": s.sharpness.to_json(),
        "lambda_c": s.lambda_c.to_json(),
        "dip": s.dip,
        "dip_p": s.dip_p,
        "hysteresis_p": s.hysteresis_p,
        "numbers": s.numbers,
    }


def sweep_note(s: Sweep, cfg: LabConfig) -> str:
    """What the report says first about the sweep."""
    fa, fb = s.numbers.get("families", ["A", "B"])
    n = s.numbers
    if n.get("control", "mixture") != "mixture":
        values = n.get("values") or []
        return (
            f"{n['control']} sweep of `crystallab lab sweep --control {n['control']}`: SFT answers drawn from "
            f"(1-λ)·f̄_{fa} + λ·f̄_{fb} at λ = {n.get('at')} (the base families {fa} and {fb}, JS distance "
            f"{n.get('d_AB')}), {len(values)} values of the {AXES[n['control']].removeprefix('log10 ')}"
            f" ({', '.join(f'{v:g}' for v in values)}) × {cfg.replicas} replica(s), each a run of its own from the "
            f"base; m is read on the held-out chat prompts. The null is a relaxation from the base's m "
            f"({n.get('m_start')}) to the data's ({n.get('m_end')}) at a constant rate, fitted to the median curve. "
            + (n.get("null_note") or "")
        )
    return (
        f"Mixture sweep of `crystallab lab sweep`: SFT answers drawn from (1-λ)·f̄_{fa} + λ·f̄_{fb} (the base "
        f"families {fa} and {fb}, JS distance {s.numbers.get('d_AB')}), {len(s.grid)} values of λ × {cfg.replicas} "
        f"replica(s), {cfg.sft_steps} SFT steps each; m is read on the held-out chat prompts. Hysteresis: "
        f"training continued at λ = {s.numbers.get('hysteresis_lambda')} from the λ = 0 and λ = 1 checkpoints, "
        "for as many steps: a model that has not finished relaxing also remembers its start, so read the "
        "hysteresis p beside Σ and the dip test."
    )


def _sizes_report(runs: list[dict[str, Any]], out: Path) -> None:
    """One page over every size: each size's sweep, and the width against size."""
    from crystallab.analysis import load_analysis
    from crystallab.reporting import write_report

    sweeps = [load_analysis(r["results"]).sweeps[0] for r in runs]
    largest = runs[-1]
    an = replace(load_analysis(largest["results"]), sweeps=sweeps)
    write_report(
        (an, Path(largest["results"])),
        out / "report.html",
        notes=[
            f"Mixture sweeps at {len(runs)} toy sizes (hidden {', '.join(str(r['size']) for r in runs)}); the "
            f"verdicts, heatmaps and states are those of the largest size; each size's own report: "
            + ", ".join(str(r["report"]) for r in runs)
        ],
    )


# ---------------------------------------------------------------------------------------------
# what the console prints


def _iv(x: Any) -> str:
    if isinstance(x, (list, tuple)) and len(x) == 3:
        return Estimate.of(*x).text(".3g")
    return "n/a" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def sweep_text(s: dict[str, Any]) -> str:
    """Per size: m(λ) against m_lin(λ), Σ, λ_c, dip and hysteresis p, the verdict; then width
    against size."""
    lines = []
    for run in s["sizes"]:
        w = run["sweep"]
        n = w["numbers"]
        size = f" (toy hidden {run['size']}, {n.get('n_params')} parameters)" if run["size"] else ""
        lines.append(
            f"{n.get('control', 'mixture')} sweep {n['families'][0]} → {n['families'][1]}{size}: {w['verdict']}: "
            f"Σ {_iv(w['sharpness'])}, λ_c {_iv(w['lambda_c'])}, "
            f"dip p {_iv(w['dip_p'])} (at {_iv(n.get('dip_at'))}), "
            "hysteresis p "
            f"{_iv(w['hysteresis_p'])} (Δm {_iv(n.get('hysteresis_diff'))}), width {_iv(n['width'])}; "
            f"{n['valid_runs']}/{n['runs']} runs answered in-set"
        )
        head = (
            ("  λ      " + " ".join(f"{x:6.2f}" for x in w["grid"]))
            if "values" not in n
            else (f"  {n['control']:<7}" + " ".join(f"{x:6.3g}" for x in n["values"]))
        )
        null = "  m_lin  " if "values" not in n else "  null   "
        m_row = " ".join("   n/a" if x is None else f"{x:6.2f}" for x in w["m_median"])
        null_row = " ".join("   n/a" if x is None or x != x else f"{x:6.2f}" for x in w["m_lin"])
        lines.append(f"{head}\n  m      {m_row}\n{null}{null_row}")
        t = run["timings"]
        lines.append(f"  took {sum(t.values()):.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()))
    if s.get("size_scaling"):
        sc = s["size_scaling"]
        lines.append(f"size scaling: {sc['trend']}: {sc['why']}")
    return "\n".join(lines)
