"""`crystallab demo`: the whole crystallization story on the built-in toy universe, in minutes."""

from __future__ import annotations

import argparse

from crystallab.cli.lab import add_lab_options, lab_config
from crystallab.console import Console
from crystallab.lab.config import EXPERIMENTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help=EXPERIMENTS["demo"].help,
        description="Run the crystallization story end to end on the planted-seed toy universe (about a "
        "minute on 2 CPU cores, budget 3 minutes: benchmarks/demo.py; --quick is faster). "
        "One line per stage; the trainers' logs go to RUN/train.log (-v shows them).",
    )
    add_lab_options(p, "demo")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.lab.experiments import run_lab, summary_text

    s = run_lab(lab_config(args), console=Console(verbose=args.verbose), experiment="demo")
    print(summary_text(s))
    print(s["report"] or f"{s['results']}/analysis.json")
    return 0
