"""The distribution table as ensembles: one probability matrix per (checkpoint, step, task,
prompt kind), with each row's family, split and replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crystallab.errors import UserError
from crystallab.store import OTHER

_COLUMNS = (
    "checkpoint",
    "checkpoint_index",
    "model",
    "step",
    "task",
    "task_version",
    "prompt_id",
    "prompt_kind",
    "prompt_family",
    "option",
    "prob",
    "n_samples",
)
_OPTIONAL = ("split", "replica")


@dataclass
class Ensemble:
    """The rows of one checkpoint × step × task × kind (⊥ last in ``probs``)."""

    ids: list[str]
    families: list[str]
    splits: list[str | None]
    replicas: list[int | None]
    probs: np.ndarray  # (n, K + 1)
    n_samples: np.ndarray | None  # (n,) completions per prompt, for sampled rows

    def subset(self, keep: list[int]) -> "Ensemble":
        ns = None if self.n_samples is None else self.n_samples[keep]
        return Ensemble(
            [self.ids[i] for i in keep],
            [self.families[i] for i in keep],
            [self.splits[i] for i in keep],
            [self.replicas[i] for i in keep],
            self.probs[keep],
            ns,
        )

    def split(self, which: str | None) -> "Ensemble":
        return self if which is None else self.subset([i for i, s in enumerate(self.splits) if s == which])

    @property
    def valid_mass(self) -> np.ndarray:
        return np.clip(1.0 - self.probs[:, -1], 0.0, 1.0)

    def replica(self, label: int | None) -> "Ensemble":
        return self.subset([i for i, r in enumerate(self.replicas) if r == label])

    @property
    def replica_labels(self) -> list[int | None]:
        return list(dict.fromkeys(self.replicas))


@dataclass
class Table:
    ensembles: dict[tuple[int, int | None, str, str], Ensemble]  # (checkpoint index, step, task, kind)
    checkpoints: list[dict[str, Any]]  # index, label, model, stage (in checkpoint order)
    options: dict[str, list[str]]

    def steps(self, index: int, task: str) -> list[int | None]:
        found = {k[1] for k in self.ensembles if k[0] == index and k[2] == task}
        return sorted(found, key=lambda s: -1 if s is None else s)

    def get(self, index: int, step: int | None, task: str, kind: str) -> Ensemble | None:
        return self.ensembles.get((index, step, task, kind))


def read(table: Any) -> Table:
    """Group a pyarrow table (one method's rows) into ensembles."""
    names = set(table.column_names)
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise UserError(f"the results table lacks column(s) {', '.join(missing)}: not a crystallab results table")
    cols = table.select([*_COLUMNS, *[c for c in _OPTIONAL if c in names]]).to_pydict()
    n_rows = len(cols["prob"])
    split = cols.get("split", [None] * n_rows)
    replica = cols.get("replica", [None] * n_rows)
    options: dict[str, list[str]] = {}
    versions: dict[str, dict[int, set]] = {}
    ckpts: dict[int, dict[str, Any]] = {}
    groups: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    for i in range(n_rows):
        task, opt, ci = cols["task"][i], cols["option"][i], int(cols["checkpoint_index"][i])
        ckpts.setdefault(ci, {"index": ci, "label": cols["checkpoint"][i], "model": cols["model"][i]})
        versions.setdefault(task, {}).setdefault(cols["task_version"][i], set()).add(cols["checkpoint"][i])
        if opt != OTHER and opt not in options.setdefault(task, []):
            options[task].append(opt)
        key = (ci, cols["step"][i], task, cols["prompt_kind"][i])
        rep = None if replica[i] is None else int(replica[i])
        row = groups.setdefault(key, {}).setdefault(
            (rep, cols["prompt_id"][i]),
            {"family": cols["prompt_family"][i], "split": split[i], "n": int(cols["n_samples"][i] or 0), "p": {}},
        )
        row["p"][opt] = float(cols["prob"][i])
    for task, v in versions.items():
        if len(v) > 1:
            detail = "; ".join(f"version {ver}: {', '.join(sorted(c))}" for ver, c in sorted(v.items()))
            raise UserError(
                f"task '{task}' was measured with different versions across checkpoints ({detail}); "
                "re-measure them with one version"
            )
    ensembles: dict[tuple, Ensemble] = {}
    for key, rows in groups.items():
        opts = [*options[key[2]], OTHER]
        order = sorted(rows, key=lambda r: (r[0] is not None, r[0] or 0, r[1]))
        probs = np.array([[rows[r]["p"].get(o, 0.0) for o in opts] for r in order])
        ns = np.array([rows[r]["n"] for r in order])
        ensembles[key] = Ensemble(
            [r[1] for r in order],
            [rows[r]["family"] for r in order],
            [rows[r]["split"] for r in order],
            [r[0] for r in order],
            probs,
            ns if ns.any() else None,
        )
    return Table(ensembles, [ckpts[i] for i in sorted(ckpts)], options)
