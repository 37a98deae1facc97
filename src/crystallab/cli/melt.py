"""`crystallab melt DIR`: order parameters and states against temperature → DIR/melting.json."""

from __future__ import annotations

import argparse

from crystallab.models.base import METHODS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "melt",
        help="melting curves: states and order parameters against the sampling temperature",
        description="Analyse a results folder measured at several temperatures (`crystallab measure "
        "--temperature 0.3,0.5,...`) one temperature at a time: spread, phi, n_basins, h and valid mass "
        "against T with intervals, and the melting temperature T_m of each crystal ensemble. Writes "
        "DIR/melting.json and DIR/melting.png.",
    )
    p.add_argument("dir", help="a results folder with rows at two or more temperatures")
    p.add_argument("--thresholds", help="YAML file overriding analysis parameters (docs/analysis.md)")
    p.add_argument("--method", choices=METHODS, help="which rows to analyse (default: exact when present)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from crystallab.analysis import Thresholds
    from crystallab.analysis.melting import melt, melting_table
    from crystallab.errors import UserError
    from crystallab.reporting.plots import melting_figure
    from crystallab.store import atomic_write_bytes

    d = Path(args.dir)
    if not d.is_dir():
        raise UserError(f"no results folder at {d}")
    th = Thresholds.from_file(args.thresholds) if args.thresholds else Thresholds()
    curves = melt(d, th, args.method)
    if not curves:
        raise UserError(f"{d}: no setting was measured at two or more temperatures (measure with --temperature 0.5,1)")
    data = {"thresholds": dict(th.__dict__), "curves": [c.to_json() for c in curves]}
    atomic_write_bytes(d / "melting.json", (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())
    melting_figure(curves, d / "melting.png")
    print(melting_table(curves) + f"\nwrote {d / 'melting.json'} and {d / 'melting.png'}")
    return 0
