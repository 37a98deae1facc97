"""Where the exact scorer's time goes: tokenization and tries, mask building, the model body,
the LM head matmul, the per-chunk reductions, and the rest.

    python benchmarks/profile_scoring.py [--model builtin:gemma-3-270m] [--task number_1_100]
        [--raw 20] [--chat 10] [--torch-profiler]

Stages are timed by wrapping the backend's methods (wall clock, one process); with
``--torch-profiler`` the op-level table of torch.profiler is printed as well.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    import torch

    from crystallab.scoring import exact
    from crystallab.suite import load_task
    from scoring import load_model, workload_prompts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:gemma-3-270m")
    p.add_argument("--task", default="number_1_100")
    p.add_argument("--raw", type=int, default=20)
    p.add_argument("--chat", type=int, default=10)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--torch-profiler", action="store_true")
    args = p.parse_args(argv)

    be = load_model(args.model, device=args.device, dtype=args.dtype)
    be.boundary_mask()
    task = load_task(args.task)
    prompts = workload_prompts(be, task, args.raw, args.chat)
    exact.score_exact(be, prompts[:1], task)  # warm-up

    spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def clock(name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent[name] += time.perf_counter() - t0

    sync = torch.cuda.synchronize if be.device.type == "cuda" else (lambda: None)

    def wrap(obj, attr: str, name: str) -> None:
        """Time every call of ``obj.attr`` under ``name`` (CUDA work included: synchronized)."""
        orig = getattr(obj, attr)

        def inner(*a, **k):
            with clock(name):
                out = orig(*a, **k)
                sync()
                return out

        setattr(obj, attr, inner)

    wrap(exact, "build_trie", "tokenize + build tries")
    wrap(be, "_attention_mask", "attention mask (float, to device)")
    wrap(be.model.base_model, "forward", "model body (forward)")
    wrap(be, "_logits", "LM head matmul")
    wrap(be, "_head_reductions", "LM head total (matmul + reductions)")
    wrap(be, "score_tries", "score_tries total")

    st = exact.ScoreStats()
    prof = None
    if args.torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    with prof or nullcontext():
        t0 = time.perf_counter()
        exact.score_exact(be, prompts, task, batch_tokens=args.batch_tokens, stats=st)
        total = time.perf_counter() - t0

    head_total = spent.pop("LM head total (matmul + reductions)", 0.0)
    st_total = spent.pop("score_tries total", 0.0)
    parts = {
        "tokenize + build tries": spent["tokenize + build tries"],
        "tree mask (numpy) + packing + gathers": st_total - spent["model body (forward)"] - head_total - spent["attention mask (float, to device)"],
        "attention mask (float, to device)": spent["attention mask (float, to device)"],
        "model body (forward)": spent["model body (forward)"],
        "LM head matmul": spent["LM head matmul"],
        "LM head reductions (max, exp, sums, gathers)": head_total - spent["LM head matmul"],
    }
    parts["rest (probabilities, Python)"] = total - sum(parts.values())
    print(f"{args.task}: {len(prompts)} prompts, {st.tokens_forwarded} tokens ({st.padded_tokens} with padding), "
          f"{st.trie_nodes + len(prompts)} LM-head rows, {total:.2f} s")
    for k, v in parts.items():
        print(f"  {k:<46} {v:8.2f} s  {100 * v / total:5.1f}%")
    if prof is not None:
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
