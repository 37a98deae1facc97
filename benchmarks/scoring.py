"""The exact scorer side by side with per-candidate scoring and with sampling, in one run.

    python benchmarks/scoring.py [--json OUT]

On the same model and prompts it measures

  (a) crystallab's exact scorer (``score_exact``: one trie per prompt, one forward pass per
      batch, the LM head only on the rows needed);
  (b) per-candidate scoring the way lm-evaluation-harness does it: every surface form (with and
      without a leading space, after the same context/continuation split) is its own
      context+continuation sequence; sequences sorted by length, right-padded, batched; the
      full-vocabulary log-softmax at every position; no prefix reuse. Two variants:
        reimpl   a faithful re-implementation that also takes the boundary factor from the
                 last position, so its probabilities are the exact scorer's quantity
                 (``max_abs_diff`` compares them);
        lm-eval  lm-eval's own ``HFLM._loglikelihood_tokens`` (the batched core that
                 ``HFLM.loglikelihood`` runs after tokenizing) on the same token requests,
                 with its defaults (including its one-token-continuation logits cache); it
                 computes continuation log-likelihoods only (no boundary factor), so its time
                 is a lower bound for per-candidate scoring of the same probabilities. Its
                 log-likelihoods are checked against the re-implementation's.
      Runs when the ``lm-eval`` package is installed (``pip install lm-eval``);
  (c) sampling-based estimation to the same precision: per prompt, the number of samples N for
      which the expected total-variation distance between the empirical and the exact
      distribution is <= 0.02 (by simulating multinomial draws from the exact distribution),
      times the seconds per sample measured by drawing real samples with the project's sampler
      (``sample_prompt``, parser ``tokens``: one token past the deepest option, the fewest that
      decide the exact event) on a few prompts per task, extrapolated linearly.

Each of (a), (b) and the sampling timings runs in its own subprocess, so peak memory (VmHWM,
reset after the model is loaded) is each method's own. It prints a table and writes JSON.

Default workload: builtin:gemma-3-270m; tasks number_1_100, color, first_name; 20 raw and 10
chat prompts each; CPU. ``--random-config`` builds a model with random weights from a
config (a config.json path, a directory or hub id holding one, or ``transformers:ConfigClass``)
for timing large architectures without downloading weights (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_TASKS = "number_1_100,color,first_name"
TV_TARGET = 0.02


# ---------------------------------------------------------------------------------------------
# helpers shared by the workers


def rss_mb(field: str = "VmRSS") -> float:
    """Resident set size (VmRSS) or its peak (VmHWM) of this process, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak measured is the method's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_model(spec: str, device: str = "cpu", dtype: str = "auto", random_config: str | None = None, tokenizer: str | None = None, seed: int = 0):
    """A crystallab backend: a model spec as `crystallab measure --model` takes it, or a model with
    random weights built from a config (no weights are downloaded)."""
    from crystallab.models.hf import LoadSettings, load_backend

    settings = LoadSettings(dtype=dtype, device=device)
    if not random_config:
        return load_backend(spec, settings)
    return random_backend(random_config, tokenizer, settings, seed)


