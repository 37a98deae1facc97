"""model × tasks × prompts → rows of the distribution table, resumable.

>>> cfg = MeasureConfig(model="builtin:gemma-3-270m", tasks=["number_1_10"], out="runs/g")
>>> cfg.method, cfg.prompts
('exact', 'all')
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from crystallab import __version__
from crystallab.errors import UserError
from crystallab.prompts import Prompt, render_prompts
from crystallab.store import OTHER, STAGES, ResultStore
from crystallab.tasks import Task, load_tasks

METHODS = ("exact", "sample")


@dataclass
class MeasureConfig:
    """Everything one `crystallab measure` needs; the CLI flags map onto these fields."""

    model: str
    tasks: list[str]
    out: str
    prompts: str = "all"  # raw | chat | all
    method: str = "exact"  # exact | sample
    samples: int = 200  # completions per prompt for method=sample
    seed: int = 0
    parser: str = "text"  # sample parser: text (the task's) | tokens (the exact event)
    label: str | None = None  # checkpoint name; default: the model spec
    stage: str = "other"
    step: int | None = None
    tasks_dir: str | None = None
    limit: int | None = None  # first N prompts of each kind (quick runs)
    batch_tokens: int = 0  # 0 = by device: 4096 on CPU, 32768 on CUDA
    chunk: int = 16  # prompts per shard: a kill loses at most one chunk
    dtype: str = "auto"
    device: str = "cpu"
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_plain_chat: bool = True
    progress: bool | None = None  # None: only on an interactive terminal outside CI

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown --method '{self.method}'; use exact or sample")
        if self.method == "sample" and self.samples <= 0:
            raise UserError(f"--samples must be a positive number, got {self.samples}")
        if self.parser not in ("text", "tokens"):
            raise UserError(f"unknown --parser '{self.parser}'; use text or tokens")
        if self.stage not in STAGES:
            raise UserError(f"unknown --stage '{self.stage}'; use one of {', '.join(STAGES)}")
        if self.limit is not None and self.limit <= 0:
            raise UserError(f"--limit must be positive, got {self.limit}")
        if self.prompts not in ("raw", "chat", "all"):
            raise UserError(f"unknown --prompts '{self.prompts}'; use raw, chat or all")


@dataclass
class Throughput:
    prompts: int = 0
    options: int = 0
    tokens: int = 0
    seconds: float = 0.0
    skipped: int = 0
    per_task: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        return {
            "prompts": self.prompts, "skipped_prompts": self.skipped, "seconds": round(self.seconds, 3),
            "prompts_per_s": round(self.prompts / s, 3), "options_per_s": round(self.options / s, 2), "tokens_per_s": round(self.tokens / s, 1),
        }


def _progress(enabled: bool | None):
    from contextlib import nullcontext

    if enabled is None:
        enabled = sys.stderr.isatty() and not os.environ.get("CI")
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def measure(cfg: MeasureConfig, backend: Any = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure one checkpoint on the configured tasks into ``cfg.out``; returns the run record.

    ``backend`` lets a caller (the ladder, the lab's tracker) pass a model already in memory.
    """
    cfg.validate()
    log = log or (lambda s: print(s, file=sys.stderr))
    tasks = load_tasks(cfg.tasks, cfg.tasks_dir)
    store = ResultStore(cfg.out)
    if backend is None:
        from crystallab.models.hf import LoadSettings, load_backend

        backend = load_backend(cfg.model, LoadSettings(dtype=cfg.dtype, device=cfg.device, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle, allow_plain_chat=cfg.allow_plain_chat))
    label = cfg.label or cfg.model
    index = store.checkpoint(label, cfg.model, cfg.stage, backend.info)
    batch_tokens = cfg.batch_tokens or (32768 if str(getattr(backend, "device", "cpu")).startswith("cuda") else 4096)

    prompt_sets = {t.id: render_prompts(t, cfg.prompts, backend, cfg.limit) for t in tasks}
    for t in tasks:
        store.register_task(t.id, t.version, {p.id: p.text for p in prompt_sets[t.id] if p.kind == "raw"})
    run: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "crystallab_version": __version__, "checkpoint": label, "checkpoint_index": index,
        "step": cfg.step, "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}, "tasks": {t.id: t.version for t in tasks},
        "chat_template": next((p.template for ps in prompt_sets.values() for p in ps if p.kind == "chat"), None),
    }
    store.manifest["runs"].append(run)
    store.save_manifest()

    done = store.done_groups()
    tp = Throughput()
    todo = {t.id: [p for p in prompt_sets[t.id] if (label, cfg.step, t.id, p.id, cfg.method) not in done] for t in tasks}
    tp.skipped = sum(len(prompt_sets[t.id]) - len(todo[t.id]) for t in tasks)
    total = sum(len(v) for v in todo.values())
    if tp.skipped:
        log(f"crystallab: resuming: {tp.skipped} finished prompt(s) kept, {total} to measure")
    with _progress(cfg.progress) as bar:
        bar_id = bar.add_task(f"measuring {label}", total=total) if bar else None
        for t in tasks:
            t0 = time.perf_counter()
            for i in range(0, len(todo[t.id]), cfg.chunk):
                chunk = todo[t.id][i : i + cfg.chunk]
                rows, samples, ntok = _measure_chunk(backend, t, chunk, cfg, label, index, batch_tokens)
                store.write_rows(rows, samples)
                tp.prompts += len(chunk)
                tp.options += len(chunk) * len(t.options)
                tp.tokens += ntok
                if bar:
                    bar.advance(bar_id, len(chunk))
            tp.per_task[t.id] = round(time.perf_counter() - t0, 3)
            tp.seconds += tp.per_task[t.id]
    store.consolidate()
    run.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), throughput=tp.summary(), seconds_per_task=tp.per_task)
    store.save_manifest()
    return run


