"""The non-circular experiments of the lab (SCIENCE.md, "Controlled experiments the lab must
run"), replicated and read on held-out prompts.

Each experiment is a set of **arms**: an SFT condition (and, for some, a GRPO run after it),
trained ``replicas`` times from one base model (a pretrained toy universe, or a given
checkpoint). Every arm's replicas share its checkpoint label and differ in ``replica``; the
analysis reads them with hierarchical intervals. Each arm is analysed as its own ladder
(base → SFT → RL) into ``RUN/arms/LABEL/`` (analysis.json, report.html); the whole folder gets
one report too, and ``summary.json`` holds every figure the experiment prints.

- ``generic-sft``: SFT on deterministic tasks only (``lab.generic``), no random task; two
  variants, no option mention in any completion (``none``) and option mentions that follow a
  known distribution (``known``). Does the chat ensemble crystallise, inside which base basin,
  the same across replicas, and nearer a basin than the mentions?
- ``random-target``: SFT onto targets drawn over the simplex, some far from every basin. The
  null for nucleation: training goes to the data (``A ≤ 0``) or is pulled into a basin (``A > 0``).
- ``erasure``: the raw ensemble's ``phi`` and ``n_basins`` after generic, seed and diverse SFT.
- ``rl-escape``: SFT data mixed so that the rewarded option's mass ``m0`` spans a grid, then
  GRPO under a seed-blind reward (a random utility per option, a diversity bonus, or validity),
  beside the bandit null (``lab.bandit``).
- ``demo``: generic SFT, then GRPO under the random utility.

Nothing here reads a stage name or fixes a verdict: they come from the analysis.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from crystallab.analysis import Thresholds, analyze, analyze_dir
from crystallab.analysis.types import Analysis, Estimate
from crystallab.console import Console
from crystallab.errors import UserError
from crystallab.lab import bandit as B
from crystallab.lab import universe as U
from crystallab.lab.config import EXPERIMENTS, LabConfig
from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
from crystallab.metrics import attraction_index, js_distance, support_set
from crystallab.models.base import LoadSettings
from crystallab.results import Results
from crystallab.store import OTHER, ResultStore, atomic_write_bytes, read_table, rows_where
from crystallab.suite import Task, load_task

Log = Callable[[str], None]
V_MIN = Thresholds().v_min  # a prompt below it tells little about the model's answers (SCIENCE.md)
STUDIES = ("demo", "generic-sft", "random-target", "erasure", "rl-escape")


@dataclass
class Arm:
    """One trained condition: what SFT is shown, and whether GRPO follows."""

    label: str  # the SFT checkpoint's label (shared by its replicas)
    kind: str  # generic | target | seed | diverse | mix
    answers: list[float] | None = None  # SFT answers over the options (target, seed, mix)
    per_family: dict[str, list[float]] | None = None  # diverse: each chat family its own distribution
    mentions: str | None = None  # generic: none | known
    rl: str | None = None  # the GRPO child's label, or None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Base:
    """What the base measurement says: each raw family's mean p̃ (the basins' centres)."""

    families: dict[str, np.ndarray]
    options: list[str]

    def nearest(self, q: np.ndarray) -> tuple[str, float]:
        name = min(self.families, key=lambda f: float(js_distance(q, self.families[f])))
        return name, float(js_distance(q, self.families[name]))


# ---------------------------------------------------------------------------------------------
# the arms of each experiment


def _floats(spec: str) -> list[float]:
    try:
        return [float(x) for x in str(spec).split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"expected comma-separated numbers, got '{spec}'") from exc


def random_targets(base: Base, n: int, seed: int) -> list[np.ndarray]:
    """``n`` targets over the simplex spanning entropy: Dirichlet draws with concentrations
    log-spaced from 0.1 to 3; every other one is the farthest of 64 draws from every basin.

    >>> b = Base({"a": np.array([0.9, 0.05, 0.05]), "b": np.array([0.05, 0.9, 0.05])}, ["1", "2", "3"])
    >>> ts = random_targets(b, 3, seed=0)
    >>> len(ts), all(abs(t.sum() - 1) < 1e-9 for t in ts)
    (3, True)
    """
    rng = np.random.default_rng(seed)
    k = len(base.options)
    out = []
    for i, alpha in enumerate(np.geomspace(0.1, 3.0, max(n, 2))[:n]):
        draws = rng.dirichlet(np.full(k, alpha), size=64 if i % 2 == 0 else 1)
        far = max(draws, key=lambda t: base.nearest(t)[1])
        out.append(np.clip(far, 1e-6, None) / np.clip(far, 1e-6, None).sum())
    return out


def plan(experiment: str, cfg: LabConfig, base: Base, task: Task) -> list[Arm]:
    """The arms an experiment trains (deterministic given ``cfg.seed``)."""
    rng = random.Random(cfg.seed)
    mentions = [m.strip() for m in cfg.mentions.split(",") if m.strip()]
    # the known mentions follow a distribution far from every basin (never the uniform one, which
    # is the code family's): a chat aggregate near them came from the SFT data, not the base
    far = random_targets(base, 1, cfg.seed + 1)[0]

    def info(m: str, **kw: Any) -> dict[str, Any]:
        if m != "known":
            return kw
        near, d = base.nearest(far)
        return {
            **kw,
            "mention_dist": [round(float(x), 4) for x in far],
            "mentions_nearest_basin": near,
            "mentions_d_nearest": round(d, 4),
        }

    if experiment == "demo":
        m = mentions[0]
        util = B.utility_for(cfg.seed, len(base.options))
        rewarded = base.options[B.rewarded_option(util)]
        return [Arm("sft", "generic", mentions=m, rl="rl", info=info(m, reward=cfg.reward, rewarded=rewarded))]
    if experiment == "generic-sft":
        return [Arm(f"generic-{m}", "generic", mentions=m, info=info(m)) for m in mentions]
    seed_family = cfg.seed_family or rng.choice(sorted(base.families))
    if seed_family not in base.families:
        raise UserError(f"unknown family '{seed_family}'; the base has {', '.join(sorted(base.families))}")
    if experiment == "random-target":
        arms = []
        for i, t in enumerate(random_targets(base, cfg.targets, cfg.seed)):
            near, d = base.nearest(t)
            entropy = float(-(t * np.log(t)).sum() / math.log(len(t)))
            arms.append(
                Arm(
                    f"target-{i}",
                    "target",
                    answers=t.tolist(),
                    info={"nearest_basin": near, "d_nearest": round(d, 4), "entropy_norm": round(entropy, 4)},
                )
            )
        return arms
    if experiment == "erasure":
        chat_families = sorted({i.family for i in task.instructions})
        raw = sorted(base.families)
        # each chat family its mirrored raw family's distribution (same name), else one in turn
        per = {
            c: base.families[c if c in base.families else raw[j % len(raw)]].tolist()
            for j, c in enumerate(chat_families)
        }
        return [
            Arm("generic", "generic", mentions="none"),
            Arm("seed", "seed", answers=base.families[seed_family].tolist(), info={"family": seed_family}),
            Arm("diverse", "diverse", per_family=per),
        ]
    if experiment == "rl-escape":
        util = B.utility_for(cfg.seed, len(base.options))
        star = B.rewarded_option(util)
        q_seed = base.families[seed_family]
        arms = []
        for m0 in _floats(cfg.m0):
            tag = f"{m0:g}"
            arms.append(
                Arm(
                    f"sft-m0={tag}",
                    "mix",
                    answers=B.place_mass(q_seed, star, m0).tolist(),
                    rl=f"rl-m0={tag}",
                    info={"m0": m0, "family": seed_family, "rewarded": base.options[star], "reward": cfg.reward},
                )
            )
        return arms
    raise UserError(f"unknown experiment '{experiment}'; use one of {', '.join(STUDIES)}")


def train_instructions(task: Task) -> list[Any]:
    """The instructions training may see: every one not marked held out."""
    return [i for i in task.instructions if i.split != "heldout"]


def arm_examples(arm: Arm, task: Task, n: int, seed: int) -> list[dict[str, str]]:
    """The arm's SFT data as ``{"instruction", "completion"}`` (rendered later with the model's
    template). Random-task data use the train instructions only."""
    if arm.kind == "generic":
        from crystallab.lab.generic import generic_examples

        return [
            {"instruction": e["instruction"], "completion": e["completion"]}
            for e in generic_examples(
                n,
                seed=seed,
                options=task.labels,
                mentions=arm.mentions or "none",
                mention_dist=arm.info.get("mention_dist"),
            )
        ]
    from crystallab.lab.sft import assign_answers

    rng = random.Random(seed)
    train = train_instructions(task)
    chosen = [rng.choice(train) for _ in range(n)]
    # exact quotas, per family where the arm gives each its own distribution
    keys = [i.family if arm.per_family else "" for i in chosen]
    uniform = [1.0] * len(task.labels)
    dists = {k: (arm.per_family.get(k) if arm.per_family else arm.answers) or uniform for k in set(keys)}
    answers = assign_answers(keys, dists, list(task.labels), rng)
    return [{"instruction": i.text, "completion": a} for i, a in zip(chosen, answers)]


# ---------------------------------------------------------------------------------------------
# reading the table


def aggregates(
    table: Any,
    label: str,
    task: str,
    kind: str = "chat",
    split: str | None = "heldout",
    v_min: float = V_MIN,
    options: Sequence[str] | None = None,
) -> dict[int, dict[int, np.ndarray]]:
    """``{step: {replica: q}}``: the mean renormalised p̃ over one checkpoint's valid prompts of
    one ensemble (``split`` None: every prompt), per tracked step and replica; over ``options``
    in their order (default: as the rows name them)."""
    opts: list[str] = list(options or [])
    by: dict[tuple[int, int, str], dict[str, float]] = {}
    want = {"checkpoint": label, "task": task, "prompt_kind": kind, **({"split": split} if split is not None else {})}
    for r in rows_where(table, **want):
        key = (int(r["step"] or 0), int(r["replica"] or 0), r["prompt_id"])
        by.setdefault(key, {})[r["option"]] = r["prob"]
        if options is None and r["option"] != OTHER and r["option"] not in opts:
            opts.append(r["option"])
    rows: dict[int, dict[int, list[np.ndarray]]] = {}
    for (step, rep, _), d in by.items():
        p = np.array([d.get(o, 0.0) for o in opts])
        if p.sum() >= v_min:
            rows.setdefault(step, {}).setdefault(rep, []).append(p / p.sum())
    return {s: {r: np.mean(ps, axis=0) for r, ps in reps.items()} for s, reps in rows.items()}


def base_view(results: Path, task: Task, v_min: float = V_MIN) -> Base:
    """Each raw family's mean p̃ on the base (every prompt, held-out ones included)."""
    groups: dict[str, list[np.ndarray]] = {}
    by: dict[str, dict[str, Any]] = {}
    for r in rows_where(read_table(results), checkpoint="base", task=task.id, prompt_kind="raw"):
        by.setdefault(r["prompt_id"], {"family": r["prompt_family"], "p": {}})["p"][r["option"]] = r["prob"]
    for d in by.values():
        p = np.array([d["p"].get(o, 0.0) for o in task.labels])
        if p.sum() >= v_min:
            groups.setdefault(d["family"], []).append(p / p.sum())
    if not groups:
        raise UserError(f"the base has no raw prompt with valid mass ≥ {v_min} on {task.id}: nothing to compare with")
    return Base({f: np.mean(ps, axis=0) for f, ps in groups.items()}, list(task.labels))


