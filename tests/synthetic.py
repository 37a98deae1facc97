"""Synthetic distribution tables with planted truths, in the results schema (format 2).

A base model has raw context families, each with its own planted distribution (``FAMILIES``);
prompts of a family are Dirichlet jitters of it (wording noise). Ladders then plant what SFT
and RL did, so every verdict has a known right answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from crystallab.store import OTHER, SCHEMA, atomic_write_table

OPTIONS = [str(i) for i in range(1, 11)]
FAMILIES = {  # the base model's promptable distributions, one per raw family
    "qa": np.array([0.02, 0.03, 0.25, 0.02, 0.08, 0.02, 0.5, 0.03, 0.03, 0.02]),
    "list": np.array([0.5, 0.2, 0.1, 0.05, 0.05, 0.02, 0.02, 0.02, 0.02, 0.02]),
    "code": np.array([0.02, 0.02, 0.02, 0.02, 0.1, 0.1, 0.02, 0.2, 0.2, 0.3]),
    "game": np.full(10, 0.1),
    "form": np.array([0.05, 0.4, 0.05, 0.3, 0.05, 0.05, 0.02, 0.03, 0.03, 0.02]),
}
SEED = "qa"  # the family the planted SFT lands in
BROAD = np.array([0.14, 0.05, 0.12, 0.04, 0.16, 0.06, 0.13, 0.1, 0.12, 0.08])  # h ≈ 0.95: a broad seed
CHAT_FAMILIES = ("plain", "game", "code", "person", "story")


def jitter(p: np.ndarray, rng: np.random.Generator, conc: float = 400.0) -> np.ndarray:
    return rng.dirichlet(p * conc + 1e-3)


def rows_for(
    label: str,
    index: int,
    task: str,
    raw: dict[str, list[np.ndarray]],
    chat: dict[str, list[np.ndarray]],
    valid: float = 0.8,
    step: int | None = None,
    stage: str = "other",
    replica: int | None = None,
    options: list[str] = OPTIONS,
    split: dict[str, str] | None = None,
) -> list[dict]:
    """Rows of one checkpoint: ``raw``/``chat`` map family -> the distributions of its prompts."""
    out = []
    for kind, fams in (("raw", raw), ("chat", chat)):
        i = 0
        for fam, dists in fams.items():
            for p in dists:
                pid = f"{kind}-{i:02d}"
                i += 1
                full = [*(np.asarray(p) * valid), 1 - valid]
                for opt, prob in zip([*options, OTHER], full):
                    out.append(
                        {
                            "model": f"synthetic/{label}",
                            "checkpoint": label,
                            "checkpoint_index": index,
                            "stage": stage,
                            "step": step,
                            "task": task,
                            "task_version": 1,
                            "prompt_id": pid,
                            "prompt_kind": kind,
                            "prompt_family": fam,
                            "prompt_text": f"{task} {kind} {fam} prompt {pid}",
                            "option": opt,
                            "prob": float(prob),
                            "method": "exact",
                            "n_samples": 0,
                            "seed": 0,
                            "split": (split or {}).get(fam),
                            "replica": replica,
                        }
                    )
    return out


def family_prompts(
    dists: dict[str, np.ndarray], rng: np.random.Generator, per: int = 4, conc: float = 400.0
) -> dict[str, list[np.ndarray]]:
    return {f: [jitter(p, rng, conc) for _ in range(per)] for f, p in dists.items()}


def ladder(kind: str = "planted", task: str = "number_1_10", seed: int = 0) -> list[dict]:
    """'planted': liquid → crystal in the qa basin → settled; 'broad': the same onto a broad
    seed family; 'escape': RL moves mass off the support; 'frozen': RL moves nothing;
    'no-collapse': SFT keeps each chat framing's own distribution; 'dead': all mass on ⊥."""
    rng = np.random.default_rng(seed)
    fams = dict(FAMILIES)
    if kind == "broad":
        fams[SEED] = BROAD
    base = rows_for(
        "base",
        0,
        task,
        family_prompts(fams, rng),
        family_prompts({f: list(fams.values())[i % len(fams)] for i, f in enumerate(CHAT_FAMILIES)}, rng, 3, 50),
    )
    raw_after = family_prompts(fams, rng)
    if kind == "no-collapse":
        sft_chat = family_prompts(
            {f: list(fams.values())[i % len(fams)] for i, f in enumerate(CHAT_FAMILIES)}, rng, 3, 400
        )
    else:
        sft_chat = family_prompts({f: fams[SEED] for f in CHAT_FAMILIES}, rng, 3, 2000)
    rows = base + rows_for("sft", 1, task, raw_after, sft_chat, valid=0.95)
    q_sft = fams[SEED]
    if kind == "escape":
        rl = np.array([0.3, 0.02, 0.05, 0.02, 0.02, 0.02, 0.2, 0.02, 0.3, 0.05])
    elif kind == "frozen":
        rl = q_sft
    else:
        rl = (
            np.array([0.01, 0.01, 0.2, 0.01, 0.02, 0.01, 0.72, 0.01, 0.005, 0.005])
            if kind != "broad"
            else q_sft**2 / (q_sft**2).sum()
        )
    rows += rows_for("rl", 2, task, raw_after, family_prompts({f: rl for f in CHAT_FAMILIES}, rng, 3, 2000), valid=0.99)
    if kind == "dead":
        for r in rows:
            r["prob"] = 1.0 if r["option"] == OTHER else 0.0
    return rows


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write(dir_: Path, rows: list[dict]) -> Path:
    import json

    from crystallab.store import FORMAT_VERSION

    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "shards").mkdir(exist_ok=True)
    t = table(rows)
    atomic_write_table(dir_ / "shards" / "synthetic.parquet", t)
    atomic_write_table(dir_ / "distributions.parquet", t)
    labels = sorted({(r["checkpoint_index"], r["checkpoint"], r["model"], r["stage"]) for r in rows})
    manifest = {
        "format": FORMAT_VERSION,
        "checkpoints": [{"index": i, "label": lab, "model": m, "stage": s, "info": {}} for i, lab, m, s in labels],
        "tasks": {},
        "runs": [],
    }
    (dir_ / "manifest.json").write_text(json.dumps(manifest))
    return dir_
