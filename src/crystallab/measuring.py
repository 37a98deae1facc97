"""model × tasks × prompts → rows of the distribution table, resumable.

>>> cfg = MeasureConfig(model="builtin:gemma-3-270m", tasks=["number_1_10"], out="runs/g")
>>> cfg.method, cfg.prompts
('exact', 'all')
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from crystallab import __version__
from crystallab.errors import UserError
from crystallab.prompts import Prompt, render_prompts
from crystallab.store import OTHER, STAGES, ResultStore, writer_lock
from crystallab.suite import Task, load_tasks

METHODS = ("exact", "sample", "logprobs-topk")


@dataclass
class MeasureConfig:
    """Everything one `crystallab measure` needs; the CLI flags map onto these fields."""

    model: str
    tasks: list[str]
    out: str
    prompts: str = "all"  # raw | chat | all
    method: str = "exact"  # exact | sample | logprobs-topk (api: models only)
    samples: int = 200  # completions per prompt for method=sample
    seed: int = 0
    parser: str = "text"  # sample parser: text (the task's) | tokens (the exact event)
    label: str | None = None  # checkpoint name; default: the model spec
    stage: str = "other"  # a display label: the analysis reads the parent graph, never the stage
    parent: str | None = None  # the checkpoint this one was trained from (the ladder's parent graph)
    step: int | None = None
    replica: int | None = None  # the replica of a replicated lab run (written into every row)
    tasks_dir: str | None = None
    limit: int | None = None  # first N prompts of each kind (quick runs)
    batch_tokens: int = 0  # 0 = by device: 4096 on CPU, 32768 on CUDA
    chunk: int = 16  # prompts per shard: a kill loses at most one chunk
    dtype: str = "auto"
    device: str = "cpu"
    device_map: str | None = None  # "auto": split one model over every visible GPU (accelerate)
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_plain_chat: bool = True
    progress: bool | None = None  # None: only on an interactive terminal outside CI

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown --method '{self.method}'; use exact, sample or logprobs-topk")
        api = self.model.startswith("api:")
        if api and self.method == "exact":
            raise UserError("an api: model has no exact mode (a server does not return every option's probability); use --method logprobs-topk (approximate, from top logprobs) or --method sample")
        if self.method == "logprobs-topk" and not api:
            raise UserError("--method logprobs-topk is for api: models; local and vllm: models are scored exactly with --method exact")
        if self.method == "logprobs-topk" and self.prompts != "raw":
            raise UserError("--method logprobs-topk scores raw prompts only (a chat API cannot continue a partial answer on most servers); pass --prompts raw, or use --method sample for chat prompts")
        if self.method == "sample" and self.samples <= 0:
            raise UserError(f"--samples must be a positive number, got {self.samples}")
        if self.parser not in ("text", "tokens"):
            raise UserError(f"unknown --parser '{self.parser}'; use text or tokens")
        if self.stage not in STAGES:
            raise UserError(f"unknown --stage '{self.stage}'; use one of {', '.join(STAGES)}")
        if self.replica is not None and (isinstance(self.replica, bool) or not isinstance(self.replica, int) or self.replica < 0):
            raise UserError(f"--replica must be a non-negative integer, got {self.replica!r}")
        if self.chunk <= 0:
            raise UserError(f"--chunk must be positive, got {self.chunk}")
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


def load_model(cfg: MeasureConfig) -> Any:
    """The backend for ``cfg.model``: an api: server, vLLM, or transformers (everything else)."""
    from crystallab.models.spec import parse_spec

    ms = parse_spec(cfg.model)
    if ms.kind == "api":
        from crystallab.models.api import ApiBackend

        return ApiBackend(ms)
    if ms.kind == "vllm":
        from crystallab.models.vllm import load_vllm

        return load_vllm(ms, dtype=cfg.dtype, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, allow_plain_chat=cfg.allow_plain_chat)
    from crystallab.models.hf import LoadSettings, load_backend

    return load_backend(ms, LoadSettings(dtype=cfg.dtype, device=cfg.device, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle, allow_plain_chat=cfg.allow_plain_chat, device_map=cfg.device_map))


def run_record(cfg: MeasureConfig, tasks: list[Task], prompt_sets: dict[str, list[Prompt]], label: str, index: int) -> dict[str, Any]:
    return {
        "run_id": uuid.uuid4().hex, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "crystallab_version": __version__, "checkpoint": label, "checkpoint_index": index,
        "step": cfg.step, "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}, "tasks": {t.id: t.version for t in tasks},
        "chat_template": next((p.template for ps in prompt_sets.values() for p in ps if p.kind == "chat"), None),
    }


def measure(cfg: MeasureConfig, backend: Any = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure one checkpoint on the configured tasks into ``cfg.out``; returns the run record.

    ``backend`` lets a caller (the ladder, the lab's tracker) pass a model already in memory.
    """
    cfg.validate()
    log = log or (lambda s: print(s, file=sys.stderr))
    tasks = load_tasks(cfg.tasks, cfg.tasks_dir)
    store = ResultStore(cfg.out)
    with writer_lock(store.root):
        return _measure_locked(cfg, store, tasks, backend, log)


