"""Ordered checkpoint ladders: a YAML file (or a shipped preset) of label, stage, model spec and
optional revision, measured one checkpoint at a time into one resumable results folder.

>>> lad = load_ladder(preset="olmo2-1b")
>>> [(c.label, c.stage) for c in lad.checkpoints]
[('base', 'base'), ('sft', 'sft'), ('dpo', 'dpo'), ('instruct', 'rl')]
>>> lad.checkpoints[0].model
'allenai/OLMo-2-0425-1B'
"""

from __future__ import annotations

import difflib
import gc
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallab.console import Console
from crystallab.errors import UserError
from crystallab.measuring import MeasureConfig, run_measure
from crystallab.runconfig import plain, write_config
from crystallab.store import STAGES, ResultStore, writer_lock
from crystallab.yamlconf import kind_of

if TYPE_CHECKING:
    from crystallab.analysis import Analysis

PRESET_DIR = Path(str(resources.files("crystallab.ladders")))
_TOP = ("name", "checkpoints", "description")
_CKPT = ("label", "stage", "model", "revision", "parent")


@dataclass(frozen=True)
class Checkpoint:
    label: str
    stage: str
    model: str
    revision: str | None = None
    parent: str | None = None  # the label this checkpoint was trained from (default: the one listed before)


@dataclass(frozen=True)
class Ladder:
    name: str
    checkpoints: tuple[Checkpoint, ...]
    source: str = ""

    def parents(self) -> dict[str, str | None]:
        """Each checkpoint's parent: its own ``parent``, else the one listed before it.

        >>> Ladder(
        ...     "x", (Checkpoint("a", "base", "m"), Checkpoint("b", "sft", "m"), Checkpoint("c", "rl", "m", parent="a"))
        ... ).parents()
        {'a': None, 'b': 'a', 'c': 'a'}
        """
        out: dict[str, str | None] = {}
        prev: str | None = None
        for c in self.checkpoints:
            out[c.label] = c.parent if c.parent is not None else prev
            prev = c.label
        return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _unknown(src: str, where: str, key: Any, allowed: tuple[str, ...]) -> UserError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return UserError(
        f"{src}: field '{where}{key}': unknown key"
        + (f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(allowed)})")
    )


def ladder_from_dict(data: Any, src: str = "<ladder>") -> Ladder:
    """Validate a parsed ladder mapping; any shape that is not a ladder is one line naming the field."""
    if not isinstance(data, dict):
        raise UserError(f"{src}: expected a mapping with 'checkpoints', got {kind_of(data)}")
    for k in data:
        if k not in _TOP:
            raise _unknown(src, "", k, _TOP)
    items = data.get("checkpoints")
    if not isinstance(items, list) or not items:
        got = "an empty list" if isinstance(items, list) else kind_of(items)
        raise UserError(f"{src}: field 'checkpoints': expected a non-empty list, got {got}")
    out: list[Checkpoint] = []
    for i, c in enumerate(items):
        where = f"checkpoints[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"{src}: field '{where}': expected a mapping with label, stage, model, got {kind_of(c)}")
        for k in c:
            if k not in _CKPT:
                raise _unknown(src, f"{where}.", k, _CKPT)
        for k in ("label", "stage", "model"):
            if not isinstance(c.get(k), str) or not c[k].strip():
                raise UserError(f"{src}: field '{where}.{k}': expected a non-empty string")
        if c["stage"] not in STAGES:
            raise UserError(f"{src}: field '{where}.stage': '{c['stage']}' is not one of {', '.join(STAGES)}")
        rev = c.get("revision")
        if rev is not None and (isinstance(rev, bool) or not isinstance(rev, (str, int))):
            raise UserError(f"{src}: field '{where}.revision': expected a string")
        if c["label"] in (x.label for x in out):
            raise UserError(
                f"{src}: field '{where}.label': duplicate label '{c['label']}' (each checkpoint needs its own)"
            )
        parent = c.get("parent")
        if parent is not None and (not isinstance(parent, str) or not parent.strip()):
            raise UserError(f"{src}: field '{where}.parent': expected the label of another checkpoint")
        out.append(Checkpoint(c["label"], c["stage"], c["model"], None if rev is None else str(rev), parent))
    name = data.get("name", Path(src).stem)
    if not isinstance(name, str):
        raise UserError(f"{src}: field 'name': expected a string")
    return Ladder(name, _training_order(out, src), src)


def _training_order(cks: list[Checkpoint], src: str) -> tuple[Checkpoint, ...]:
    """The checkpoints with explicit ``parent`` links put parents first (listed order otherwise);
    a parent that names no checkpoint, or a chain of parents that loops, is refused.

    >>> cs = [Checkpoint("rl", "rl", "m3", parent="sft"), Checkpoint("base", "base", "m1"),
    ...       Checkpoint("sft", "sft", "m2", parent="base")]
    >>> [c.label for c in _training_order(cs, "x")]
    ['base', 'sft', 'rl']
    >>> _training_order([Checkpoint("a", "sft", "m", parent="b"), Checkpoint("b", "rl", "m", parent="a")], "x.yaml")
    Traceback (most recent call last):
    crystallab.errors.UserError: x.yaml: the checkpoints' parents form a cycle: a → b → a
    """
    by_label = {c.label: c for c in cks}
    for i, c in enumerate(cks):
        if c.parent is not None and c.parent not in by_label:
            raise UserError(f"{src}: field 'checkpoints[{i}].parent': no checkpoint is labelled '{c.parent}'")
    for c in cks:  # follow the parent chain from each checkpoint; meeting one twice is a cycle
        seen, cur = [c.label], c
        while cur.parent is not None:
            if cur.parent in seen:
                loop = seen[seen.index(cur.parent) :] + [cur.parent]
                raise UserError(f"{src}: the checkpoints' parents form a cycle: {' → '.join(loop)}")
            seen.append(cur.parent)
            cur = by_label[cur.parent]
    order: list[Checkpoint] = []
    placed: set[str] = set()

    def place(c: Checkpoint) -> None:
        if c.label in placed:
            return
        if c.parent is not None:
            place(by_label[c.parent])
        placed.add(c.label)
        order.append(c)

    for c in cks:
        place(c)
    return tuple(order)