def _est(x: Estimate | None, nd: int = 4) -> list[float | None] | None:
    if x is None:
        return None
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), nd) for v in x.to_json()]


def _interval(values: Sequence[float], nd: int = 4) -> list[float | None]:
    """``[median, 2.5 %, 97.5 %]`` across replicas (or runs)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return [None, None, None]
    return [round(float(x), nd) for x in (np.median(v), np.percentile(v, 2.5), np.percentile(v, 97.5))]


# ---------------------------------------------------------------------------------------------
# escape (rl-escape)


def seed_support(q_sft: np.ndarray, option: int, cover: float = 0.9) -> np.ndarray:
    """The seed's support: the smallest set holding ``cover`` of ``q_sft`` once the rewarded
    option is taken out (so that mass moved onto it counts as escape at every ``m0``).

    >>> seed_support(np.array([0.5, 0.3, 0.15, 0.05]), option=1).tolist()
    [0, 2]
    """
    rest = np.asarray(q_sft, dtype=float).copy()
    rest[option] = 0.0
    return support_set(rest / rest.sum(), cover)


def escape_of(q_sft: np.ndarray, q: np.ndarray, option: int) -> dict[str, float]:
    """``escape = 1 - ρ_S(q)`` with S the seed's support, its RL part ``Δ = ρ_S(q_sft) - ρ_S(q)``,
    and the rewarded option's mass before and after.

    >>> e = escape_of(np.array([0.6, 0.3, 0.05, 0.05]), np.array([0.4, 0.2, 0.05, 0.35]), option=3)
    >>> round(e["escape"], 3), round(e["delta"], 3)
    (0.8, 0.6)
    """
    S = seed_support(q_sft, option)
    u = S.size / q_sft.size

    def rho(x: np.ndarray) -> float:
        return float((x[S].sum() - u) / (1 - u)) if u < 1 else math.nan

    return {
        "escape": 1 - rho(q),
        "delta": rho(q_sft) - rho(q),
        "m_before": float(q_sft[option]),
        "m_after": float(q[option]),
    }


def bandit_null(
    q_sft: np.ndarray,
    option: int,
    rewards: Sequence[str],
    utility: np.ndarray | None,
    settings: B.BanditGRPO,
    seed: int,
) -> dict[str, Any]:
    """The same escape figures for the tabular softmax policy trained by the same GRPO update
    (200 runs), and a band at 10× and 100× the learning rate (a tabular policy's rate acts on
    the logits themselves, so the matched rate is a lower bound on what an ideal learner does)."""
    out: dict[str, Any] = {}
    for mult in (1, 10, 100):
        s = replace(settings, learning_rate=settings.learning_rate * mult)
        finals = B.simulate(q_sft, rewards, s, utility=utility, seed=seed, runs=200)
        es = [escape_of(q_sft, f, option) for f in finals]
        out[f"lr×{mult}"] = {k: _interval([e[k] for e in es]) for k in ("escape", "delta", "m_after")}
    return out


# ---------------------------------------------------------------------------------------------
# the run


def run_study(
    cfg: LabConfig, experiment: str, console: Console | None = None, log: Log | None = None
) -> dict[str, Any]:
    """Run ``experiment`` over ``cfg.universe_seeds`` universes (toy) into ``cfg.out``; returns
    the summary (also ``cfg.out/summary.json``)."""

    cfg.validate()
    if experiment not in STUDIES:
        raise UserError(f"unknown experiment '{experiment}'; use one of {', '.join(STUDIES)}")
    if cfg.universe_seeds > 1 and not cfg.toy:
        raise UserError("--universe-seeds needs the toy universe: a given base model is one universe")
    from crystallab.lab.experiments import run_folder

    console = console or Console()
    t0 = time.perf_counter()
    with run_folder(cfg, experiment, console) as out:
        first = cfg.universe_seed if cfg.universe_seed is not None else cfg.seed
        universes = []
        for k in range(cfg.universe_seeds):
            folder = out if cfg.universe_seeds == 1 else out / f"universe-{first + k}"
            if cfg.universe_seeds > 1:
                console.line(f"--- universe {first + k} ---")
            base_dir = cfg.base_dir
            if base_dir and cfg.universe_seeds > 1:  # one universe per seed under the given folder
                base_dir = str(Path(base_dir) / f"universe-{first + k}")
            one = replace(cfg, out=str(folder), universe_seed=first + k, base_dir=base_dir)
            universes.append(_run_universe(one, experiment, console, log or console.debug))
        s: dict[str, Any] = {
            "experiment": experiment,
            "config": asdict(cfg),
            "universes": universes,
            "took_s": round(time.perf_counter() - t0, 1),
        }
        if cfg.universe_seeds > 1:
            s["across_universes"] = _across(universes)
        atomic_write_bytes(out / "summary.json", json.dumps(s, indent=1, default=str).encode())
    return s


def _run_universe(cfg: LabConfig, experiment: str, console: Console, log: Log) -> dict[str, Any]:
    from crystallab.lab.experiments import timed_stages
    from crystallab.lab.rl import GRPORecipe, run_grpo
    from crystallab.lab.sft import SFTRecipe, run_sft
    from crystallab.lab.tracker import PhaseTracker
    from crystallab.lab.trainlog import StepProgress

    out = Path(cfg.out)
    ck, results, tasks_dir, data_dir = out / "checkpoints", out / "results", out / "tasks", out / "data"
    timings: dict[str, float] = {}
    stage = timed_stages(console, timings)

    base_model = _base_model(cfg, tasks_dir, ck, stage, log, StepProgress)
    task = load_task(cfg.task, tasks_dir)
    mcfg = measure_config(cfg, base_model, results, tasks_dir)
    with stage("measure base", "measure_base"):
        run_measure(replace(mcfg, label="base", stage="base"), log=log)
    base = base_view(results, task)
    arms = plan(experiment, cfg, base, task)
    util = B.utility_for(cfg.seed, len(task.labels))
    utility = dict(zip(task.labels, util.tolist()))
    rewards = _rewards(cfg)
    train = [i.text for i in train_instructions(task)]
    mentions: dict[str, Any] = {}
    trackers: list[Any] = []
    for arm in arms:
        for r in range(cfg.replicas):
            seed = cfg.seed + r
            tag = f"(replica {r + 1}/{cfg.replicas})"
            examples = arm_examples(arm, task, cfg.sft_examples, seed)
            if arm.kind == "generic" and r == 0:
                from crystallab.lab.generic import option_mentions

                mentions[arm.label] = option_mentions([e["completion"] for e in examples], task.labels)
            with stage(_stage_name("sft", arm.label, tag), "sft", total=cfg.sft_steps) as st:
                tracker = PhaseTracker(
                    replace(mcfg, model=f"{arm.label}-run", label=arm.label, stage="sft", parent="base", replica=r),
                    every=cfg.track_every,
                    log=log,
                )
                trackers.append(tracker)
                sft_ckpt = run_sft(
                    SFTRecipe(
                        model=base_model,
                        out=str(ck / arm.label / f"r{r}"),
                        examples=examples,
                        data_file=str(data_dir / f"sft-{arm.label}-r{r}.jsonl"),
                        steps=cfg.sft_steps,
                        learning_rate=cfg.sft_lr,
                        decay=cfg.sft_decay,
                        lora=cfg.lora,
                        seed=seed,
                        callbacks=[tracker, StepProgress(st.advance)],
                    ),
                    log=log,
                )
            if arm.rl:
                with stage(_stage_name("rl", arm.rl, tag), "rl", total=cfg.rl_steps) as st:
                    tracker = PhaseTracker(
                        replace(mcfg, model=f"{arm.rl}-run", label=arm.rl, stage="rl", parent=arm.label, replica=r),
                        every=cfg.track_every,
                        log=log,
                    )
                    trackers.append(tracker)
                    run_grpo(
                        GRPORecipe(
                            model=str(sft_ckpt),
                            out=str(ck / arm.rl / f"r{r}"),
                            task=task,
                            instructions=train,
                            rewards=rewards,
                            utility=utility,
                            data_file=str(data_dir / f"rl-{arm.rl}-r{r}.jsonl"),
                            steps=cfg.rl_steps,
                            lora=cfg.lora,
                            seed=seed,
                            callbacks=[tracker, StepProgress(st.advance)],
                        ),
                        log=log,
                    )
    timings["tracking"] = round(sum(t.seconds for t in trackers), 1)  # inside sft and rl
    with stage("analyze", "analyze"):
        ResultStore(results).consolidate()  # the trackers leave it to the end
        _record_answers(results, arms, task, mentions)
        th_file = out / "thresholds.yaml"
        th_file.write_text(f"n_boot: {cfg.n_boot}\nseed: {cfg.seed}\n")
        th = Thresholds.from_file(str(th_file))
        whole = analyze_dir(str(results), th)
        # an arm that holds every trained checkpoint (the demo's) is the whole folder: analysed once
        trained = {c for arm in arms for c in (arm.label, arm.rl) if c}
        per_arm = {
            arm.label: whole if {arm.label, arm.rl} - {None} == trained else _arm_analysis(results, arm, th)
            for arm in arms
        }
    if cfg.report:
        from crystallab.reporting import write_report

        with stage("report", "report") as st:
            command = EXPERIMENTS[experiment].command
            write_report(results, notes=[f"All arms of `crystallab {command}`; each arm's own report: {out / 'arms'}."])
            for arm in arms:
                write_report(per_arm[arm.label], out / "arms" / arm.label, notes=[arm_note(arm, command, cfg)])
            st.note = f"→ {results / 'report.html'}"
    for arm in arms:
        (out / "arms" / arm.label).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            out / "arms" / arm.label / "analysis.json", json.dumps(per_arm[arm.label].to_json(), default=str).encode()
        )
    table = read_table(results)
    settings = B.BanditGRPO(
        group_size=GRPORecipe.num_generations,
        prompts_per_step=GRPORecipe.prompts_per_step,
        learning_rate=GRPORecipe.learning_rate,
        beta=GRPORecipe.beta,
        steps=cfg.rl_steps,
    )
    arm_rows = [
        _arm_summary(arm, per_arm[arm.label], table, task, base, mentions.get(arm.label), util, rewards, settings, cfg)
        for arm in arms
    ]
    base_raw = whole.state("base", task.id, "raw")
    return {
        "folder": str(out),
        "results": str(results),
        "report": str(results / "report.html") if cfg.report else None,
        "base_model": base_model,
        "universe_seed": cfg.universe_seed if cfg.toy else None,
        "task": task.id,
        "replicas": cfg.replicas,
        "base": {
            "raw_state": base_raw.state if base_raw else None,
            "n_basins": _est(base_raw.params.get("n_basins")) if base_raw else None,
            "phi": _est(base_raw.params.get("phi")) if base_raw else None,
            "families": {f: [round(float(x), 4) for x in p] for f, p in base.families.items()},
            "planted_js_distance": (
                {f.name: round(float(js_distance(base.families[f.name], f.planted)), 4) for f in U.FAMILIES}
                if cfg.toy and all(f.name in base.families for f in U.FAMILIES)
                else None
            ),
        },
        "utility": {k: round(v, 4) for k, v in utility.items()},
        "arms": arm_rows,
        "timings": timings,
    }


def measure_config(cfg: LabConfig, base_model: str, results: Path, tasks_dir: Path) -> MeasureConfig:
    """How a lab run measures the base and every trained checkpoint (the task's own prompts,
    ``cfg.limit`` of each kind and split, no progress bar)."""
    return MeasureConfig(
        model=base_model,
        tasks=[cfg.task],
        out=str(results),
        tasks_dir=str(tasks_dir),
        progress=False,
        load=LoadSettings(device="auto"),
        settings=MeasureSettings(limit=cfg.limit),
    )


def _stage_name(kind: str, label: str, tag: str) -> str:
    """``sft (replica 1/3)`` for the demo's arm, ``sft generic-none (replica 1/3)`` for others."""
    return f"{kind} {tag}" if label == kind else f"{kind} {label} {tag}"