def _measure_locked(cfg: MeasureConfig, store: ResultStore, tasks: list[Task], backend: Any, log: Callable[[str], None]) -> dict[str, Any]:
    if backend is None:
        backend = load_model(cfg)
    label = cfg.label or cfg.model
    index = store.checkpoint(label, cfg.model, cfg.stage, backend.info, parent=cfg.parent)

    prompt_sets = {t.id: render_prompts(t, cfg.prompts, backend, cfg.limit) for t in tasks}
    for t in tasks:
        store.register_task(t.id, t.version, {p.id: p.text for p in prompt_sets[t.id] if p.kind == "raw"})
    run = run_record(cfg, tasks, prompt_sets, label, index)
    store.manifest["runs"].append(run)
    store.save_manifest()
    run.update(measure_into(store, cfg, backend, tasks, prompt_sets, label, index, log))
    store.consolidate()
    store.save_manifest()
    return run


def measure_into(
    store: ResultStore, cfg: MeasureConfig, backend: Any, tasks: list[Task], prompt_sets: dict[str, list[Prompt]], label: str, index: int,
    log: Callable[[str], None], after_chunk: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Measure the prompts no shard holds yet into new shards (unique names; the manifest is not
    touched, so several processes can share one folder). Prompts that fail are recorded in
    DIR/failures/ and measured again by the next run. Returns the run's results."""
    batch_tokens = cfg.batch_tokens or (32768 if str(getattr(backend, "device", "cpu")).startswith("cuda") else 4096)
    done = store.done_groups()
    tp = Throughput()
    todo = {t.id: [p for p in prompt_sets[t.id] if (label, cfg.step, t.id, p.id, cfg.method, cfg.replica) not in done] for t in tasks}
    tp.skipped = sum(len(prompt_sets[t.id]) - len(todo[t.id]) for t in tasks)
    total = sum(len(v) for v in todo.values())
    if tp.skipped:
        log(f"crystallab: resuming: {tp.skipped} finished prompt(s) kept, {total} to measure")
    failed: list[dict[str, Any]] = []
    n_failed = 0
    with _progress(cfg.progress) as bar:
        bar_id = bar.add_task(f"measuring {label}", total=total) if bar else None
        for t in tasks:
            t0 = time.perf_counter()
            # chunks are cut from the full prompt list, not from what is left, so a resumed chunk
            # is batched exactly as in an uninterrupted run and its numbers are bit-identical
            full = prompt_sets[t.id]
            for i in range(0, len(full), cfg.chunk):
                chunk = [p for p in full[i : i + cfg.chunk] if (label, cfg.step, t.id, p.id, cfg.method, cfg.replica) not in done]
                if not chunk:
                    continue
                rows, samples, ntok = _measure_chunk(backend, t, chunk, cfg, label, index, batch_tokens, failed)
                store.write_rows(rows, samples)
                store.write_failures(failed[n_failed:])
                n_failed = len(failed)
                if after_chunk:
                    after_chunk()
                tp.prompts += len(chunk)
                tp.options += len(chunk) * len(t.options)
                tp.tokens += ntok
                if bar:
                    bar.advance(bar_id, len(chunk))
            tp.per_task[t.id] = round(time.perf_counter() - t0, 3)
            tp.seconds += tp.per_task[t.id]
    if failed:
        log(f"crystallab: {len(failed)} prompt(s) failed ({failed[0]['error']}); they are listed in {store.root / 'failures'} and are measured again when you rerun the same command")
    return {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "throughput": tp.summary(), "seconds_per_task": tp.per_task, "failed": len(failed)}


def completion_rows(res: Any, label: str, index: int, step: int | None, task_id: str, prompt_id: str, labels: list[str], replica: int | None = None) -> list[dict]:
    """DIR/samples rows for one prompt's completions (``res.completions`` and the option index
    each parsed to, ``res.parsed``; None is ⊥)."""
    return [
        {"checkpoint": label, "checkpoint_index": index, "step": step, "task": task_id, "prompt_id": prompt_id, "sample_index": j, "completion": c, "option": OTHER if k is None else labels[k], "replica": replica}
        for j, (c, k) in enumerate(zip(res.completions, res.parsed))
    ]


def _measure_chunk(backend: Any, task: Task, prompts: list[Prompt], cfg: MeasureConfig, label: str, index: int, batch_tokens: int, failed: list[dict] | None = None) -> tuple[list[dict], list[dict], int]:
    from crystallab.models.hf import sample_seed
    from crystallab.scoring.exact import ScoreStats, score_exact
    from crystallab.scoring.sample import sample_prompt

    labels = [*task.labels, OTHER]
    rows: list[dict] = []
    samples: list[dict] = []
    uncovered: list[float | None] = [None] * len(prompts)
    if hasattr(backend, "measure_prompts"):  # a served model: each prompt succeeds or fails on its own
        n = cfg.samples if cfg.method == "sample" else 0
        seeds = [sample_seed(cfg.seed, label, str(cfg.step), task.id, p.id) for p in prompts]
        results = backend.measure_prompts(task, prompts, cfg.method, n, seeds)
        ok = [(p, r) for p, r in zip(prompts, results) if not isinstance(r, Exception)]
        for p, r in zip(prompts, results):
            if isinstance(r, Exception) and failed is not None:
                failed.append({"checkpoint": label, "step": cfg.step, "task": task.id, "prompt_id": p.id, "method": cfg.method, "replica": cfg.replica, "error": f"{type(r).__name__}: {r}", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        prompts = [p for p, _ in ok]
        dists = [r.probs for _, r in ok]
        uncovered = [r.uncovered for _, r in ok]
        ntok = sum(r.tokens for _, r in ok)
        for p, r in ok:
            samples += completion_rows(r, label, index, cfg.step, task.id, p.id, labels, cfg.replica)
    elif cfg.method == "exact":
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
            samples += completion_rows(res, label, index, cfg.step, task.id, p.id, labels, cfg.replica)
    for p, dist, unc in zip(prompts, dists, uncovered):
        for opt, prob in zip(labels, dist):
            rows.append({
                "model": cfg.model, "checkpoint": label, "checkpoint_index": index, "stage": cfg.stage, "step": cfg.step,
                "task": task.id, "task_version": task.version, "prompt_id": p.id, "prompt_kind": p.kind, "prompt_family": p.family,
                "prompt_text": p.text, "option": opt, "prob": float(prob), "method": cfg.method, "n_samples": n, "seed": cfg.seed,
                "uncovered": unc, "split": p.split, "replica": cfg.replica,
            })
    return rows, samples, ntok
