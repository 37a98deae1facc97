"""`crystallab analyze DIR`: states, transitions and verdicts → DIR/analysis.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="order parameters, phases and verdicts of a results folder", description="Compute order parameters with intervals, phase states, transitions and verdicts; write DIR/analysis.json.")
    p.add_argument("dir", help="a results folder written by `crystallab measure`")
    p.add_argument("--thresholds", help="YAML file overriding thresholds (tau, alpha, cover, retention_min, crystal_diversity, liquid_diversity, liquid_n_distinct, n_boot, n_perm, level, seed)")
    p.add_argument("--method", choices=["exact", "sample", "logprobs-topk"], help="which rows to analyse (default: exact when present)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(analyze_dir(args.dir, args.thresholds, args.method)["summary"])
    return 0


def analyze_dir(directory: str, thresholds: str | None = None, method: str | None = None) -> dict:
    from crystallab.phases import Thresholds, analyze, summary_text
    from crystallab.store import ResultStore, atomic_write_bytes, read_table

    d = Path(directory)
    if not d.is_dir():
        from crystallab.errors import UserError

        raise UserError(f"no results folder at {d}")
    ResultStore(d)  # refuses a folder written by an incompatible version
    th = Thresholds.from_file(thresholds) if thresholds else Thresholds()
    result = analyze(read_table(d), th, method)
    atomic_write_bytes(d / "analysis.json", (json.dumps(result, indent=1, ensure_ascii=False) + "\n").encode())
    return {"analysis": result, "summary": summary_text(result) + f"\nwrote {d / 'analysis.json'}"}