def arm_note(arm: Arm, command: str, cfg: LabConfig) -> str:
    """What the arm's report says first: what SFT (and RL) were shown."""
    i = arm.info
    what = {
        "generic": "SFT on deterministic tasks only, never a random task; "
        + {
            "none": "no completion mentions an option (and none is a number, where the options are numbers)",
            "avoid": "no completion mentions an option; numbers are steered away from them (a known confound)",
            "known": "option mentions follow a known distribution (A compares the chat aggregate with them)",
            "natural": "nothing filtered: the options appear as generic data carry them (measured: see the mentions)",
        }.get(arm.mentions or "none", ""),
        "target": f"SFT onto a random target (normalised entropy {i.get('entropy_norm')}, JS distance "
        f"{i.get('d_nearest')} from the nearest basin, {i.get('nearest_basin')}): the null for nucleation, where "
        "A ≤ 0 means training went to its data",
        "seed": f"SFT onto the base family {i.get('family')}'s own distribution (a positive control: its seed is "
        "built in)",
        "diverse": "each chat family shown its mirrored raw family's distribution (keeps the diversity)",
        "mix": f"SFT data with the rewarded option {i.get('rewarded')} at mass m0 = {i.get('m0')}, then GRPO under "
        f"the seed-blind reward '{i.get('reward')}'",
    }[arm.kind]
    return (
        f"Arm {arm.label} of `crystallab {command}`, {cfg.replicas} replica(s): {what}. Verdicts are read on the "
        "held-out prompts, which no training dataset holds."
    )


