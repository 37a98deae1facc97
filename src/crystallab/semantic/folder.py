"""Open-task completions and their clusters in a results folder.

    DIR/open/completions/*.parquet   every sampled completion, with its prompt (atomic shards)
    DIR/open/clusters-TASK.parquet   the clusters of TASK: id, size, exemplars, the embedder
    DIR/shards/semantic-TASK.parquet each prompt's distribution over the clusters, in the
                                     ordinary results schema (option = cluster id, ⊥ = degenerate)

Clustering always pools the completions of **every** checkpoint of the folder, so a ladder's
checkpoints share one option set; rerunning it (a new checkpoint was measured) replaces the
task's cluster rows and side table as a whole.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crystallab.errors import UserError
from crystallab.semantic.cluster import DEFAULT_THRESHOLD, Clustering, Embed, cluster_texts
from crystallab.store import DECODING, OTHER, SCHEMA, ResultStore, atomic_write_table

COMPLETIONS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("checkpoint", pa.string()),
        ("checkpoint_index", pa.int32()),
        ("stage", pa.string()),
        ("step", pa.int64()),
        ("task", pa.string()),
        ("task_version", pa.int32()),
        ("prompt_id", pa.string()),
        ("prompt_kind", pa.string()),
        ("prompt_family", pa.string()),
        ("prompt_text", pa.string()),
        ("split", pa.string()),
        ("replica", pa.int32()),
        ("seed", pa.int64()),
        ("temperature", pa.float64()),
        ("top_k", pa.int64()),
        ("top_p", pa.float64()),
        ("min_p", pa.float64()),
        ("sample_index", pa.int32()),
        ("completion", pa.string()),  # the answer: the raw text cut at the task's stop rule
        ("raw", pa.string()),  # the decoded continuation as generated
    ]
)
# what one measured prompt is keyed by (as store.GROUP, without the method: open tasks are sampled)
OPEN_GROUP = ("checkpoint", "step", "task", "prompt_id", "replica", *DECODING)
_PER_PROMPT = [f.name for f in SCHEMA if f.name not in ("option", "prob", "method", "n_samples", "uncovered")]


def completions_dir(root: str | Path) -> Path:
    return Path(root) / "open" / "completions"


def write_completions(root: str | Path, rows: list[dict[str, Any]]) -> None:
    """One new shard of completion rows (a unique name, renamed into place)."""
    if rows:
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}.parquet"
        completions_dir(root).mkdir(parents=True, exist_ok=True)
        atomic_write_table(completions_dir(root) / name, pa.Table.from_pylist(rows, schema=COMPLETIONS_SCHEMA))


def read_completions(root: str | Path) -> pa.Table:
    """Every completion shard of the folder (an empty table when there is none)."""
    files = sorted(completions_dir(root).glob("*.parquet"))
    if not files:
        return COMPLETIONS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=COMPLETIONS_SCHEMA) for f in files])


def done_open(root: str | Path) -> set[tuple]:
    """The prompts (OPEN_GROUP keys) whose completions are already in the folder: a resumed
    measurement skips them."""
    t = read_completions(root)
    if t.num_rows == 0:
        return set()
    cols = [t.column(c).to_pylist() for c in OPEN_GROUP]
    return set(zip(*cols))


def open_tasks(root: str | Path) -> list[str]:
    t = read_completions(root)
    return sorted(set(t.column("task").to_pylist())) if t.num_rows else []


def cluster_folder(
    root: str | Path, embedder: Any = None, threshold: float = DEFAULT_THRESHOLD, tasks: list[str] | None = None
) -> dict[str, Clustering]:
    """Cluster each open task's pooled completions (every checkpoint at once) and write the
    distributions over clusters into the folder's results table (see the module docstring).
    ``embedder``: an :class:`embed.Embedder` (default: the default embedder) or any callable
    mapping texts to vectors. Returns each task's clustering."""
    from crystallab.semantic.embed import load_embedder

    store = ResultStore(root)
    table = read_completions(root)
    if table.num_rows == 0:
        raise UserError(f"{root}: no open-task completions to cluster (measure an open task first)")
    embed: Embed = embedder if embedder is not None else load_embedder()
    about = embed.to_json() if hasattr(embed, "to_json") else {"name": getattr(embed, "__name__", "callable")}
    rows = table.to_pylist()
    present = sorted({r["task"] for r in rows})
    missing = [t for t in tasks or [] if t not in present]
    if missing:
        raise UserError(f"{root}: no completions of task '{missing[0]}'; the folder has {', '.join(present)}")
    out: dict[str, Clustering] = {}
    for task in tasks or present:
        mine = [r for r in rows if r["task"] == task]
        c = cluster_texts([r["completion"] for r in mine], embed, threshold)
        out[task] = c
        _write_distributions(store, task, mine, c)
        _write_clusters(Path(root), task, c, about)
        store.manifest.setdefault("open", {})[task] = {
            "embedder": about,
            "threshold": threshold,
            "clusters": len(c.options),
            "completions": len(mine),
            # the share of completions whose cluster holds another: near 0, answers do not repeat at this N,
            # and an ensemble's families cannot be told apart (docs/open.md)
            "repeat": repeat_share(c),
            "checkpoints": sorted({r["checkpoint"] for r in mine}),
        }
    store.save_manifest()
    store.consolidate()
    return out


