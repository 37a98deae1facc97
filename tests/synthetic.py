"""Synthetic distribution tables with planted answers, in the results schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from crystallab.store import OTHER, SCHEMA, atomic_write_table

OPTIONS = [str(i) for i in range(1, 11)]
SEED = np.array([0.02, 0.03, 0.25, 0.02, 0.08, 0.02, 0.5, 0.03, 0.03, 0.02])  # the planted seed
CLUSTERS = [  # the base model's other promptable distributions
    np.array([0.5, 0.2, 0.1, 0.05, 0.05, 0.02, 0.02, 0.02, 0.02, 0.02]),
    np.array([0.02, 0.02, 0.02, 0.02, 0.1, 0.1, 0.02, 0.2, 0.2, 0.3]),
    np.full(10, 0.1),
    np.array([0.05, 0.4, 0.05, 0.3, 0.05, 0.05, 0.02, 0.03, 0.03, 0.02]),
]
SEED_PROMPT = "raw-05"


def jitter(p: np.ndarray, rng: np.random.Generator, conc: float = 400.0) -> np.ndarray:
    return rng.dirichlet(p * conc + 1e-3)


def rows_for(label: str, index: int, stage: str, task: str, raw: list[np.ndarray], chat: list[np.ndarray], valid: float = 0.8, step=None) -> list[dict]:
    out = []
    for kind, dists in (("raw", raw), ("chat", chat)):
        for i, p in enumerate(dists):
            pid = f"{kind}-{i:02d}"
            full = [*(p * valid), 1 - valid]
            for opt, prob in zip([*OPTIONS, OTHER], full):
                out.append({"model": f"synthetic/{label}", "checkpoint": label, "checkpoint_index": index, "stage": stage, "step": step, "task": task,
                            "task_version": 1, "prompt_id": pid, "prompt_kind": kind, "prompt_family": "qa" if kind == "raw" else "instruction",
                            "prompt_text": f"{task} {kind} prompt {i}", "option": opt, "prob": float(prob), "method": "exact", "n_samples": 0, "seed": 0})
    return out


def base_rows(task: str, rng, n_raw: int = 20, n_chat: int = 10) -> list[dict]:
    raw = [SEED if i == 5 else jitter(CLUSTERS[i % 4], rng) for i in range(n_raw)]
    chat = [jitter(CLUSTERS[i % 4], rng, 50) for i in range(n_chat)]
    return rows_for("base", 0, "base", task, raw, chat)


def ladder(kind: str = "planted", task: str = "number_1_10", seed: int = 0) -> list[dict]:
    """'planted': liquid → crystal on SEED → settled; 'escape': RL moves mass to new options;
    'no-collapse': SFT keeps the base's chat diversity; 'dead': all mass on ⊥."""
    rng = np.random.default_rng(seed)
    rows = base_rows(task, rng)
    raw_after = [jitter(CLUSTERS[i % 4], rng) for i in range(20)]
    if kind == "no-collapse":
        sft_chat = [jitter(CLUSTERS[i % 4], rng, 50) for i in range(10)]
    else:
        sft_chat = [jitter(SEED, rng, 2000) for _ in range(10)]
    rows += rows_for("sft", 1, "sft", task, raw_after, sft_chat, valid=0.95)
    if kind == "escape":
        rl = np.array([0.3, 0.02, 0.05, 0.02, 0.02, 0.02, 0.2, 0.02, 0.3, 0.05])
    else:
        rl = np.array([0.01, 0.01, 0.2, 0.01, 0.02, 0.01, 0.72, 0.01, 0.005, 0.005])
    rows += rows_for("rl", 2, "rl", task, raw_after, [jitter(rl, rng, 2000) for _ in range(10)], valid=0.99)
    if kind == "dead":
        for r in rows:
            r["prob"] = 1.0 if r["option"] == OTHER else 0.0
    return rows


def write(dir_: Path, rows: list[dict]) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "shards").mkdir(exist_ok=True)
    t = pa.Table.from_pylist(rows, schema=SCHEMA)
    atomic_write_table(dir_ / "shards" / "synthetic.parquet", t)
    atomic_write_table(dir_ / "distributions.parquet", t)
    return dir_