def _measure_chunk(backend: Any, task: Task, prompts: list[Prompt], cfg: MeasureConfig, label: str, index: int, batch_tokens: int) -> tuple[list[dict], list[dict], int]:
    from crystallab.models.hf import sample_seed
    from crystallab.scoring.exact import ScoreStats, score_exact
    from crystallab.scoring.sample import sample_prompt

    labels = [*task.labels, OTHER]
    rows: list[dict] = []
    samples: list[dict] = []
    if cfg.method == "exact":
        st = ScoreStats()
        dists = score_exact(backend, [p.text for p in prompts], task, batch_tokens=batch_tokens, stats=st)
        ntok, n = st.tokens_forwarded, 0
    else:
        dists, ntok, n = [], 0, cfg.samples
        for p in prompts:
            seed = sample_seed(cfg.seed, label, str(cfg.step), task.id, p.id)
            res = sample_prompt(backend, p.text, task, n=n, seed=seed, parser=cfg.parser)
            dists.append(res.probs)
            ntok += n * (len(backend.encode(p.text)) + 8)
            samples += [
                {"checkpoint": label, "checkpoint_index": index, "step": cfg.step, "task": task.id, "prompt_id": p.id, "sample_index": j, "completion": c, "option": OTHER if k is None else labels[k]}
                for j, (c, k) in enumerate(zip(res.completions, res.parsed))
            ]
    for p, dist in zip(prompts, dists):
        for opt, prob in zip(labels, dist):
            rows.append({
                "model": cfg.model, "checkpoint": label, "checkpoint_index": index, "stage": cfg.stage, "step": cfg.step,
                "task": task.id, "task_version": task.version, "prompt_id": p.id, "prompt_kind": p.kind, "prompt_family": p.family,
                "prompt_text": p.text, "option": opt, "prob": float(prob), "method": cfg.method, "n_samples": n, "seed": cfg.seed,
            })
    return rows, samples, ntok
