"""`crystallab measure`: one checkpoint × tasks × prompts → DIR/distributions.parquet.

The load and measure flags are generated from ``LoadSettings`` and ``MeasureSettings`` (one
definition of each setting); ``--config FILE`` gives any of them in YAML, and a flag typed on
the command line beats the file.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from crystallab.cli.flags import add_dataclass_flags, typed_fields
from crystallab.console import Console
from crystallab.errors import UserError
from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
from crystallab.models.base import LoadSettings
from crystallab.runconfig import measure_file, write_config
from crystallab.store import STAGES

MODEL_HELP = (
    "HF id or local dir, gguf:PATH, builtin:gemma-3-270m, api:BASE_URL#MODEL[?key_env=VAR&server=...] or "
    "vllm:HF_ID[?tensor_parallel_size=N] (docs/scaling.md)"
)
CONFIG_HELP = {  # MeasureConfig's fields carry no help metadata of their own
    "model": MODEL_HELP,
    "tasks": "task ids, comma-separated, or 'all'",
    "out": "results folder (created; measuring into it again resumes)",
    "label": "checkpoint name (default: the model spec)",
    "stage": "a display label for the checkpoint",
    "parent": "label of the checkpoint this one was trained from (default: the one measured before)",
    "step": "training step of this checkpoint",
    "replica": "replica of a replicated run, written into every row (default: none)",
    "tasks_dir": "a folder of extra task YAML files",
    "chunk": "prompts per results shard: a killed run loses at most one chunk",
    "progress": "progress bar (default: on a terminal outside CI)",
}
# what a ladder takes from each checkpoint instead of a flag
PER_CHECKPOINT = ("model", "label", "stage", "parent", "step", "replica")
LOG_FILE = "crystallab.log"
FLAG = {"tasks": "--task"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure output distributions of one checkpoint",
        description="Measure a model's output distribution on random tasks, exactly or by sampling, "
        "into a resumable results folder (DIR/config.yaml records the settings used).",
    )
    p.add_argument(
        "--config",
        help="YAML file of measure settings (any flag's name, or the DIR/config.yaml of an "
        "earlier run); flags given here override it",
    )
    add_measure_options(p)
    p.set_defaults(run=run)


def add_measure_options(p: argparse.ArgumentParser, ladder: bool = False) -> None:
    """The generated flags `measure` and `ladder` share (a ladder names its checkpoints itself)."""
    add_dataclass_flags(
        p,
        MeasureConfig,
        names={"tasks": "task"},
        exclude=PER_CHECKPOINT if ladder else (),
        helps=CONFIG_HELP,
        choices={"stage": STAGES},
    )
    helps = {"revision": "default revision for checkpoints that name none"} if ladder else None
    add_dataclass_flags(p, LoadSettings, names={"allow_plain_chat": "plain-chat"}, helps=helps)
    add_dataclass_flags(p, MeasureSettings)


def measure_config(
    args: argparse.Namespace, base: MeasureConfig | None = None, required: tuple[str, ...] = ("model", "tasks", "out")
) -> MeasureConfig:
    """The MeasureConfig a command runs: ``base`` (or the dataclass defaults), then ``--config``,
    then the typed flags; ``required`` fields must end up set."""
    layers = measure_file(args.config) if getattr(args, "config", None) else {"config": {}, "load": {}, "settings": {}}
    base = base or MeasureConfig(model="", tasks=[], out="")
    load = dataclasses.replace(base.load, **{**layers["load"], **typed_fields(LoadSettings, args)})
    settings = dataclasses.replace(base.settings, **{**layers["settings"], **typed_fields(MeasureSettings, args)})
    top = {**layers["config"], **typed_fields(MeasureConfig, args)}
    if isinstance(top.get("tasks"), str):
        top["tasks"] = [t for t in top["tasks"].split(",") if t]
    cfg = dataclasses.replace(base, **top, load=load, settings=settings)
    missing = [FLAG.get(n, f"--{n}") for n in required if not getattr(cfg, n)]
    if missing:
        hint = " (or a --config that sets them)" if hasattr(args, "config") else ""
        raise UserError(f"crystallab {args.command} needs {' and '.join(missing)}{hint}")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = measure_config(args)
    console = Console(verbose=args.verbose)
    with console.logging_to(Path(cfg.out) / LOG_FILE):
        with console.stage(f"measure {cfg.label or cfg.model}", bar=False):
            record = run_measure(cfg, log=console.line)
        write_config(cfg.out, cfg, "measure")
    tp = record["throughput"]
    console.line(
        f"measured {tp['prompts']} prompt(s) of {record['checkpoint']} in {tp['seconds']:.1f} s "
        f"({tp['prompts_per_s']:.2f} prompts/s, {tp['options_per_s']:.1f} options/s, "
        f"{tp['tokens_per_s']:.0f} tokens/s); {tp['skipped_prompts']} already done"
    )
    print(f"{cfg.out}/distributions.parquet")
    return 1 if record.get("failed") else 0
