"""`crystallab ladder LADDER.yaml | --preset NAME`: measure every checkpoint, analyze, report."""

from __future__ import annotations

import argparse

from crystallab.cli.flags import add_dataclass_flags, dataclass_from_args
from crystallab.cli.measure import add_measure_options, measure_config
from crystallab.console import Console
from crystallab.ladder import RayOptions, load_ladder, preset_names, run_ladder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ladder",
        help="measure an ordered ladder of checkpoints, then analyze and report",
        description="Measure every checkpoint of a ladder into one resumable folder, then write "
        "analysis.json and report.html (DIR/config.yaml records the settings used).",
    )
    p.add_argument("file", nargs="?", help="ladder YAML (checkpoints: label, stage, model, revision)")
    p.add_argument("--preset", help=f"a shipped ladder: {', '.join(preset_names())}")
    p.add_argument("--list-presets", action="store_true", help="list the shipped ladders and exit")
    p.add_argument("--thresholds", help="YAML thresholds for the analysis")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="write DIR/report.html")
    add_measure_options(p, ladder=True)
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run one Ray job per checkpoint and task (pip install 'crystallab[ray]'); ADDRESS: a cluster "
        "(ray://host:10001, auto), none: a local cluster",
    )
    add_dataclass_flags(p, RayOptions, exclude=("address",))
    p.set_defaults(run=run)


def list_presets() -> str:
    return "\n".join(
        f"{name:<14} " + " → ".join(f"{c.label} ({c.model})" for c in load_ladder(preset=name).checkpoints)
        for name in preset_names()
    )


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        print(list_presets())
        return 0
    from crystallab.analysis import summary_text

    base = measure_config(args, required=("tasks", "out"))
    lad = load_ladder(args.file, args.preset)
    ray = None if args.ray is None else dataclass_from_args(RayOptions, args, RayOptions(address=args.ray or None))
    analysis, report = run_ladder(
        lad, base, thresholds=args.thresholds, ray=ray, report=args.report, console=Console(verbose=args.verbose)
    )
    print(summary_text(analysis))
    if report is not None:
        print(report)
    return 0
