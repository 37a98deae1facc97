"""Exact scoring time on the benchmark's number_1_100 workload (20 raw + 10 chat prompts), Gemma 3 270M,
for a before/after pair: the same script runs against either source tree, alternating, e.g.

    git worktree add /tmp/before REV
    for i in 1 2; do PYTHONPATH=/tmp/before/src python benchmarks/exact_only.py; PYTHONPATH=src python benchmarks/exact_only.py; done
"""
import sys, time, torch
torch.set_num_threads(1)
import crystallab
from crystallab.models.hf import load_backend
from crystallab.prompts import render_prompts
from crystallab.scoring.exact import score_exact
try:
    from crystallab.suite import load_task
except ImportError:
    from crystallab.tasks import load_task
be = load_backend("builtin:gemma-3-270m")
task = load_task("number_1_100")
raw = [p.text for p in render_prompts(task, "raw", be, 20)]
chat = [p.text for p in render_prompts(task, "chat", be, 10)]
prompts = raw + chat
score_exact(be, prompts[:2], task)  # warm up
best = 1e9
for _ in range(2):
    t0 = time.perf_counter(); out = score_exact(be, prompts, task); best = min(best, time.perf_counter() - t0)
print(f"{crystallab.__file__.split('/src/')[0]} exact_s {best:.2f} prompts {len(prompts)} p0 {out[0][:3].round(6).tolist()}")
