"""`crystallab report DIR`: DIR/analysis.json + the distribution table → DIR/report.html and DIR/figures/."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write DIR/report.html from an analysed results folder",
        description="Render DIR/analysis.json (from `crystallab analyze DIR`) and the folder's "
        "distribution table as one self-contained HTML page, DIR/report.html: verdicts "
        "with their numbers, phase diagrams, basins on the heatmaps, dynamics, states "
        "and how to read them. The figures are also saved under DIR/figures/.",
    )
    p.add_argument("dir", metavar="DIR", help="results folder holding the distribution table and analysis.json")
    p.add_argument("--no-svg", action="store_true", help="save the figures as PNG only (faster)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.reporting import write_report

    out = write_report(args.dir, svg=not args.no_svg)
    print(f"wrote {out} and {out.parent / 'figures'}/", file=sys.stderr)
    print(out)
    return 0
