"""`crystallab lab generic-sft | random-target | erasure | rl-escape | sweep | planted-seed | forced-seed`.

The first four are the non-circular experiments (lab/study.py: replicated, read on held-out
prompts); sweep is the control-parameter sweep (lab/sweeps.py: sharp or gradual?);
planted-seed and forced-seed are positive controls (their answer is built in).

Every flag is generated from a ``LabConfig`` field (lab/config.py); each experiment renames or
fixes some of them (forced-seed's ``--seed-from`` is ``sft_data``; it fixes ``rl_target``).
``--config FILE`` gives any field in YAML; a flag typed on the command line beats the file.
"""

from __future__ import annotations

import argparse

from crystallab.cli.flags import add_dataclass_flags, typed_fields
from crystallab.console import Console
from crystallab.lab.config import EXPERIMENTS, LabConfig, resolve_lab_config

# flags of the lab commands that are no LabConfig field
NOT_FIELDS = ("--config", "--quick", "--seeds", "--verbose")


def add_lab_options(p: argparse.ArgumentParser, experiment: str) -> None:
    """``--config``, ``--quick`` and one flag per LabConfig field the experiment leaves open."""
    exp = EXPERIMENTS[experiment]
    p.add_argument(
        "--config",
        help="YAML file of lab settings (any flag's name, see configs/, or the config.yaml "
        "of an earlier run); flags given here override it",
    )
    p.add_argument("--quick", action="store_true", help="a fast, rough version (for tests and a first look)")
    add_dataclass_flags(
        p,
        LabConfig,
        names=exp.flags,
        exclude=exp.fixed(),
        defaults=exp.defaults,
        helps=exp.helps,
        choices={k: v for k, v in exp.allowed.items() if len(v) > 1},
        aliases={"seed_family": ["--family"]},
    )
    p.set_defaults(experiment=experiment)


def lab_config(args: argparse.Namespace) -> LabConfig:
    """The LabConfig the command runs: defaults, the experiment's, ``--config``, typed flags."""
    return resolve_lab_config(args.experiment, args.config, typed_fields(LabConfig, args), quick=args.quick)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lab",
        help="experiments: generic-sft, random-target, erasure, rl-escape, sweep; controls: planted-seed, forced-seed",
        description="Run the lab's controlled experiments: pretrain or load a model, SFT and RL it with "
        "phase tracking, analyze and report (RUN/config.yaml records the settings, "
        "RUN/train.log the trainers' logs).",
    )
    exp = p.add_subparsers(dest="lab_experiment", metavar="EXPERIMENT", required=True)
    for name in ("generic-sft", "random-target", "erasure", "rl-escape"):
        sp = exp.add_parser(name, help=EXPERIMENTS[name].help, description=EXPERIMENTS[name].help)
        add_lab_options(sp, name)
        sp.set_defaults(run=run_study)
    sw = exp.add_parser("sweep", help=EXPERIMENTS["sweep"].help, description=EXPERIMENTS["sweep"].help)
    add_lab_options(sw, "sweep")
    sw.set_defaults(run=run_sweep)
    ps = exp.add_parser("planted-seed", help=EXPERIMENTS["planted-seed"].help)
    add_lab_options(ps, "planted-seed")
    ps.add_argument(
        "--seeds", type=int, default=1, help="repeat with N seeds (sharing one pretrained universe) and print the tally"
    )
    ps.set_defaults(run=run_planted)
    fs = exp.add_parser("forced-seed", help=EXPERIMENTS["forced-seed"].help)
    add_lab_options(fs, "forced-seed")
    fs.set_defaults(run=run_forced)


def run_study(args: argparse.Namespace) -> int:
    from crystallab.lab.study import run_study as run
    from crystallab.lab.study import study_text

    s = run(lab_config(args), args.experiment, console=Console(verbose=args.verbose))
    print(study_text(s))
    print(f"{args.experiment}: summary in {lab_config(args).out}/summary.json")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from crystallab.lab.sweeps import run_sweep as run
    from crystallab.lab.sweeps import sweep_text

    cfg = lab_config(args)
    s = run(cfg, console=Console(verbose=args.verbose))
    print(sweep_text(s))
    print(f"sweep: summary in {cfg.out}/summary.json")
    return 0


def run_planted(args: argparse.Namespace) -> int:
    from crystallab.lab.experiments import run_seeds, summary_text, tally_text

    cfg = lab_config(args)
    console = Console(verbose=args.verbose)
    done = run_seeds(cfg, args.seeds, console, "planted-seed")
    for s in done["runs"]:
        print((f"--- seed {s['config']['seed']} ---\n" if args.seeds > 1 else "") + summary_text(s))
    if done["tally"]:
        print(tally_text(done["tally"]))
    return 0


def run_forced(args: argparse.Namespace) -> int:
    from crystallab.lab.experiments import escape_text, run_lab, summary_text

    s = run_lab(lab_config(args), console=Console(verbose=args.verbose), experiment="forced-seed")
    print(summary_text(s))
    escape = escape_text(s)
    if escape:
        print(escape)
    return 0
