"""Time `crystallab demo` end to end against its budget (3 minutes on 2 CPU cores).

    python benchmarks/demo.py [--quick] [--json OUT] [--budget 180]

Runs the demo in a fresh process into a temporary folder (so nothing is reused: the toy
universe is pretrained too), and prints the wall time, the per-phase times the demo reports,
the verdicts, and the ratio to the budget. Run it on an otherwise idle machine: on 2 cores, a
concurrent job slows every phase.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=float, default=180.0, help="seconds (default: 180)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        quick = ["--quick"] if args.quick else []
        cmd = [sys.executable, "-m", "crystallab.cli.main", "demo", "--out", str(out), *quick]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        summary = json.loads((out / "summary.json").read_text())
    load = os.getloadavg()[0]
    u = summary["universes"][0]
    arms = {
        a["label"]: {
            "chat_heldout": (a["chat"].get("heldout") or {}).get("state"),
            "valid_heldout": (a["chat"].get("heldout") or {}).get("valid_mass"),
            "nucleation": (a["verdicts"].get("nucleation") or {}).get("value"),
            "k_star_counts": (a.get("nucleation") or {}).get("k_star_counts"),
        }
        for a in u["arms"]
    }
    figures = {
        "wall_seconds": round(wall, 1), "budget_seconds": args.budget, "ratio_to_budget": round(wall / args.budget, 3),
        "within_budget": wall <= args.budget, "phases": u["timings"], "base_raw": u["base"]["raw_state"], "arms": arms,
        "quick": args.quick, "cpus": os.cpu_count(), "load_average_after": round(load, 2),
    }
    share = f"{wall / args.budget:.2f} of the {args.budget:.0f} s budget"
    print(f"crystallab demo{' --quick' if args.quick else ''}: {wall:.1f} s wall ({share})")
    print("  phases: " + ", ".join(f"{k} {v} s" for k, v in u["timings"].items()) + " (tracking is inside sft and rl)")
    print(f"  base raw {u['base']['raw_state']}; " + "; ".join(f"{k}: {v}" for k, v in arms.items()))
    if load > 1.5:
        print(f"  note: load average {load:.1f} on {os.cpu_count()} CPUs: another job ran, the time is inflated")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