def _write_distributions(store: ResultStore, task: str, rows: list[dict[str, Any]], c: Clustering) -> None:
    groups: dict[tuple, list[int]] = {}
    first: dict[tuple, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        key = tuple(r[k] for k in OPEN_GROUP)
        groups.setdefault(key, []).append(i)
        first.setdefault(key, r)
    labels = [*c.options, OTHER]
    out = []
    for key, idx in groups.items():
        counts = Counter(len(c.options) if c.labels[i] is None else c.labels[i] for i in idx)
        base = {k: first[key][k] for k in _PER_PROMPT}
        n = len(idx)
        for k, opt in enumerate(labels):
            out.append({**base, "option": opt, "prob": counts.get(k, 0) / n, "method": "sample", "n_samples": n})
    for old in (store.root / "shards").glob(f"semantic-{task}-*.parquet"):
        old.unlink()  # the whole task is reclustered: its old options mean nothing now
    name = f"semantic-{task}-{uuid.uuid4().hex[:10]}.parquet"
    atomic_write_table(store.root / "shards" / name, pa.Table.from_pylist(out, schema=SCHEMA))


def _write_clusters(root: Path, task: str, c: Clustering, about: dict[str, Any]) -> None:
    rows = [
        {
            "task": task,
            "option": opt,
            "size": size,
            "exemplars": ex,
            "embedder": json.dumps(about, sort_keys=True),
            "threshold": c.threshold,
        }
        for opt, size, ex in zip(c.options, c.sizes, c.exemplars)
    ]
    schema = pa.schema(
        [
            ("task", pa.string()),
            ("option", pa.string()),
            ("size", pa.int64()),
            ("exemplars", pa.list_(pa.string())),
            ("embedder", pa.string()),
            ("threshold", pa.float64()),
        ]
    )
    (root / "open").mkdir(parents=True, exist_ok=True)
    atomic_write_table(root / "open" / f"clusters-{task}.parquet", pa.Table.from_pylist(rows, schema=schema))


def read_clusters(root: str | Path, task: str) -> list[dict[str, Any]]:
    """The side table of one task's clusters (empty when the task was never clustered)."""
    p = Path(root) / "open" / f"clusters-{task}.parquet"
    return pq.read_table(p).to_pylist() if p.is_file() else []


def repeat_share(c: Clustering) -> float:
    """The share of the non-⊥ completions whose cluster holds at least one other completion.

    >>> from crystallab.semantic.cluster import Clustering
    >>> repeat_share(Clustering([0, 0, 1, None], ["c0", "c1"], [2, 1], [["a"], ["b"]], 0.2, 2, 1))
    0.6667
    """
    n = sum(c.sizes)
    return round(sum(x for x in c.sizes if x >= 2) / n, 4) if n else 0.0
