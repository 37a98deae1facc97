"""`crystallab demo`: the whole crystallization story on the built-in toy universe, in minutes."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from crystallab.cli.lab import add_lab_options

    p = sub.add_parser("demo", help="pretrain → SFT → RL a toy model with phase tracking, then analyze and report", description="Run the crystallization story end to end on the planted-seed toy universe (about a minute on 2 CPU cores, budget 3 minutes: benchmarks/demo.py; --quick is faster).")
    add_lab_options(p, "runs/demo")
    p.add_argument("--sft-data", default="planted", choices=["planted", "diverse", "format"], help="SFT answers: a planted family's (default), each instruction its own family's (keeps diversity), or none")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.cli.lab import lab_config
    from crystallab.lab.experiments import run_lab, summary_text

    s = run_lab(lab_config(args, sft_data=args.sft_data))
    print(summary_text(s))
    print(s["report"] or f"{s['results']}/analysis.json")
    return 0
