"""Sampling an open task: N completions per prompt, each cut at the task's stop rule."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from crystallab.models.base import TextSampler, TokenSampler, sample_seed
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.text import MAX_DRAWS, decode_continuations
from crystallab.prompts import Prompt
from crystallab.semantic.folder import OPEN_GROUP, done_open, write_completions
from crystallab.semantic.text import cut
from crystallab.store import DECODING
from crystallab.suite import Task


def sample_open(
    backend: Any, prompt: Prompt, task: Task, n: int, seed: int, decoding: Decoding = DEFAULT
) -> list[tuple[str, str]]:
    """``n`` completions of one prompt as ``(raw, answer)``: the decoded continuation, and its
    answer under the task's stop rule (``Task.stop_at``, at most ``Task.max_tokens`` tokens)."""
    if n <= 0:
        raise ValueError("the number of samples must be positive")
    if isinstance(backend, TokenSampler):
        seqs = backend.sample(backend.encode(prompt.text), n=n, seed=seed, max_new_tokens=task.max_tokens,
                              decoding=decoding)  # fmt: skip
        raws = decode_continuations(backend.tokenizer, seqs)
    elif isinstance(backend, TextSampler):
        raws = []
        j = 0
        while len(raws) < n and j < MAX_DRAWS * n:  # a server may answer fewer than asked
            got, _ = backend.complete(
                prompt.text, prompt.kind == "chat", n - len(raws), seed if j == 0 else sample_seed(seed, str(j)),
                max_tokens=task.max_tokens, decoding=decoding,
            )  # fmt: skip
            raws += got[: n - len(raws)]
            j += 1
    else:
        raise TypeError(f"model '{getattr(backend, 'name', backend)}' cannot sample completions")
    return [(r, cut(r, task.stop_at)) for r in raws]


def measure_open_into(
    root: Any,
    cfg: Any,
    backend: Any,
    task: Task,
    prompts: list[Prompt],
    label: str,
    index: int,
    log: Callable[[str], None],
) -> int:
    """Sample every prompt of one open task that the folder does not hold yet, under every
    decoding setting, and write the completions (one shard per prompt, so that an interrupted run
    keeps what it finished); returns the prompts sampled."""
    s = cfg.settings
    done = done_open(root)
    todo = []
    for p in prompts:
        for d in s.decodings:
            cols = d.columns()
            key = dict(checkpoint=label, step=cfg.step, task=task.id, prompt_id=p.id, replica=cfg.replica, **cols)
            if tuple(key[k] for k in OPEN_GROUP) not in done:
                todo.append((p, d, cols))
    if len(todo) < len(prompts) * len(s.decodings):
        log(f"crystallab: resuming {task.id}: {len(prompts) * len(s.decodings) - len(todo)} prompt(s) kept")

    def one(item: tuple[Prompt, Decoding, dict[str, Any]]) -> list[dict[str, Any]]:
        p, d, cols = item
        seed = sample_seed(s.seed, label, str(cfg.step), task.id, p.id)
        got = sample_open(backend, p, task, s.samples, seed, d)
        return [
            {
                "model": cfg.model, "checkpoint": label, "checkpoint_index": index, "stage": cfg.stage,
                "step": cfg.step, "task": task.id, "task_version": task.version, "prompt_id": p.id,
                "prompt_kind": p.kind, "prompt_family": p.family, "prompt_text": p.text, "split": p.split,
                "replica": cfg.replica, "seed": s.seed, **{k: cols[k] for k in DECODING},
                "sample_index": j, "completion": answer, "raw": raw,
            }
            for j, (raw, answer) in enumerate(got)
        ]  # fmt: skip

    workers = max(1, int(getattr(backend, "concurrency", 1))) if isinstance(backend, TextSampler) else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rows in pool.map(one, todo):
            write_completions(root, rows)
    return len(todo)