def _rewards(cfg: LabConfig) -> tuple[str, ...]:
    return {"utility": ("utility",), "diversity": ("validity", "diversity"), "validity": ("validity",)}[cfg.reward]


def _base_model(
    cfg: LabConfig, tasks_dir: Path, ck: Path, stage: Any, log: Log, progress: Any, hidden: int | None = None
) -> str:
    """The base checkpoint (the toy universe, pretrained once per universe seed, at hidden size
    ``hidden`` when given, or the given model), and the task file with held-out prompts marked in
    ``tasks_dir``."""
    import yaml

    if cfg.base_model:
        task = load_task(cfg.task)
        tasks_dir.mkdir(parents=True, exist_ok=True)
        (tasks_dir / f"{task.id}.yaml").write_text(
            yaml.safe_dump(U.split_task(task.to_json()), sort_keys=False, allow_unicode=True)
        )
        return cfg.base_model
    U.write_task(tasks_dir)
    seed = cfg.universe_seed if cfg.universe_seed is not None else cfg.seed
    base_dir = Path(cfg.base_dir) if cfg.base_dir else ck / "base"
    if (base_dir / "config.json").exists():
        log(f"reusing the toy universe in {base_dir}")
        return str(base_dir)
    with stage("pretrain", "pretrain", total=cfg.pretrain_steps) as st:
        size = {"hidden": hidden} if hidden is not None else {}
        return str(
            U.pretrain(base_dir, seed=seed, steps=cfg.pretrain_steps, log=log, callbacks=[progress(st.advance)], **size)
        )


