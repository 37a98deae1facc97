"""``Results``: a distribution table, its completions and its manifest, in memory.

``measure`` returns one; ``analyze`` and ``report`` take one (or a folder). ``save`` writes a
results folder through the same atomic, resumable store as ``crystallab measure --out``, and
``Results.load`` reads one back.

>>> r = Results()
>>> r.checkpoint("base", "toy", "base", {})
0
>>> r.register_task("coin_flip", 2, {"raw-0": "Coin: "})
>>> r.write_rows([row(checkpoint="base", task="coin_flip", prompt_id="raw-0", option=o, prob=p)
...               for o, p in [("heads", 0.6), ("tails", 0.3), ("⊥", 0.1)]])
>>> r
Results(1 checkpoint, 1 task, 1 prompt, 3 rows)
>>> round(float(r.to_pandas().prob.sum()), 6)
1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from crystallab.store import (
    SAMPLE_SCHEMA,
    SCHEMA,
    ResultStore,
    add_checkpoint,
    add_task,
    group_keys,
    groups_of,
    new_manifest,
    read_samples,
    read_table,
    tidy,
    writer_lock,
)


class Results:
    """Rows (one per checkpoint x step x task x prompt x option x method x replica), the sampled
    completions behind them, failed prompts, and the manifest (checkpoints, tasks, runs).

    It has the same writing methods as a results folder (``checkpoint``, ``register_task``,
    ``write_rows``, ``write_failures``, ``done_groups``), so ``measure`` fills either one.
    """

    def __init__(
        self,
        rows: pa.Table | None = None,
        samples: pa.Table | None = None,
        manifest: dict[str, Any] | None = None,
        failures: list[dict[str, Any]] | None = None,
    ):
        self.manifest: dict[str, Any] = manifest if manifest is not None else new_manifest()
        self._rows: list[pa.Table] = [rows] if rows is not None and len(rows) else []
        self._samples: list[pa.Table] = [samples] if samples is not None and len(samples) else []
        self.failures: list[dict[str, Any]] = list(failures or [])
        self._table: pa.Table | None = None
        self.root = None  # not a folder: the writing methods' messages say "these results"
        self.quarantined: list[Path] = []  # a folder moves unreadable shards aside; memory has none

    # ---- what a notebook reads ---------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        """The distribution table (the schema of docs/results.md), a group written twice kept once."""
        if self._table is None:
            self._table = tidy(self._rows)
            self._rows = [self._table] if len(self._table) else []
        return self._table

    def to_pandas(self) -> Any:
        """The distribution table as a pandas DataFrame (pandas must be installed)."""
        return self.to_arrow().to_pandas()

    def samples(self) -> pa.Table:
        """The completions of sampled measurements (checkpoint, task, prompt, index, text, option)."""
        return pa.concat_tables(self._samples) if self._samples else SAMPLE_SCHEMA.empty_table()

    @property
    def checkpoints(self) -> list[str]:
        return [c["label"] for c in sorted(self.manifest["checkpoints"], key=lambda c: int(c["index"]))]

    @property
    def tasks(self) -> list[str]:
        return list(self.manifest["tasks"])

    def __len__(self) -> int:
        return len(self.to_arrow())

    def __repr__(self) -> str:
        t = self.to_arrow()
        n_prompts = len(
            {(c, k, p) for c, k, p in zip(*(t.column(x).to_pylist() for x in ("checkpoint", "task", "prompt_id")))}
        )

        def n(k: int, what: str) -> str:
            return f"{k} {what}{'' if k == 1 else 's'}"

        return (
            f"Results({n(len(self.checkpoints), 'checkpoint')}, {n(len(self.tasks), 'task')}, "
            f"{n(n_prompts, 'prompt')}, {n(len(t), 'row')})"
        )

    # ---- the writing interface measure uses ---------------------------------------------------
    def checkpoint(self, label: str, model: str, stage: str, info: dict[str, Any], parent: str | None = None) -> int:
        return add_checkpoint(self.manifest, label, model, stage, info, parent)

    def register_task(self, task_id: str, version: int, prompts: dict[str, str]) -> None:
        add_task(self.manifest, task_id, version, prompts)

    def done_groups(self) -> set[tuple]:
        return groups_of(self.to_arrow()) if self._rows else set()

    def write_rows(self, rows: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None) -> None:
        if rows:
            self._rows.append(pa.Table.from_pylist(rows, schema=SCHEMA))
            self._table = None
        if samples:
            self._samples.append(pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA))

    def write_failures(self, records: list[dict[str, Any]]) -> None:
        self.failures += records

    def save_manifest(self) -> None:
        """Nothing to do in memory (a folder writes its manifest here)."""

    # ---- folders -----------------------------------------------------------------------------
    def save(self, root: str | Path) -> Path:
        """Write these results into a results folder, atomically, merged with what it holds:
        groups already there are kept as they are, so saving twice (or into a folder a killed
        ``measure`` left) is safe. Returns the folder."""
        store = ResultStore(root)
        with writer_lock(store.root):
            for c in sorted(self.manifest["checkpoints"], key=lambda c: int(c["index"])):
                store.checkpoint(c["label"], c["model"], c.get("stage", "other"), c.get("info") or {}, c.get("parent"))
            for tid, t in self.manifest["tasks"].items():
                store.register_task(tid, t["version"], t.get("prompts", {}))
            known = {r.get("run_id") for r in store.manifest["runs"]}
            store.manifest["runs"] += [r for r in self.manifest["runs"] if r.get("run_id") not in known]
            done = store.done_groups()
            table = self.to_arrow()
            if len(table):
                keep = [g not in done for g in group_keys(table)]
                new = table.filter(pa.array(keep))
                if len(new):
                    store.write_rows(new.to_pylist(), self._samples_of(new))
            store.write_failures(self.failures)
            store.consolidate()
            store.save_manifest()
        return store.root

    def _samples_of(self, rows: pa.Table) -> list[dict[str, Any]]:
        s = self.samples()
        if not len(s):
            return []
        want = {
            (c, k, p) for c, k, p in zip(*(rows.column(x).to_pylist() for x in ("checkpoint", "task", "prompt_id")))
        }
        return [r for r in s.to_pylist() if (r["checkpoint"], r["task"], r["prompt_id"]) in want]

    @classmethod
    def load(cls, root: str | Path) -> Results:
        """Read a results folder (as ``crystallab measure --out`` writes it)."""
        root = Path(root)
        table = read_table(root)
        store = ResultStore.reader(root)
        samples = read_samples(root)
        return cls(rows=table, samples=samples, manifest=store.manifest, failures=store.failures())


def row(**values: Any) -> dict[str, Any]:
    """A table row with every column of the schema, null where not given (tests and examples)."""
    base: dict[str, Any] = {f.name: None for f in SCHEMA}
    base.update(
        checkpoint_index=0,
        model="",
        stage="other",
        method="exact",
        prompt_kind="raw",
        n_samples=0,
        seed=0,
        task_version=2,
    )
    base.update(values)
    return base
