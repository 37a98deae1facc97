"""Time `crystallab lab sweep` against its budgets: the default toy sweep (11 λ × 5 replicas at
one size) in at most 30 minutes on 2 CPU cores, `--quick` in at most 2 minutes.

    python benchmarks/sweep.py [--quick | --both] [--json OUT] [-- extra sweep flags]

Each sweep runs in a fresh process into a temporary folder (nothing reused: the toy universe is
pretrained too); prints the wall time, the phases the sweep reports, the verdict with Σ, λ_c,
dip and hysteresis p, and the ratio to the budget. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGETS = {"default": 1800.0, "quick": 120.0}


def run(quick: bool, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        cmd = [sys.executable, "-m", "crystallab.cli.main", "lab", "sweep", "--out", str(out)]
        cmd += (["--quick"] if quick else []) + extra
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(proc.returncode)
        summary = json.loads((out / "summary.json").read_text())
    budget = BUDGETS["quick" if quick else "default"]
    size = summary["sizes"][0]
    w = size["sweep"]
    return {
        "mode": "quick" if quick else "default",
        "wall_seconds": round(wall, 1),
        "budget_seconds": budget,
        "ratio_to_budget": round(wall / budget, 3),
        "within_budget": wall <= budget,
        "phases": size["timings"],
        "verdict": w["verdict"],
        "sigma": w["sharpness"],
        "lambda_c": w["lambda_c"],
        "dip_p": w["dip_p"],
        "hysteresis_p": w["hysteresis_p"],
        "grid": len(w["grid"]),
        "replicas": size["replicas"],
        "cpus": os.cpu_count(),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="time --quick only")
    mode.add_argument("--both", action="store_true", help="time --quick, then the default sweep")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("extra", nargs="*", help="flags passed to the sweep (after --)")
    args = ap.parse_args()
    modes = [True, False] if args.both else [args.quick]
    figures = []
    for quick in modes:
        f = run(quick, args.extra)
        figures.append(f)
        print(
            f"crystallab lab sweep{' --quick' if quick else ''}: {f['wall_seconds']:.1f} s wall "
            f"({f['ratio_to_budget']:.2f} of the {f['budget_seconds']:.0f} s budget; {f['grid']} λ × "
            f"{f['replicas']} replicas)"
        )
        print("  phases: " + ", ".join(f"{k} {v} s" for k, v in f["phases"].items()))
        print(
            f"  {f['verdict']}: Σ {f['sigma']}, λ_c {f['lambda_c']}, dip p {f['dip_p']}, hysteresis p "
            f"{f['hysteresis_p']}"
        )
        if f["load_average_after"] > 1.5:
            print(f"  note: load average {f['load_average_after']} on {f['cpus']} CPUs: the time is inflated")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