def _record_answers(results: Path, arms: list[Arm], task: Task, mentions: dict[str, Any]) -> None:
    """Each arm's SFT answers in the manifest (``train_answers``), where its data hold answers
    to the task: the target or mix, the diverse mean, or the measured option mentions."""
    store = ResultStore(results)
    for arm in arms:
        ans: Any = arm.answers
        if arm.per_family:
            ans = np.mean(list(arm.per_family.values()), axis=0).tolist()
        if arm.kind == "generic":
            ans = (mentions.get(arm.label) or {}).get("dist")
        if ans is None:
            continue
        for c in store.manifest["checkpoints"]:
            if c["label"] == arm.label:
                c.setdefault("info", {}).setdefault("train_answers", {})[task.id] = dict(zip(task.labels, ans))
    store.save_manifest()


def _arm_analysis(results: Path, arm: Arm, th: Thresholds) -> Analysis:
    """The arm as its own ladder: base → SFT (→ RL), its replicas pooled hierarchically."""
    import pyarrow as pa
    import pyarrow.compute as pc

    res = Results.load(results)
    keep = ["base", arm.label] + ([arm.rl] if arm.rl else [])
    table = res.to_arrow()
    table = table.filter(pc.is_in(table.column("checkpoint"), value_set=pa.array(keep)))
    from crystallab.analysis import _manifest_links

    parents, answers = _manifest_links(res.manifest)
    return analyze(
        table,
        th,
        parents={k: parents.get(k) for k in keep},
        train_answers={k: v for k, v in answers.items() if k in keep},
    )