def load_ladder(path: str | Path | None = None, preset: str | None = None) -> Ladder:
    """A ladder file (or a shipped preset); a missing, binary, non-UTF-8 or malformed file, or
    one of the wrong shape, is one line naming the file (and the field)."""
    from crystallab.yamlconf import load_yaml

    if (path is None) == (preset is None):
        raise UserError("give a ladder file or --preset NAME (one of them)")
    if preset is not None:
        if preset not in preset_names():
            close = difflib.get_close_matches(preset, preset_names(), n=1)
            raise UserError(
                f"unknown ladder preset '{preset}'"
                + (f"; did you mean '{close[0]}'?" if close else f"; presets: {', '.join(preset_names())}")
            )
        path = PRESET_DIR / f"{preset}.yaml"
    assert path is not None
    p = Path(path)
    return ladder_from_dict(load_yaml(p, "ladder"), str(p))


# ---- running a ladder -------------------------------------------------------------------------
LOG_FILE = "crystallab.log"


@dataclass(frozen=True)
class RayOptions:
    """How a ladder runs on Ray: one job per (checkpoint, task)."""

    address: str | None = None  # None: a local cluster; "auto": the cluster this machine belongs to
    num_gpus: float = field(default=0.0, metadata={"help": "with --ray: GPUs per job"})
    num_cpus: float = field(default=1.0, metadata={"help": "with --ray: CPUs per job"})
    max_retries: int = field(default=3, metadata={"help": "with --ray: retries of a job whose worker dies"})


def run_ladder(
    lad: Ladder,
    base: MeasureConfig,
    *,
    thresholds: str | None = None,
    ray: RayOptions | None = None,
    report: bool = True,
    console: Console | None = None,
) -> tuple[Analysis, Path | None]:
    """Measure every checkpoint of ``lad`` into ``base.out`` (resuming it), then analyze and
    report; returns the analysis and the report's path (None without the report extra).

    ``base`` holds what every checkpoint shares (tasks, load and measure settings); each
    checkpoint brings its model, label, stage, parent and revision. The folder records the
    resolved configuration (``DIR/config.yaml``) and the libraries' log (``DIR/crystallab.log``)."""
    from crystallab.analysis import analyze_dir

    console = console or Console()
    root = ResultStore(base.out).root  # makes the folder, or says in one line why it cannot
    # the whole ladder, Ray workers included, is one writer
    with console.logging_to(root / LOG_FILE), writer_lock(root):
        write_config(root, ladder_config(lad, base, thresholds, ray), "ladder", rerun=False)
        if ray is not None:
            from crystallab.sweep import sweep_ladder  # sweep imports this module (Ladder)

            with console.stage(f"measure {len(lad.checkpoints)} checkpoint(s) on Ray", bar=False):
                sweep_ladder(
                    lad,
                    base,
                    address=ray.address,
                    num_gpus=ray.num_gpus,
                    num_cpus=ray.num_cpus,
                    max_retries=ray.max_retries,
                    log=console.line,
                )
        else:
            parents = lad.parents()
            for i, c in enumerate(lad.checkpoints):
                load = replace(base.load, revision=c.revision or base.load.revision)
                cfg = replace(base, model=c.model, label=c.label, stage=c.stage, parent=parents[c.label], load=load)
                with console.stage(f"measure {c.label} [{i + 1}/{len(lad.checkpoints)}] ({c.model})", bar=False):
                    run_measure(cfg, log=console.line)
                gc.collect()  # drop the previous checkpoint's weights before loading the next
        with console.stage("analyze"):
            analysis = analyze_dir(root, thresholds)
        path = None
        if report:
            from crystallab.reporting import write_report

            with console.stage("report") as st:
                path = write_report(root)
                st.note = f"→ {path}"
    return analysis, path


def ladder_config(lad: Ladder, base: MeasureConfig, thresholds: str | None, ray: RayOptions | None) -> dict[str, Any]:
    """What ``DIR/config.yaml`` of a ladder run holds: the ladder, the shared measure settings,
    the thresholds file and the Ray options."""
    shared = {k: v for k, v in plain(base).items() if k not in ("model", "label", "stage", "parent", "step", "replica")}
    return {
        "ladder": {"name": lad.name, "source": lad.source, "checkpoints": plain(list(lad.checkpoints))},
        "measure": shared,
        "thresholds": thresholds,
        "ray": plain(ray) if ray is not None else None,
    }
