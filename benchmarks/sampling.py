"""Sampling N completions of one prompt: one prefill per prompt (the KV cache copied to the
batch) against plain `generate(num_return_sequences=N)` (which prefills N copies), side by side
in one run, on Gemma 3 270M on CPU by default.

    python benchmarks/sampling.py [--model builtin:gemma-3-270m] [--n 64] [--new 8] [--repeats 3] [--quick]

Prints, per prompt, samples per second of each path (the best of the repeats; the two paths
alternate within each repeat, so the machine's noise hits both), the speed-up, and how many of
the N samples differ between the paths for the same seed. Goal: at least 2x on prompts of 100
tokens or more. --quick: n 16, 1 repeat, the short and the long prompt only (well under a minute
once the model is cached).
"""

from __future__ import annotations

import argparse
import json
import os
import time

SHORT = "Question: Name a random colour.\nAnswer:"
LONG = (
    "The following is a transcript of a long conversation between two friends planning a trip. They talk about the "
    "weather, the trains, the food they will eat, the museums they want to visit, and the small hotel by the river "
    "where they stayed the last time, years ago, before the bridge was rebuilt and the old market moved to the "
    "square. At the end, one of them asks the other to pick a colour for the new bags they will buy for the trip, "
    "and to answer with the colour only.\nQuestion: Name a random colour.\nAnswer:"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin:gemma-3-270m")
    p.add_argument("--n", type=int, default=64, help="samples per prompt")
    p.add_argument("--new", type=int, default=8, help="new tokens per sample")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="n 16, 1 repeat, two prompts")
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args()
    prompts = [("short", SHORT), ("long", LONG), ("long x2", LONG + " " + LONG)]
    if a.quick:
        a.n, a.repeats, prompts = 16, 1, prompts[:2]
    from crystallab.models.load import load_model

    t0 = time.perf_counter()
    be = load_model(a.model)
    print(f"{a.model}: loaded in {time.perf_counter() - t0:.1f} s; n {a.n}, {a.new} new tokens, best of {a.repeats}")
    out = []
    for name, text in prompts:
        ctx = be.encode(text)
        best = {"plain": float("inf"), "one_prefill": float("inf")}
        got: dict[str, list[list[int]]] = {}
        for flag in (False, True):  # warm-up
            be.sample(ctx, n=2, seed=0, max_new_tokens=2, one_prefill=flag)
        for r in range(a.repeats):
            for mode, flag in (("plain", False), ("one_prefill", True)):
                t0 = time.perf_counter()
                got[mode] = be.sample(ctx, n=a.n, seed=r, max_new_tokens=a.new, one_prefill=flag)
                best[mode] = min(best[mode], time.perf_counter() - t0)
        row = {"prompt": name, "tokens": len(ctx), "n": a.n, "new_tokens": a.new}
        row.update({mode: round(a.n / s, 1) for mode, s in best.items()})
        row["speedup"] = round(best["plain"] / best["one_prefill"], 2)
        row["differ"] = sum(x != y for x, y in zip(got["plain"], got["one_prefill"]))
        out.append(row)
        print(
            f"{name:8} {row['tokens']:4d} tokens  plain {row['plain']:7.1f} samples/s  one prefill "
            f"{row['one_prefill']:7.1f} samples/s  x{row['speedup']:.2f}  ({row['differ']} of {a.n} samples differ)"
        )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