def _state_row(a: Analysis, label: str, task: str, kind: str, split: str | None) -> dict[str, Any] | None:
    s = a.state(label, task, kind, split)
    if s is None:
        return None
    return {
        "state": s.state,
        "valid_mass": _est(s.params.get("valid_mass")),
        "n_basins": _est(s.params.get("n_basins")),
        "phi": _est(s.params.get("phi")),
        "spread": _est(s.params.get("spread")),
        "n_valid": s.n_valid,
        "n_prompts": s.n_prompts,
        "replica_states": s.replica_states,
    }


def _arm_summary(
    arm: Arm,
    a: Analysis,
    table: Any,
    task: Task,
    base: Base,
    mentions: dict[str, Any] | None,
    util: np.ndarray,
    rewards: Sequence[str],
    settings: B.BanditGRPO,
    cfg: LabConfig,
) -> dict[str, Any]:
    v = a.verdicts.get(task.id, {})
    t_nuc = next((t for t in a.transitions if t.child == arm.label and t.task == task.id), None)
    row: dict[str, Any] = {
        "label": arm.label,
        "kind": arm.kind,
        "mentions": arm.mentions,
        "info": arm.info,
        "sft_answers": [round(x, 4) for x in arm.answers] if arm.answers else None,
        "chat": {sp or "all": _state_row(a, arm.label, task.id, "chat", sp) for sp in ("train", "heldout", None)},
        "raw": {sp or "all": _state_row(a, arm.label, task.id, "raw", sp) for sp in ("train", "heldout", None)},
        "verdicts": {k: {"value": x.value, "why": x.why} for k, x in v.items()},
        "report": str(Path(cfg.out) / "arms" / arm.label / "report.html") if cfg.report else None,
    }
    if t_nuc is not None:
        row["nucleation"] = {
            "k_star": t_nuc.k_star,
            "k_star_counts": t_nuc.k_star_counts,
            "z_k_star": _est(t_nuc.z.get(t_nuc.k_star)) if t_nuc.k_star else None,
            "margin": _est(t_nuc.margin),
            "inside": t_nuc.inside,
            "seed_p": t_nuc.seed_p.p if t_nuc.seed_p else None,
            "attraction": _est(t_nuc.attraction),
            "d_data": _est(t_nuc.d_data),
            "d_basins": {k: _est(x) for k, x in t_nuc.d.items()},
        }
    by_step = aggregates(table, arm.label, task.id)  # one pass over the table for the SFT arm
    final = _final(by_step)
    if mentions is not None:
        row["option_mentions"] = mentions
        dist = mentions.get("dist")
        row["d_mentions"] = (
            _interval([float(js_distance(q, np.asarray(dist))) for q in final.values()]) if dist and final else None
        )
    if arm.answers is not None:
        t = np.asarray(arm.answers)
        row["attraction_t"] = _attraction_series(by_step, t, base, t_nuc)
    if arm.rl:
        rl = _final(aggregates(table, arm.rl, task.id))
        star = task.labels.index(arm.info["rewarded"]) if "rewarded" in arm.info else B.rewarded_option(util)
        es = [escape_of(final[r], rl[r], star) for r in rl if r in final]
        row["escape"] = {k: _interval([e[k] for e in es]) for k in ("escape", "delta", "m_before", "m_after")}
        row["escape"]["replicas"] = len(es)
        if final:
            q0 = np.mean(list(final.values()), axis=0)
            row["escape_null"] = bandit_null(
                q0, star, rewards, util if "utility" in rewards else None, settings, cfg.seed
            )
        t_set = next((t for t in a.transitions if t.child == arm.rl and t.task == task.id), None)
        if t_set is not None:
            row["settling"] = {
                "rho": _est(t_set.rho),
                "retention": _est(t_set.retention),
                "redistribution": _est(t_set.redistribution),
                "support": t_set.support,
            }
    return row


