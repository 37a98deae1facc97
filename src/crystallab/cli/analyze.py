"""`crystallab analyze DIR`: states, transitions, verdicts and dynamics → DIR/analysis.json."""

from __future__ import annotations

import argparse

from crystallab.models.base import METHODS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="order parameters, phases and verdicts of a results folder",
        description="Compute order parameters with intervals, phase states per ensemble, relations "
        "along the parent graph, verdicts and training dynamics; write DIR/analysis.json.",
    )
    p.add_argument("dir", help="a results folder written by `crystallab measure`")
    p.add_argument(
        "--thresholds",
        help="YAML file overriding analysis parameters (the fields of crystallab.Thresholds: docs/analysis.md)",
    )
    p.add_argument("--method", choices=METHODS, help="which rows to analyse (default: exact when present)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.analysis import analyze_dir, summary_text

    an = analyze_dir(args.dir, args.thresholds, args.method)
    print(summary_text(an) + f"\nwrote {args.dir.rstrip('/')}/analysis.json")
    return 0