def random_backend(config: str, tokenizer: str | None, settings, seed: int = 0):
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from crystallab.models.hf import HFBackend, _resolve_device, _torch_dtype

    device = _resolve_device(settings.device)
    dtype = _torch_dtype(settings.dtype, device)
    tok_source = tokenizer
    if config.startswith("transformers:"):
        cfg = getattr(transformers, config.split(":", 1)[1])()
    else:
        path = Path(config)
        if path.is_file():
            cfg = AutoConfig.from_pretrained(str(path.parent)) if path.name == "config.json" else AutoConfig.from_pretrained(str(path))
            tok_source = tok_source or str(path.parent)
        else:
            cfg = AutoConfig.from_pretrained(config)  # a directory or a hub id: config.json only
            tok_source = tok_source or config
    if not tok_source:
        raise SystemExit("--random-config with a config class needs --tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_source)
    if len(tok) > cfg.vocab_size:
        cfg.vocab_size = len(tok)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device)
    info = {
        "model": f"random:{config}", "kind": "random", "revision": None, "dtype": str(dtype).replace("torch.", ""), "device": device,
        "load_seconds": round(time.perf_counter() - t0, 2), "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return HFBackend(model, tok, info, settings)


def workload_prompts(backend, task, n_raw: int, n_chat: int) -> list[str]:
    """The first ``n_raw`` raw contexts (spread over families, as `measure --limit` picks them)
    and the first ``n_chat`` chat instructions rendered with the model's chat template."""
    from crystallab.prompts import render_prompts

    out = [p.text for p in render_prompts(task, "raw", backend, limit=n_raw)] if n_raw else []
    if n_chat:
        out += [p.text for p in render_prompts(task, "chat", backend, limit=n_chat)]
    return out


def candidate_requests(backend, prompt: str, task) -> tuple[list[int], list[tuple[int, str, list[int]]]]:
    """The context tokens and, per answer string, (option, string, continuation tokens), split
    exactly as ``build_trie`` splits them. The baseline has no W(c) (the probability of the
    prompt's trailing blanks), so a prompt ending in a space or tab is refused; no built-in
    context or rendered chat prompt ends in one."""
    from crystallab.scoring.exact import split_answers

    ctx, answers, paths, _, lead = split_answers(backend, prompt, task)
    if lead:
        raise ValueError(f"the per-candidate baseline does not condition on trailing blanks: {prompt[-30:]!r}")
    return ctx, [(k, s, p) for (k, s), p in zip(answers, paths)]


def _sync(backend) -> None:
    import torch

    if backend.device.type == "cuda":
        torch.cuda.synchronize()


def _cuda_peak_mb(backend) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if backend.device.type == "cuda" else None


def _prepare(args):
    """Load the model, compute the boundary mask (a per-model precomputation both methods need,
    cached by the backend), render the prompts; then reset the peak-memory counters."""
    import torch

    from crystallab.suite import load_task

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    be = load_model(args.model, args.device, args.dtype, args.random_config, args.tokenizer)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    be.boundary_mask()
    boundary_s = time.perf_counter() - t0
    tasks = [load_task(t) for t in args.tasks.split(",")]
    prompts = {t.id: workload_prompts(be, t, args.raw, args.chat) for t in tasks}
    if be.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    mem = {"rss_after_load_mb": round(rss_mb(), 1), "peak_reset": reset_peak()}
    return be, tasks, prompts, {"load_seconds": round(load_s, 2), "boundary_mask_seconds": round(boundary_s, 2), **mem}


def _mem(be, base: dict) -> dict:
    out = dict(base, peak_rss_mb=round(rss_mb("VmHWM"), 1), lifetime_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    cuda = _cuda_peak_mb(be)
    if cuda is not None:
        out["cuda_peak_allocated_mb"] = round(cuda, 1)
    return out


def _batch_tokens(args, be) -> int:
    # the same rule as `crystallab measure`
    return args.batch_tokens or (32768 if be.device.type == "cuda" else 4096)


# ---------------------------------------------------------------------------------------------
# (a) the exact scorer


def worker_exact(args) -> dict:
    from crystallab.scoring.exact import ScoreStats, score_exact

    be, tasks, prompts, mem = _prepare(args)
    bt = _batch_tokens(args, be)
    score_exact(be, prompts[tasks[0].id][:1], tasks[0], batch_tokens=bt)  # warm-up (one prompt), not timed
    res: dict[str, Any] = {"batch_tokens": bt, "repeats": args.repeat, "tasks": {}}
    for t in tasks:
        times, st = [], None
        for _ in range(args.repeat):
            st = ScoreStats()
            load0 = os.getloadavg()[0]
            _sync(be)
            t0 = time.perf_counter()
            dists = score_exact(be, prompts[t.id], t, batch_tokens=bt, stats=st)
            _sync(be)
            times.append(time.perf_counter() - t0)
        unique = st.context_tokens + st.trie_nodes
        res["tasks"][t.id] = {
            "prompts": st.prompts, "options": len(t.options), "seconds": statistics.median(times), "seconds_all": [round(x, 3) for x in times],
            "tokens_forwarded": st.padded_tokens, "tokens_unpadded": st.tokens_forwarded, "unique_prompt_trie_tokens": unique,
            "token_overhead": st.padded_tokens / unique, "lm_head_rows": st.trie_nodes + st.prompts, "trie_nodes": st.trie_nodes,
            "context_tokens": st.context_tokens, "loadavg_1min_at_start": round(load0, 2),
            "probs": [d.tolist() for d in dists],
        }
    res["memory"] = _mem(be, mem)
    res["info"] = {k: v for k, v in be.info.items() if k in ("model", "dtype", "device", "architecture", "parameters")}
    return res


# ---------------------------------------------------------------------------------------------
# (b) per-candidate scoring


def _per_candidate_requests(be, task, prompt_list):
    reqs = []  # (prompt index, option, string, ctx, path)
    for i, p in enumerate(prompt_list):
        ctx, cands = candidate_requests(be, p, task)
        reqs.extend((i, k, s, ctx, path) for k, s, path in cands)
    return reqs


def score_per_candidate(be, task, prompt_list: list[str], batch_size: int) -> tuple[list, dict]:
    """The re-implementation: per answer string one sequence ctx+continuation, sorted by length
    (longest first, as lm-eval does), right-padded, batched; full logits and a full-vocabulary
    log-softmax at every position (as lm-eval computes them); the continuation's log-likelihood
    and the boundary mass at the last position. Returns option distributions (K, then ⊥)."""
    import numpy as np
    import torch

    reqs = _per_candidate_requests(be, task, prompt_list)
    boundary = torch.from_numpy(be.boundary_mask()).to(be.device)
    # per prompt: which tokens continue a path prefix to a longer path (a boundary token there
    # leads on to another answer, so it is not this answer's boundary; as the exact scorer does)
    nexts: list[dict[tuple, set]] = [dict() for _ in prompt_list]
    for i, _, _, _, path in reqs:
        for j in range(1, len(path)):
            nexts[i].setdefault(tuple(path[:j]), set()).add(path[j])
    order = sorted(range(len(reqs)), key=lambda r: (-(len(reqs[r][3]) + len(reqs[r][4])), tuple(reqs[r][3] + reqs[r][4])))
    loglik = np.zeros(len(reqs))
    bmass = np.zeros(len(reqs))
    tokens = padded = rows = 0
    pad = int(be.tokenizer.pad_token_id or 0)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            seqs = [reqs[r][3] + reqs[r][4] for r in chunk]
            T = max(map(len, seqs))
            x = torch.full((len(seqs), T), pad, dtype=torch.long)
            for b, q in enumerate(seqs):
                x[b, : len(q)] = torch.tensor(q)
            logits = be.model(x.to(be.device)).logits  # [B, T, V]: every position, as lm-eval
            logp = torch.log_softmax(logits.float(), dim=-1)
            del logits
            tokens += sum(map(len, seqs))
            padded += len(seqs) * T
            rows += len(seqs) * T
            for b, r in enumerate(chunk):
                i, _, _, ctx, path = reqs[r]
                L, n = len(ctx), len(path)
                idx = torch.arange(L - 1, L + n - 1, device=be.device)
                loglik[r] = float(logp[b, idx, torch.tensor(path, device=be.device)].double().sum())
                last = logp[b, L + n - 1].double()
                mass = float(last[boundary].exp().sum())
                for t in nexts[i].get(tuple(path), ()):
                    if boundary[t]:
                        mass -= float(last[t].exp())
                bmass[r] = mass
            del logp
    K = len(task.options)
    probs = [np.zeros(K + 1) for _ in prompt_list]
    seen = set()
    for r, (i, k, _, _, path) in enumerate(reqs):
        if (i, k, tuple(path)) in seen:  # distinct token paths per option, as the trie counts them
            continue
        seen.add((i, k, tuple(path)))
        probs[i][k] += np.exp(loglik[r]) * max(bmass[r], 0.0)
    for p in probs:
        total = p[:K].sum()
        p[K] = max(0.0, 1.0 - total)
        if total > 1.0:
            p[:K] /= total
    stats = {"sequences": len(reqs), "tokens_unpadded": tokens, "tokens_forwarded": padded, "lm_head_rows": rows}
    return probs, stats, {(reqs[r][0], reqs[r][2]): float(loglik[r]) for r in range(len(reqs))}


def pc_subset(n: int, k: int) -> list[int]:
    """The prompts per-candidate scoring times: all (k = 0), or k spread evenly over the list
    (raw first, then chat, so both kinds are in). Its time is extrapolated per prompt.

    >>> pc_subset(30, 4), pc_subset(5, 0), pc_subset(30, 1)
    ([0, 10, 19, 29], [0, 1, 2, 3, 4], [0])
    """
    if k <= 0 or k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def _timed_subset(args, prompt_list: list[str]) -> tuple[list[int], list[str]]:
    idx = pc_subset(len(prompt_list), args.pc_prompts)
    return idx, [prompt_list[i] for i in idx]


def _pc_batch(args, be) -> int:
    return args.pc_batch or (64 if be.device.type == "cuda" else 16)


def worker_per_candidate(args) -> dict:
    be, tasks, prompts, mem = _prepare(args)
    bs = _pc_batch(args, be)
    score_per_candidate(be, tasks[0], prompts[tasks[0].id][:1][:1], bs)  # warm-up, not timed
    res: dict[str, Any] = {"implementation": "reimpl: faithful re-implementation of lm-eval's per-candidate scoring, plus the boundary factor", "batch_size": bs, "tasks": {}}
    for t in tasks:
        load0 = os.getloadavg()[0]
        idx, sub = _timed_subset(args, prompts[t.id])
        _sync(be)
        t0 = time.perf_counter()
        probs, st, ll = score_per_candidate(be, t, sub, bs)
        _sync(be)
        secs = time.perf_counter() - t0
        scale = len(prompts[t.id]) / len(idx)
        res["tasks"][t.id] = {
            "prompts": len(prompts[t.id]), "prompts_timed": idx, "seconds_timed": secs, "seconds": secs * scale, **st,
            "tokens_forwarded": round(st["tokens_forwarded"] * scale), "lm_head_rows": round(st["lm_head_rows"] * scale), "loadavg_1min_at_start": round(load0, 2),
            "probs": [p.tolist() for p in probs], "loglik": {f"{i}\x1f{s}": v for (i, s), v in ll.items()},
        }
    res["memory"] = _mem(be, mem)
    return res


def _worker_lm_eval(args, logits_cache: bool) -> dict:
    try:
        import logging

        import lm_eval
        from lm_eval.models.huggingface import HFLM

        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # "an already-initialized model was passed": intended
    except ImportError as exc:
        return {"skipped": f"lm-eval is not installed ({exc}); pip install lm-eval"}
    be, tasks, prompts, mem = _prepare(args)
    bs = _pc_batch(args, be)
    lm = HFLM(pretrained=be.model, tokenizer=be.tokenizer, batch_size=bs, device=str(be.device), logits_cache=logits_cache)
    counted = {"padded": 0}
    call = lm._model_call

    def model_call(inps, *a, **k):
        counted["padded"] += int(inps.numel())
        return call(inps, *a, **k)

    lm._model_call = model_call
    what = ("logits_cache=False: every request its own sequence, no reuse (per-candidate scoring as defined)" if not logits_cache else
            "logits_cache=True (lm-eval's default): requests whose context + continuation[:-1] agree share one forward")
    res: dict[str, Any] = {
        "implementation": f"lm-eval {lm_eval.__version__} HFLM._loglikelihood_tokens (the core of HFLM.loglikelihood) on the same token requests, {what}; "
        "continuation log-likelihoods only, no boundary factor",
        "logits_cache": logits_cache, "batch_size": bs, "tasks": {},
    }
    warm = _per_candidate_requests(be, tasks[0], prompts[tasks[0].id][:1])[:bs]
    lm._loglikelihood_tokens([((str(i), s), ctx, path) for i, k, s, ctx, path in warm], disable_tqdm=True)
    for t in tasks:
        counted["padded"] = 0
        load0 = os.getloadavg()[0]
        idx, sub = _timed_subset(args, prompts[t.id])
        _sync(be)
        t0 = time.perf_counter()
        reqs = _per_candidate_requests(be, t, sub)
        out = lm._loglikelihood_tokens([((str(i), s), ctx, path) for i, k, s, ctx, path in reqs], disable_tqdm=True)
        _sync(be)
        secs = time.perf_counter() - t0
        scale = len(prompts[t.id]) / len(idx)
        res["tasks"][t.id] = {
            "prompts": len(prompts[t.id]), "prompts_timed": idx, "seconds_timed": secs, "seconds": secs * scale, "sequences": len(reqs),
            "tokens_forwarded": round(counted["padded"] * scale),
            "loadavg_1min_at_start": round(load0, 2), "loglik": {f"{i}\x1f{s}": float(o[0]) for (i, k, s, ctx, path), o in zip(reqs, out)},
        }
    res["memory"] = _mem(be, mem)
    return res


def worker_lm_eval(args) -> dict:
    return _worker_lm_eval(args, logits_cache=False)


def worker_lm_eval_default(args) -> dict:
    return _worker_lm_eval(args, logits_cache=True)


# ---------------------------------------------------------------------------------------------
# (c) sampling to the same precision


def samples_needed(p, tv: float = TV_TARGET, reps: int = 2000, seed: int = 0) -> int:
    """The smallest N for which the mean total-variation distance between the empirical
    distribution of N draws from ``p`` and ``p`` itself is <= ``tv`` (``reps`` simulated
    estimates per N, common random numbers across N; binary search over N).

    >>> samples_needed([0.5, 0.5]) in range(350, 450)  # E|p̂ - 1/2| = tv  ->  N ≈ 1/(2π tv²) ≈ 398
    True
    """
    import numpy as np

    p = np.asarray(p, dtype=float)
    p = np.clip(p, 0, None)
    p = p / p.sum()

    def mean_tv(n: int) -> float:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, p, size=reps)
        return float(0.5 * np.abs(counts / n - p).sum(axis=1).mean())

    lo, hi = 1, 1
    while mean_tv(hi) > tv:
        lo, hi = hi, hi * 2
        if hi > 1 << 30:
            return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if mean_tv(mid) <= tv:
            hi = mid
        else:
            lo = mid + 1
    return hi


def worker_sampling(args) -> dict:
    from crystallab.scoring.exact import build_trie
    from crystallab.scoring.sample import sample_prompt, trie_depths

    exact = json.loads((Path(args.worker_dir) / "exact.json").read_text())
    be, tasks, prompts, mem = _prepare(args)
    res: dict[str, Any] = {"tv_target": TV_TARGET, "parser": "tokens", "timed_samples_per_prompt": args.sample_n, "tasks": {}}
    sample_prompt(be, prompts[tasks[0].id][0], tasks[0], n=min(8, args.sample_n), seed=1, parser="tokens")  # warm-up
    for t in tasks:
        probs = exact["tasks"][t.id]["probs"]
        needed = [samples_needed(p, TV_TARGET) for p in probs]
        steps = [max(trie_depths(build_trie(be, text, t)), default=1) + 1 for text in prompts[t.id]]  # tokens the sampler draws
        n_raw = min(args.raw, len(t.contexts))
        picks = list(range(n_raw))[: (args.sample_prompts + 1) // 2] + list(range(n_raw, len(prompts[t.id])))[: args.sample_prompts // 2]
        timed = []
        for i in picks:
            _sync(be)
            t0 = time.perf_counter()
            sample_prompt(be, prompts[t.id][i], t, n=args.sample_n, seed=1000 + i, parser="tokens")
            _sync(be)
            timed.append({"prompt": i, "n": args.sample_n, "seconds": round(time.perf_counter() - t0, 3)})
        sec_per_sample = sum(x["seconds"] for x in timed) / sum(x["n"] for x in timed)
        res["tasks"][t.id] = {
            "samples_needed_per_prompt": needed, "samples_needed_total": int(sum(needed)),
            "samples_needed_median": float(statistics.median(needed)), "samples_needed_max": int(max(needed)),
            "timed": timed, "seconds_per_sample": sec_per_sample, "seconds_extrapolated": sec_per_sample * sum(needed),
            "new_tokens_per_sample": steps,
            # an ideal sampler (prompt computed once, KV cache shared, each sample stopped as soon as
            # its event is decided) still needs at least one full-vocabulary LM-head row per sample
            "ideal_sampler_lm_head_rows_lower_bound": int(sum(needed)),
            "sampler_lm_head_rows_as_run": int(sum(n * k for n, k in zip(needed, steps))),
        }
    res["memory"] = _mem(be, mem)
    return res


WORKERS = {"exact": worker_exact, "per_candidate": worker_per_candidate, "lm_eval": worker_lm_eval, "lm_eval_default": worker_lm_eval_default, "sampling": worker_sampling}


# ---------------------------------------------------------------------------------------------
# the driver


def _run_worker(name: str, argv: list[str], workdir: Path, in_process: bool) -> dict:
    out = workdir / f"{name}.json"
    if in_process:
        args = parse_args([*argv, "--worker", name, "--worker-dir", str(workdir)])
        out.write_text(json.dumps(WORKERS[name](args)))
    else:
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name, "--worker-dir", str(workdir)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark worker '{name}' failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def _max_abs_diff(a: list, b: list) -> float:
    return max(max(abs(x - y) for x, y in zip(p, q)) for p, q in zip(a, b))


def summarize(args, ex: dict, pc: dict, le: dict, ld: dict, sa: dict, wall: float) -> dict:
    """Per task and overall: times, tokens, ratios, differences; and the issue's targets."""
    tasks = args.tasks.split(",")
    per_task: dict[str, Any] = {}
    for t in tasks:
        e, p, s = ex["tasks"][t], pc["tasks"][t], sa["tasks"][t]
        row = {
            "prompts": e["prompts"],
            "exact_seconds": e["seconds"], "per_candidate_seconds": p["seconds"], "sampling_seconds_extrapolated": s["seconds_extrapolated"],
            "exact_tokens_forwarded": e["tokens_forwarded"], "unique_prompt_trie_tokens": e["unique_prompt_trie_tokens"],
            "per_candidate_tokens_forwarded": p["tokens_forwarded"],
            "exact_lm_head_rows": e["lm_head_rows"], "per_candidate_lm_head_rows": p["lm_head_rows"],
            "speedup_vs_per_candidate_reimpl": p["seconds"] / e["seconds"],
            "speedup_vs_sampling": s["seconds_extrapolated"] / e["seconds"],
            "token_overhead": e["token_overhead"],
            "max_abs_diff": _max_abs_diff([e["probs"][i] for i in p["prompts_timed"]], p["probs"]),
            "per_candidate_prompts_timed": len(p["prompts_timed"]),
            "samples_needed_total": s["samples_needed_total"], "samples_needed_median": s["samples_needed_median"],
            "sampling_seconds_per_sample": s["seconds_per_sample"],
            "ideal_sampler_lm_head_rows_lower_bound": s["ideal_sampler_lm_head_rows_lower_bound"],
            "lm_head_rows_ratio_ideal_sampler_vs_exact": s["ideal_sampler_lm_head_rows_lower_bound"] / e["lm_head_rows"],
        }
        for name, res in (("lm_eval", le), ("lm_eval_default", ld)):
            if "tasks" in res:
                lt = res["tasks"][t]
                row[f"{name}_seconds"] = lt["seconds"]
                row[f"{name}_tokens_forwarded"] = lt["tokens_forwarded"]
                row[f"speedup_vs_{name}"] = lt["seconds"] / e["seconds"]
                row[f"{name}_vs_reimpl_max_abs_loglik_diff"] = max(abs(v - p["loglik"][k]) for k, v in lt["loglik"].items())
        # (b) as the issue defines it (every surface form its own sequence, no reuse): the faster
        # of the re-implementation and lm-eval's own code with its cache off
        row["speedup_vs_per_candidate"] = min(row["speedup_vs_per_candidate_reimpl"], row.get("speedup_vs_lm_eval", float("inf")))
        per_task[t] = row

    def tot(key):
        return sum(per_task[t][key] for t in tasks)

    overall: dict[str, Any] = {k: tot(k) for k in ("exact_seconds", "per_candidate_seconds", "sampling_seconds_extrapolated", "exact_tokens_forwarded",
                                                   "unique_prompt_trie_tokens", "per_candidate_tokens_forwarded", "exact_lm_head_rows", "per_candidate_lm_head_rows")}
    overall["speedup_vs_per_candidate_reimpl"] = overall["per_candidate_seconds"] / overall["exact_seconds"]
    for name in ("lm_eval", "lm_eval_default"):
        if f"{name}_seconds" in per_task[tasks[0]]:
            overall[f"{name}_seconds"] = tot(f"{name}_seconds")
            overall[f"{name}_tokens_forwarded"] = tot(f"{name}_tokens_forwarded")
            overall[f"speedup_vs_{name}"] = overall[f"{name}_seconds"] / overall["exact_seconds"]
    overall["speedup_vs_per_candidate"] = min(overall["speedup_vs_per_candidate_reimpl"], overall.get("speedup_vs_lm_eval", float("inf")))
    overall["speedup_vs_sampling"] = overall["sampling_seconds_extrapolated"] / overall["exact_seconds"]
    overall["ideal_sampler_lm_head_rows_lower_bound"] = tot("ideal_sampler_lm_head_rows_lower_bound")
    overall["lm_head_rows_ratio_ideal_sampler_vs_exact"] = overall["ideal_sampler_lm_head_rows_lower_bound"] / overall["exact_lm_head_rows"]
    overall["token_overhead"] = overall["exact_tokens_forwarded"] / overall["unique_prompt_trie_tokens"]
    overall["max_abs_diff"] = max(per_task[t]["max_abs_diff"] for t in tasks)
    n_tot = sum(ex["tasks"][t]["prompts"] for t in tasks)
    overall["exact_prompts_per_s"] = n_tot / overall["exact_seconds"]
    overall["exact_options_per_s"] = sum(ex["tasks"][t]["prompts"] * ex["tasks"][t]["options"] for t in tasks) / overall["exact_seconds"]
    overall["exact_tokens_per_s"] = overall["exact_tokens_forwarded"] / overall["exact_seconds"]

    peak_mb = ex["memory"]["peak_rss_mb"]
    key = "number_1_100" if "number_1_100" in per_task else tasks[0]
    targets = {
        f"speedup_vs_per_candidate >= 10 on {key}": per_task[key]["speedup_vs_per_candidate"] >= 10,
        f"max_abs_diff <= 1e-4 on {key}": per_task[key]["max_abs_diff"] <= 1e-4,
        "speedup_vs_sampling >= 100 (the workload)": overall["speedup_vs_sampling"] >= 100,
        "token_overhead <= 1.1 (every task)": all(per_task[t]["token_overhead"] <= 1.1 for t in tasks),
        "exact peak memory <= 3 GB": peak_mb <= 3 * 1024,
    }
    import torch
    import transformers

    def strip(res: dict, drop=("probs", "loglik")) -> dict:
        if "tasks" not in res:
            return res
        return {**{k: v for k, v in res.items() if k != "tasks"}, "tasks": {t: {k: v for k, v in res["tasks"][t].items() if k not in drop} for t in tasks}}

    return {
        "workload": {
            "model": ex["info"].get("model"), "random_config": args.random_config, "tasks": tasks, "raw_prompts": args.raw, "chat_prompts": args.chat,
            "device": ex["info"].get("device"), "dtype": ex["info"].get("dtype"), "architecture": ex["info"].get("architecture"),
            "torch_threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": _cpu_name(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "exact_batch_tokens": ex["batch_tokens"], "exact_repeats": ex["repeats"], "per_candidate_batch_size": pc["batch_size"],
            "sampling_timed_prompts_per_task": args.sample_prompts, "sampling_timed_samples_per_prompt": args.sample_n,
            "loadavg_1min_start_end": [round(args._loadavg, 2), round(os.getloadavg()[0], 2)],
            "benchmark_wall_seconds": round(wall, 1),
        },
        "exact": {**strip(ex), "seconds_note": "median of repeats; tokenization and trie building included"},
        "per_candidate": strip(pc),
        "lm_eval": strip(le),
        "lm_eval_default": strip(ld),
        "sampling": sa,
        "per_task": per_task,
        "overall": overall,
        "speedup_vs_per_candidate": per_task[key]["speedup_vs_per_candidate"],
        "speedup_vs_sampling": overall["speedup_vs_sampling"],
        "token_overhead": overall["token_overhead"],
        "max_abs_diff": overall["max_abs_diff"],
        "peak_memory_mb": {
            "exact": peak_mb, "per_candidate_reimpl": pc["memory"]["peak_rss_mb"], "sampling": sa["memory"]["peak_rss_mb"],
            "lm_eval": le.get("memory", {}).get("peak_rss_mb"), "lm_eval_default": ld.get("memory", {}).get("peak_rss_mb"),
        },
        "targets": targets,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _f(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def print_report(r: dict) -> None:
    w = r["workload"]
    print(f"\nworkload: {w['model']} ({w['architecture']}, {w['dtype']}, {w['device']}, {w['torch_threads']} torch threads, {w['cpu_count']} CPUs, {w['cpu']}); "
          f"tasks {', '.join(w['tasks'])}; {w['raw_prompts']} raw + {w['chat_prompts']} chat prompts each")
    print(f"load average (1 min) at start / end: {w['loadavg_1min_start_end']}; wall time {w['benchmark_wall_seconds']} s")
    print("(a)  exact: crystallab score_exact (median of", w["exact_repeats"], "repeats)")
    print(f"(b)  reimpl: {r['per_candidate']['implementation']}, batch {w['per_candidate_batch_size']}")
    timed = {t: x.get("per_candidate_prompts_timed") for t, x in r["per_task"].items()}
    if any(timed[t] != r["per_task"][t]["prompts"] for t in timed):
        parts = [f"{n} of {r['per_task'][t]['prompts']} prompts of {t}" for t, n in timed.items()]
        print(f"     (b) timed on {', '.join(parts)}, seconds extrapolated per prompt (--pc-prompts)")
    for key, tag in (("lm_eval", "(b)  lm-eval"), ("lm_eval_default", "(b') lm-eval default")):
        print(f"{tag}: {r[key].get('implementation') or r[key].get('skipped')}")
    print(f"(c)  sampling: {w['sampling_timed_samples_per_prompt']} real samples on {w['sampling_timed_prompts_per_task']} prompts per task, extrapolated to E[TV] <= 0.02")
    cols = [("task", 13, None), ("(a) s", 8, ".1f"), ("(b) reimpl s", 13, ".0f"), ("(b) lm-eval s", 14, ".0f"), ("(b') lm-eval dflt s", 19, ".1f"),
            ("(c) s", 8, ".0f"), ("a vs b", 8, ".1f"), ("a vs b'", 8, ".1f"), ("a vs c", 8, ".0f"), ("tok (a)", 8, "d"), ("tok (b)", 9, "d"),
            ("overhead", 9, ".3f"), ("max|dp|", 9, ".1e")]
    print("".join(f"{c:>{n}}" if i else f"{c:<{n}}" for i, (c, n, _) in enumerate(cols)))
    rows = list(r["per_task"].items()) + [("all", r["overall"])]
    for t, x in rows:
        vals = [t, x["exact_seconds"], x["per_candidate_seconds"], x.get("lm_eval_seconds"), x.get("lm_eval_default_seconds"),
                x["sampling_seconds_extrapolated"], x["speedup_vs_per_candidate"], x.get("speedup_vs_lm_eval_default"), x["speedup_vs_sampling"],
                x["exact_tokens_forwarded"], x["per_candidate_tokens_forwarded"], x["token_overhead"], x["max_abs_diff"]]
        print("".join(f"{v:<{n}}" if i == 0 else f"{_f(v, f):>{n}}" for i, ((_, n, f), v) in enumerate(zip(cols, vals))))
    print("(c) extrapolation: samples for E[TV] <= 0.02 (simulated from the exact distribution) x seconds per sample (timed):")
    for t, s in r["sampling"]["tasks"].items():
        n_t = sum(x["n"] for x in s["timed"])
        print(f"  {t}: {s['samples_needed_total']} samples over {len(s['samples_needed_per_prompt'])} prompts (median {s['samples_needed_median']:.0f}, "
              f"max {s['samples_needed_max']}) x {s['seconds_per_sample'] * 1e3:.1f} ms/sample (timed: {n_t} samples on {len(s['timed'])} prompts, "
              f"{sum(x['seconds'] for x in s['timed']):.1f} s) = {s['seconds_extrapolated']:.0f} s")
    print("    an ideal sampler (prompt once, shared KV cache, early stop) needs >= 1 LM-head row per sample: " + ", ".join(
        f"{t} {x['ideal_sampler_lm_head_rows_lower_bound']} rows = {x['lm_head_rows_ratio_ideal_sampler_vs_exact']:.1f}x the exact scorer's {x['exact_lm_head_rows']}"
        for t, x in r["per_task"].items()))
    pm = r["peak_memory_mb"]
    print("peak RSS, MiB (each method in its own process, model weights included): " + ", ".join(f"{k} {_f(v, '.0f')}" for k, v in pm.items()))
    o = r["overall"]
    print(f"exact throughput: {o['exact_prompts_per_s']:.2f} prompts/s, {o['exact_options_per_s']:.0f} options/s, {o['exact_tokens_per_s']:.0f} tokens/s")
    print(f"speedup_vs_per_candidate {r['speedup_vs_per_candidate']:.1f}x (number_1_100; the faster of reimpl and lm-eval without cache), "
          f"speedup_vs_sampling {r['speedup_vs_sampling']:.0f}x (workload), token_overhead {r['token_overhead']:.3f}, max_abs_diff {r['max_abs_diff']:.2e}")
    for k, ok in r["targets"].items():
        print(f"  [{'ok' if ok else 'MISSED'}] {k}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Exact scorer vs per-candidate scoring vs sampling, side by side.")
    p.add_argument("--json", metavar="OUT", help="write the results here")
    p.add_argument("--model", default="builtin:gemma-3-270m", help="a model spec, as `crystallab measure --model`")
    p.add_argument("--random-config", metavar="CONFIG", help="random weights from a config: config.json path, directory or hub id, or transformers:ConfigClass")
    p.add_argument("--tokenizer", help="tokenizer for --random-config (default: next to the config)")
    p.add_argument("--tasks", default=DEFAULT_TASKS)
    p.add_argument("--raw", type=int, default=20, help="raw prompts per task")
    p.add_argument("--chat", type=int, default=10, help="chat prompts per task")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--batch-tokens", type=int, default=0, help="exact scorer: tokens per forward (default as `measure`: 4096 CPU, 32768 CUDA)")
    p.add_argument("--pc-batch", type=int, default=0, help="per-candidate: sequences per batch (default 16 CPU, 64 CUDA)")
    p.add_argument("--pc-prompts", type=int, default=0, help="per-candidate: time only N prompts per task, spread over the list, and extrapolate per prompt (default 0: all)")
    p.add_argument("--repeat", type=int, default=3, help="exact scorer: timed repeats per task (the median is used)")
    p.add_argument("--lm-eval", choices=("both", "nocache", "default", "none"), default="both",
                   help="lm-eval's own code: with its logits cache off (per-candidate as defined), on (its default), both, or none")
    p.add_argument("--sample-prompts", type=int, default=2, help="sampling: prompts timed per task (half raw, half chat)")
    p.add_argument("--sample-n", type=int, default=512, help="sampling: samples drawn per timed prompt (512 = one generate() chunk of the sampler)")
    p.add_argument("--in-process", action="store_true", help="run every method in this process (peak memory is then shared)")
    p.add_argument("--temperatures", metavar="T,T,...", help="instead: the cost of each extra temperature scored from one forward pass (e.g. 0.5,0.7,1.0,1.5)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        out = WORKERS[args.worker](args)
        (Path(args.worker_dir) / f"{args.worker}.json").write_text(json.dumps(out))
        return 0
    if args.temperatures:
        return temperature_cost(args)
    args._loadavg = os.getloadavg()[0]
    t0 = time.perf_counter()
    passthrough = list(argv)
    if "--json" in passthrough:
        i = passthrough.index("--json")
        del passthrough[i : i + 2]
    passthrough = [a for a in passthrough if not a.startswith("--json=") and a != "--in-process"]
    skipped = {"skipped": f"--lm-eval {args.lm_eval}"}

    def step(name: str, label: str) -> dict:
        res = _run_worker(name, passthrough, wd, args.in_process)
        secs = sum(t["seconds"] for t in res.get("tasks", {}).values()) if "tasks" in res and name != "sampling" else None
        print(f"{label} done" + (f": {secs:.1f} s" if secs is not None else ""), file=sys.stderr, flush=True)
        return res

    with tempfile.TemporaryDirectory(prefix="crystallab-bench-") as d:
        wd = Path(d)
        ex = step("exact", "(a) exact")
        pc = step("per_candidate", "(b) per-candidate reimpl")
        le = step("lm_eval", "(b) lm-eval, cache off") if args.lm_eval in ("both", "nocache") else skipped
        ld = step("lm_eval_default", "(b') lm-eval default") if args.lm_eval in ("both", "default") else skipped
        sa = step("sampling", "(c) sampling")
    report = summarize(args, ex, pc, le, ld, sa, time.perf_counter() - t0)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(args.json)
    return 0


def temperature_cost(args: argparse.Namespace) -> int:
    """One temperature against several, side by side on the same prompts and model, repeats
    interleaved (so machine noise hits both): the extra seconds per extra temperature, as a share
    of the one-temperature time. Also checks that each temperature's distributions are the same
    bits as when it is scored alone."""
    import numpy as np

    from crystallab.models.decoding import decodings
    from crystallab.scoring.exact import score_exact_each
    from crystallab.suite import load_task

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    temps = decodings(tuple(float(x) for x in args.temperatures.split(",")))
    be = load_model(args.model, args.device, args.dtype, args.random_config, args.tokenizer)
    batch = args.batch_tokens or 4096
    work = [(load_task(t), workload_prompts(be, load_task(t), args.raw, args.chat)) for t in args.tasks.split(",")]

    def run(ds) -> tuple[float, list]:
        t0 = time.perf_counter()
        got = [score_exact_each(be, ps, task, ds, batch_tokens=batch) for task, ps in work]
        return time.perf_counter() - t0, got

    run(temps[:1])  # warm-up
    one, many = [], []
    for _ in range(max(1, args.repeat)):
        one.append(run(temps[:1])[0])
        t, got = run(temps)
        many.append(t)
    alone = run(temps[:1])[1]
    same = all(all(np.array_equal(a, b) for a, b in zip(got[w][0], alone[w][0])) for w in range(len(work)))
    t1, tn = statistics.median(one), statistics.median(many)
    extra = (tn - t1) / max(1, len(temps) - 1)
    report = {
        "model": args.model,
        "tasks": args.tasks,
        "prompts": sum(len(ps) for _, ps in work),
        "temperatures": [d.temperature for d in temps],
        "seconds_one": round(t1, 3),
        "seconds_all": round(tn, 3),
        "extra_per_temperature": round(extra / t1, 4),
        "first_temperature_bit_identical": same,
        "repeats": args.repeat,
    }
    print(
        f"{report['prompts']} prompts, {len(temps)} temperatures: one {t1:.2f} s, all {tn:.2f} s "
        f"(median of {args.repeat}); each extra temperature costs {100 * extra / t1:.1f} % of one; "
        f"bit-identical to scoring alone: {same}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
