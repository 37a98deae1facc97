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
        description="Run the non-circular crystallization story on the toy universe: pretrain it, generic SFT "
        "(no random task) with 3 replicas, GRPO under a random utility per option, analyze on held-out "
        "prompts, report (budget 3 minutes on 2 CPU cores: benchmarks/demo.py; --quick is faster). "
        "One line per stage; the trainers' logs go to RUN/train.log (-v shows them).",
    )
    add_lab_options(p, "demo")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.lab.study import run_study, study_text

    s = run_study(lab_config(args), "demo", console=Console(verbose=args.verbose))
    print(study_text(s))
    u = s["universes"][0]
    print(u["report"] or f"{u['results']}/analysis.json")
    return 0