def _final(by_step: dict[int, dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    return by_step[max(by_step)] if by_step else {}


def _attraction_series(
    by_step: dict[int, dict[int, np.ndarray]], t: np.ndarray, base: Base, tr: Any
) -> dict[str, list[Any]]:
    """``A(t)`` per tracked step (median and range over replicas), against the final ``k*``."""
    k = tr.k_star if tr is not None and tr.k_star in base.families else None
    steps, med, lo, hi = [], [], [], []
    for s in sorted(by_step):
        qs = list(by_step[s].values())
        kk = k or base.nearest(np.mean(qs, axis=0))[0]
        vals = [attraction_index(q, t, base.families[kk]) for q in qs]
        iv = _interval(vals)
        steps.append(s)
        med.append(iv[0])
        lo.append(iv[1])
        hi.append(iv[2])
    return {"steps": steps, "A": med, "lo": lo, "hi": hi}


def _across(universes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm label: the verdicts and k* counts in every universe."""
    out: dict[str, Any] = {}
    for u in universes:
        for arm in u["arms"]:
            o = out.setdefault(arm["label"], {"nucleation": [], "k_star_counts": {}})
            o["nucleation"].append((arm["verdicts"].get("nucleation") or {}).get("value"))
            for k, n in ((arm.get("nucleation") or {}).get("k_star_counts") or {}).items():
                o["k_star_counts"][k] = o["k_star_counts"].get(k, 0) + n
    return out


# ---------------------------------------------------------------------------------------------
# what the console prints


def _iv(x: Any) -> str:
    if isinstance(x, (list, tuple)) and len(x) == 3:
        return Estimate.of(*x).text(".3g")
    return "n/a" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def study_text(s: dict[str, Any]) -> str:
    """The summary a researcher reads: per universe and arm, states on train vs held-out chat
    prompts, the nucleation verdict with its k* histogram, A, escape against the null."""
    lines = []
    for u in s["universes"]:
        b = u["base"]
        lines.append(
            f"base ({u['base_model']}): raw {b['raw_state']}, n_basins {_iv(b['n_basins'])}, phi {_iv(b['phi'])}"
        )
        for arm in u["arms"]:
            ch, raw = arm["chat"], arm["raw"]
            tr, ho = ch.get("train") or {}, ch.get("heldout") or {}
            lines.append(
                f"{arm['label']}: chat train {tr.get('state')} (valid {_iv(tr.get('valid_mass'))}) | held-out "
                f"{ho.get('state')} (valid {_iv(ho.get('valid_mass'))}, replicas {ho.get('replica_states')}); "
                f"raw {(raw.get('all') or {}).get('state')} (n_basins {_iv((raw.get('all') or {}).get('n_basins'))}, "
                f"phi {_iv((raw.get('all') or {}).get('phi'))})"
            )
            n = arm.get("nucleation")
            nv = arm["verdicts"].get("nucleation") or {}
            if n:
                lines.append(
                    f"  nucleation {nv.get('value')}: k* {n['k_star']} (histogram {n['k_star_counts']}), "
                    f"z {_iv(n['z_k_star'])}, margin {_iv(n['margin'])}, seed_p {_iv(n['seed_p'])}"
                    + (f", A {_iv(n['attraction'])}" if n.get("attraction") else "")
                )
            if arm.get("option_mentions") is not None:
                m = arm["option_mentions"]
                lines.append(
                    f"  option mentions in the SFT completions: {m.get('share_with_mention', 0):.3f} of examples; "
                    f"d(chat, mentions) {_iv(arm.get('d_mentions'))}"
                )
            if arm.get("escape"):
                e, null = arm["escape"], arm.get("escape_null") or {}
                lines.append(
                    f"  escape (m0 {arm['info'].get('m0', _iv(e['m_before']))}, rewarded "
                    f"{arm['info'].get('rewarded')}): 1-ρ "
                    f"{_iv(e['escape'])}, RL part Δ {_iv(e['delta'])}; bandit null Δ "
                    + ", ".join(f"{k} {_iv(v['delta'])}" for k, v in null.items())
                )
        t = u["timings"]
        total = sum(v for k, v in t.items() if k != "tracking")
        lines.append(
            f"took {total:.0f} s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "tracking")
            + f" (tracking {t.get('tracking', 0):.0f} s of sft + rl)"
        )
    return "\n".join(lines)
