"""Time one lab experiment per stage, and the tracker's share of training.

    python benchmarks/lab.py [--experiment demo] [--json OUT] [-- EXTRA FLAGS...]
    python benchmarks/lab.py --experiment generic-sft -- --config configs/gemma-270m-study.yaml --replicas 1

Runs the experiment in a fresh process into a temporary folder and prints the wall time, the
seconds of every stage the run records (pretrain, measure_base, sft, rl, analyze, report), and
the share of sft + rl spent measuring the tracked prompts (the PhaseTracker). Run it on an
otherwise idle machine: on 2 cores, a concurrent job slows every stage.
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
    ap.add_argument("--experiment", default="demo", help="demo, or a lab experiment (generic-sft, rl-escape, ...)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("extra", nargs="*", help="flags passed to the experiment (after --)")
    args = ap.parse_args()
    command = ["demo"] if args.experiment == "demo" else ["lab", args.experiment]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "crystallab.cli.main", *command, "--out", str(out), "--no-report", *args.extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        summary = json.loads((out / "summary.json").read_text())
    rows = []
    for u in summary["universes"]:
        t = dict(u["timings"])
        tracking = t.pop("tracking", 0.0)
        train = t.get("sft", 0.0) + t.get("rl", 0.0)
        rows.append(
            {"stages": t, "tracking": tracking, "tracking_share": round(tracking / train, 3) if train else None}
        )
    print(f"crystallab {' '.join(command)} {' '.join(args.extra)}: {wall:.1f} s wall")
    for r in rows:
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items()))
        if r["tracking_share"] is not None:
            print(f"  tracking {r['tracking']:.1f} s = {r['tracking_share']:.0%} of sft + rl")
    load = os.getloadavg()[0]
    if load > 1.5:
        print(
            f"  note: load average {load:.1f} on {os.cpu_count()} CPUs: another job was running, the time is inflated"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_seconds": round(wall, 1), "universes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
