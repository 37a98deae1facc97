"""Ladder sweeps on a Ray cluster: one Ray task per (checkpoint, task), all writing into one
resumable results folder.

The driver holds the folder's writer lock (``store.writer_lock``) for the whole sweep and owns
the manifest: it registers every checkpoint (so indices follow the ladder's
order, whatever order the jobs finish in) and every task before any job starts, and afterwards
records each job's load info and run record and consolidates the table. A job only writes
shards (uniquely named, renamed into place atomically) and failure records, so jobs on many
machines never write the same file. A job whose worker dies is retried by Ray
(``max_retries``); the retry skips the prompts whose shards the dead worker already wrote.

Every machine must see the results folder at the same path (a shared filesystem) and have
crystallab installed; ``--num-gpus`` is each job's GPU request (``tensor_parallel_size`` for a
vllm: model, or the GPUs a ``--device-map auto`` model spreads over).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Callable

from crystallab.errors import UserError, require
from crystallab.ladder import Ladder
from crystallab.measuring import MeasureConfig, measure_into, run_record
from crystallab.models.load import load_model
from crystallab.prompts import render_prompts
from crystallab.store import ResultStore, writer_lock
from crystallab.suite import load_tasks


def ray_jobs(lad: Ladder, base: MeasureConfig) -> list[MeasureConfig]:
    """One MeasureConfig per (checkpoint, task), in ladder order."""
    tasks = load_tasks(base.tasks, base.tasks_dir)
    out = []
    parents = lad.parents()
    for c in lad.checkpoints:
        for t in tasks:
            load = replace(base.load, revision=c.revision or base.load.revision)
            cfg = replace(
                base,
                model=c.model,
                label=c.label,
                stage=c.stage,
                parent=parents[c.label],
                load=load,
                tasks=[t.id],
                progress=False,
            )
            cfg.validate()
            out.append(cfg)
    return out


def sweep_ladder(
    lad: Ladder,
    base: MeasureConfig,
    address: str | None = None,
    num_gpus: float = 0,
    num_cpus: float = 1,
    max_retries: int = 3,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every (checkpoint, task) of ``lad`` as a Ray task; returns the jobs' run records.
    Uses the running Ray session if there is one, else ``ray.init(address)`` (None: a local
    cluster on this machine; ``auto``: the cluster this machine belongs to)."""
    ray = require("ray", "ray")
    log = log or (lambda s: print(s, file=sys.stderr))
    jobs = ray_jobs(lad, base)
    with writer_lock(
        ResultStore(base.out).root
    ):  # the driver is the folder's one writer; jobs add shards under its lock
        return _sweep(ray, lad, base, jobs, address, num_gpus, num_cpus, max_retries, log)


def _sweep(
    ray: Any,
    lad: Ladder,
    base: MeasureConfig,
    jobs: list[MeasureConfig],
    address: str | None,
    num_gpus: float,
    num_cpus: float,
    max_retries: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    tasks = {t.id: t for t in load_tasks(base.tasks, base.tasks_dir)}
    store = ResultStore(base.out)
    index = {c.label: store.checkpoint(c.label, c.model, c.stage, _info_of(store, c.label)) for c in lad.checkpoints}
    if base.settings.prompts in ("raw", "all"):
        for t in tasks.values():
            store.register_task(
                t.id, t.version, {p.id: p.text for p in render_prompts(t, "raw", None, base.settings.limit)}
            )
    store.save_manifest()

    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=True, include_dashboard=False)
    remote = ray.remote(max_retries=max_retries, num_gpus=num_gpus, num_cpus=num_cpus)(run_job)
    pending = {remote.remote(cfg, index[cfg.label or cfg.model]): cfg for cfg in jobs}
    log(
        f"crystallab: {len(pending)} Ray job(s) ({len(lad.checkpoints)} checkpoint(s) × {len(tasks)} task(s)), "
        f"{num_gpus:g} GPU(s) each, up to {max_retries} retries"
    )
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cfg = pending.pop(ready[0])
        try:
            res = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001  (a job's own error, or a worker that died max_retries + 1 times)
            cause = getattr(exc, "cause", None)
            errors.append(f"{cfg.label}/{cfg.tasks[0]}: {cause if isinstance(cause, UserError) else _one_line(exc)}")
            continue
        results.append(res)
        store.checkpoint(res["label"], res["model"], res["stage"], res["info"])
        store.manifest["runs"].append(res["run"])
        store.save_manifest()
        log(
            f"crystallab: done {cfg.label}/{cfg.tasks[0]}: {res['run']['throughput']['prompts']} prompt(s) measured, "
            f"{res['run']['throughput']['skipped_prompts']} already done"
        )
    store.consolidate()
    store.save_manifest()
    if errors:
        raise UserError(
            f"{len(errors)} Ray job(s) failed (finished ones are kept; rerun to resume): " + "; ".join(errors)
        )
    return results


def run_job(cfg: MeasureConfig, index: int) -> dict[str, Any]:
    """One (checkpoint, task) job on a Ray worker: load, measure what is missing, return the
    checkpoint's load info and the run record for the driver to put in the manifest."""
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    store = ResultStore(cfg.out)
    tasks = load_tasks(cfg.tasks, cfg.tasks_dir)
    backend = load_model(cfg.model, cfg.load)
    prompt_sets = {t.id: render_prompts(t, cfg.settings.prompts, backend, cfg.settings.limit) for t in tasks}
    label = cfg.label or cfg.model
    run = run_record(cfg, tasks, prompt_sets, label, index)
    run["ray"] = {"node_id": _node_id(), "pid": os.getpid()}
    run.update(measure_into(store, cfg, backend, tasks, prompt_sets, label, index, log))
    return {"label": cfg.label, "model": cfg.model, "stage": cfg.stage, "info": backend.info, "run": run}


def _info_of(store: ResultStore, label: str) -> dict[str, Any]:
    return next((c.get("info") or {} for c in store.manifest["checkpoints"] if c["label"] == label), {})


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
