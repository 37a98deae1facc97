"""`crystallab ladder LADDER.yaml | --preset NAME`: measure every checkpoint, analyze, report."""

from __future__ import annotations

import argparse
import gc
import sys
from dataclasses import replace

from crystallab.cli.measure import add_measure_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="measure an ordered ladder of checkpoints, then analyze and report", description="Measure every checkpoint of a ladder into one resumable folder, then write analysis.json and report.html.")
    p.add_argument("file", nargs="?", help="ladder YAML (checkpoints: label, stage, model, revision)")
    p.add_argument("--preset", help="a shipped ladder: olmo2-1b, olmo2-7b, tulu3-8b, qwen2.5-7b, qwen2.5-0.5b, llama3.1-8b")
    p.add_argument("--list-presets", action="store_true", help="list the shipped ladders and exit")
    p.add_argument("--thresholds", help="YAML thresholds for the analysis")
    add_measure_options(p, ladder=True)
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run one Ray job per checkpoint and task (pip install 'crystallab[ray]'); ADDRESS: a cluster (ray://host:10001, auto), none: a local cluster")
    p.add_argument("--num-gpus", type=float, default=0, help="with --ray: GPUs per job (default 0)")
    p.add_argument("--num-cpus", type=float, default=1, help="with --ray: CPUs per job (default 1)")
    p.add_argument("--max-retries", type=int, default=3, help="with --ray: retries of a job whose worker dies (default 3)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.ladder import load_ladder, preset_names

    if args.list_presets:
        for name in preset_names():
            lad = load_ladder(preset=name)
            print(f"{name:<14} " + " → ".join(f"{c.label} ({c.model})" for c in lad.checkpoints))
        return 0
    from crystallab.errors import UserError

    if not args.task or not args.out:
        raise UserError("crystallab ladder needs --task and --out")
    lad = load_ladder(args.file, args.preset)
    from crystallab.analysis import analyze_dir, summary_text
    from crystallab.cli.measure import config_from_args
    from crystallab.measuring import run_measure

    from crystallab.store import ResultStore, writer_lock

    base = config_from_args(args, model="", label=None, stage="other")
    with writer_lock(ResultStore(args.out).root):  # the whole ladder, Ray workers included, is one writer
        if args.ray is not None:
            from crystallab.sweep import sweep_ladder

            sweep_ladder(lad, base, address=args.ray or None, num_gpus=args.num_gpus, num_cpus=args.num_cpus, max_retries=args.max_retries)
        parents = lad.parents()
        for i, c in enumerate(lad.checkpoints if args.ray is None else ()):
            print(f"[{i + 1}/{len(lad.checkpoints)}] {c.label} ({c.stage}): {c.model}", file=sys.stderr)
            load = replace(base.load, revision=c.revision or base.load.revision)
            run_measure(replace(base, model=c.model, label=c.label, stage=c.stage, parent=parents[c.label], load=load))
            gc.collect()  # drop the previous checkpoint's weights before loading the next
    print(summary_text(analyze_dir(args.out, args.thresholds)))
    try:
        from crystallab.reporting import write_report
    except ImportError:
        return 0
    print(write_report(args.out))
    return 0
