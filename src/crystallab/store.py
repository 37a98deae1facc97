"""The results folder: a tidy distribution table in Parquet, plus a JSON manifest.

    DIR/manifest.json           checkpoints (index, label, model, stage, load info), runs, tasks
    DIR/distributions.parquet   the table every other part reads (consolidated from shards)
    DIR/shards/*.parquet        what each measurement chunk wrote, renamed into place atomically
    DIR/samples/*.parquet       raw completions of sampled measurements
    DIR/failures/*.json         prompts that failed (API errors after retries); remeasured on resume

One row per (checkpoint, step, task, prompt, option, method, replica); ``option == "⊥"`` holds
the out-of-set mass and each prompt's probabilities sum to 1. See docs/results.md for the schema.
A measurement resumes by skipping the (checkpoint, step, task, prompt, method, replica) groups
that a shard already holds. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from crystallab.errors import UserError

OTHER = "⊥"
# 2: the split and replica columns; chat prompts carry their instruction's family (1: "instruction")
FORMAT_VERSION = 2
STAGES = ("base", "sft", "dpo", "rl", "other")

SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("checkpoint", pa.string()),
        ("checkpoint_index", pa.int32()),
        ("stage", pa.string()),
        ("step", pa.int64()),  # null outside training runs
        ("task", pa.string()),
        ("task_version", pa.int32()),
        ("prompt_id", pa.string()),
        ("prompt_kind", pa.string()),  # raw | chat
        ("prompt_family", pa.string()),  # the context's or the instruction's family
        ("prompt_text", pa.string()),  # exactly what the model saw (chat: the rendered template)
        ("option", pa.string()),  # an option label, or ⊥
        ("prob", pa.float64()),
        ("method", pa.string()),  # exact | sample | logprobs-topk
        ("n_samples", pa.int64()),  # 0 for exact rows
        ("seed", pa.int64()),
        # logprobs-topk rows: an upper bound on the option mass the top-k lists did not show (null
        # otherwise; shards written before this column existed read as null)
        ("uncovered", pa.float64()),
        ("split", pa.string()),  # train | heldout (lab prompts), null outside the lab
        ("replica", pa.int32()),  # the replica of a replicated lab run, null otherwise
    ]
)
SAMPLE_SCHEMA = pa.schema(
    [
        ("checkpoint", pa.string()), ("checkpoint_index", pa.int32()), ("step", pa.int64()), ("task", pa.string()),
        ("prompt_id", pa.string()), ("sample_index", pa.int32()), ("completion", pa.string()), ("option", pa.string()),
        ("replica", pa.int32()),
    ]
)
# what one measured prompt is keyed by: resume skips the groups a shard holds (replicas of a lab run
# may share a checkpoint label, so the replica is part of the key)
GROUP = ("checkpoint", "step", "task", "prompt_id", "method", "replica")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


class ResultStore:
    """A results folder. Creating one on a new path makes the folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
            (self.root / "samples").mkdir(exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write results to {self.root}: {exc.strerror or exc}") from exc
        self.manifest = self._read_manifest()

    # ---- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": FORMAT_VERSION, "checkpoints": [], "tasks": {}, "runs": []}
        try:
            m = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.manifest_path}: unreadable manifest ({exc})") from exc
        if m.get("format") == 1:
            what = "written before the split and replica columns and the chat instruction families"
            raise UserError(f"{self.root} holds results format 1 ({what}); this crystallab reads format {FORMAT_VERSION}: measure again into a new --out folder")
        if m.get("format") != FORMAT_VERSION:
            raise UserError(f"{self.root} was written by an incompatible crystallab (results format {m.get('format')!r}, this version reads {FORMAT_VERSION})")
        return m

    def save_manifest(self) -> None:
        """Write the manifest, merged with what other processes wrote since it was read (Ray
        sweeps: several processes share one folder), under a file lock."""
        with manifest_lock(self.root):
            if self.manifest_path.exists():
                self.manifest = merge_manifests(self._read_manifest(), self.manifest)
            atomic_write_bytes(self.manifest_path, (json.dumps(self.manifest, indent=2, sort_keys=False, default=str) + "\n").encode())

    def checkpoint(self, label: str, model: str, stage: str, info: dict[str, Any], parent: str | None = None) -> int:
        """The index of checkpoint ``label``: its existing index, or the next one. ``parent`` (the
        checkpoint it was trained from) is recorded for the analysis' parent graph."""
        if stage not in STAGES:
            raise UserError(f"unknown stage '{stage}'; use one of {', '.join(STAGES)}")
        for c in self.manifest["checkpoints"]:
            if c["label"] == label:
                if c["model"] != model:
                    raise UserError(f"checkpoint label '{label}' already names model '{c['model']}' in {self.root}; choose another --label")
                c["stage"], c["info"] = stage, info
                if parent is not None:
                    c["parent"] = parent
                return int(c["index"])
        index = len(self.manifest["checkpoints"])
        entry = {"index": index, "label": label, "model": model, "stage": stage, "info": info}
        if parent is not None:
            entry["parent"] = parent
        self.manifest["checkpoints"].append(entry)
        return index

    def register_task(self, task_id: str, version: int, prompts: dict[str, str]) -> None:
        known = self.manifest["tasks"].get(task_id)
        if known and known["version"] != version:
            raise UserError(f"task '{task_id}' version {version} differs from version {known['version']} already measured in {self.root}; use a new --out")
        entry = self.manifest["tasks"].setdefault(task_id, {"version": version, "prompts": {}})
        entry["prompts"].update(prompts)

    # ---- rows --------------------------------------------------------------------------------
    def _shards(self, sub: str = "shards") -> list[Path]:
        return sorted((self.root / sub).glob("*.parquet"))

    def done_groups(self) -> set[tuple]:
        """(checkpoint, step, task, prompt_id, method, replica) groups already written."""
        done: set[tuple] = set()
        for f in self._shards():
            t = pq.read_table(f, columns=list(GROUP))
            cols = [t.column(c).to_pylist() for c in GROUP]
            done.update(zip(*cols))
        return done

    def write_rows(self, rows: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None) -> None:
        """Write one chunk as its own shard; the rename makes it all-or-nothing. Completions are
        written first, so a table row never exists without its completions."""
        if not rows:
            return
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}.parquet"
        if samples:
            atomic_write_table(self.root / "samples" / name, pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA))
        atomic_write_table(self.root / "shards" / name, pa.Table.from_pylist(rows, schema=SCHEMA))

    # ---- failures ----------------------------------------------------------------------------
    def write_failures(self, records: list[dict[str, Any]]) -> None:
        """Record prompts that failed (one JSON file per chunk, written atomically). They have no
        rows, so the next run over the folder measures them again."""
        if not records:
            return
        (self.root / "failures").mkdir(exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}.json"
        atomic_write_bytes(self.root / "failures" / name, (json.dumps(records, indent=1, default=str) + "\n").encode())

    def failures(self) -> list[dict[str, Any]]:
        """Failed prompts that no shard has measured since (the latest record per group)."""
        done = self.done_groups()
        latest: dict[tuple, dict[str, Any]] = {}
        for f in sorted((self.root / "failures").glob("*.json")):
            for r in json.loads(f.read_text()):
                key = tuple(r.get(c) for c in GROUP)
                if key not in done:
                    latest[key] = r
        return list(latest.values())

    def consolidate(self) -> pa.Table:
        """Rewrite distributions.parquet from the shards (atomically) and return it."""
        table = read_shards(self._shards())
        atomic_write_table(self.root / "distributions.parquet", table)
        return table


def manifest_lock(root: Path, timeout: float = 120.0):
    """An inter-process lock around manifest read-merge-write (``filelock``)."""
    from filelock import FileLock

    return FileLock(str(Path(root) / ".manifest.lock"), timeout=timeout)


def merge_manifests(disk: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Merge this process's manifest into the one on disk: checkpoints by label (the disk's index
    wins), tasks by id (prompt texts united), runs by ``run_id`` (or by content); other keys from
    ``mine``.

    >>> d = {"format": 2, "checkpoints": [{"index": 0, "label": "a", "model": "m", "stage": "base", "info": {}}], "tasks": {"t": {"version": 1, "prompts": {"raw-00": "x"}}}, "runs": [{"run_id": "1"}]}
    >>> m = {"format": 2, "checkpoints": [{"index": 0, "label": "b", "model": "n", "stage": "sft", "info": {}}], "tasks": {"t": {"version": 1, "prompts": {"raw-01": "y"}}}, "runs": [{"run_id": "2"}]}
    >>> out = merge_manifests(d, m)
    >>> [(c["index"], c["label"]) for c in out["checkpoints"]], sorted(out["tasks"]["t"]["prompts"]), [r["run_id"] for r in out["runs"]]
    ([(0, 'a'), (1, 'b')], ['raw-00', 'raw-01'], ['1', '2'])
    """
    out = {**disk, **{k: v for k, v in mine.items() if k not in ("checkpoints", "tasks", "runs")}}
    cks = [dict(c) for c in disk.get("checkpoints", [])]
    by_label = {c["label"]: c for c in cks}
    for c in mine.get("checkpoints", []):
        if c["label"] in by_label:
            by_label[c["label"]].update({k: v for k, v in c.items() if k != "index"})
        else:
            used = {int(x["index"]) for x in cks}
            c = dict(c, index=int(c["index"]) if int(c["index"]) not in used else max(used, default=-1) + 1)
            cks.append(c)
            by_label[c["label"]] = c
    out["checkpoints"] = sorted(cks, key=lambda c: int(c["index"]))
    tasks = {k: {**v, "prompts": dict(v.get("prompts", {}))} for k, v in disk.get("tasks", {}).items()}
    for k, v in mine.get("tasks", {}).items():
        if k in tasks and tasks[k].get("version") == v.get("version"):
            tasks[k]["prompts"].update(v.get("prompts", {}))
        else:
            tasks[k] = v
    out["tasks"] = tasks
    runs = list(disk.get("runs", []))
    for r in mine.get("runs", []):
        for i, x in enumerate(runs):
            if (r.get("run_id") is not None and x.get("run_id") == r.get("run_id")) or x == r:
                runs[i] = r
                break
        else:
            runs.append(r)
    out["runs"] = runs
    return out


def read_shards(files: Iterable[Path]) -> pa.Table:
    tables = [pq.read_table(f, schema=SCHEMA) for f in files]
    if not tables:
        return SCHEMA.empty_table()
    t = pa.concat_tables(tables)
    # a group written twice (two runs racing before locks existed) keeps one copy
    import pyarrow.compute as pc

    key = pc.binary_join_element_wise(*[pc.cast(pc.fill_null(pc.cast(t[c], pa.string()), "∅"), pa.string()) for c in (*GROUP, "option")], "\x1f")
    _, first = _unique_first(key)
    t = t.take(first)
    return t.sort_by([("checkpoint_index", "ascending"), ("step", "ascending"), ("task", "ascending"), ("method", "ascending"), ("prompt_kind", "descending"), ("prompt_id", "ascending")])


def _unique_first(key: pa.Array) -> tuple[list, list[int]]:
    seen: dict[str, int] = {}
    for i, k in enumerate(key.to_pylist()):
        seen.setdefault(k, i)
    return list(seen), sorted(seen.values())


def read_table(path: str | Path) -> pa.Table:
    """Read a results folder's table (or a Parquet file). Raises UserError if it is missing.

    A folder is read from its shards, the source of truth, so a run killed before it rewrote
    distributions.parquet is still read whole."""
    p = Path(path)
    shards = sorted((p / "shards").glob("*.parquet")) if p.is_dir() else []
    if shards:
        return read_shards(shards)
    f = p / "distributions.parquet" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"no results table at {f}; run `crystallab measure --out {p}` first")
    t = pq.read_table(f)
    for col in SCHEMA:  # a table written before a nullable column existed reads it as null
        if col.name not in t.column_names:
            t = t.append_column(col, pa.nulls(len(t), col.type))
    return t


# ---- one writer per folder -------------------------------------------------------------------
_HELD: dict[str, list] = {}  # lock path -> [FileLock, depth]: re-entrant within one process


@contextmanager
def writer_lock(root: str | Path) -> Iterator[None]:
    """Hold DIR/.write.lock while writing a results folder: a second run on the same folder
    stops at once with one clear line instead of interleaving with the first.

    The lock is an OS file lock (``filelock``: flock on Linux), so the kernel releases it when
    the holder dies, even by SIGKILL: a killed run never leaves a stale lock behind. Re-entrant
    within a process (a ladder holds it while each rung's ``measure`` takes it again). Workers of
    a Ray sweep write shards only, under the driver's lock.
    """
    from filelock import FileLock, Timeout

    root = Path(root)
    path = str((root / ".write.lock").resolve())
    held = _HELD.get(path)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    lock = FileLock(path, timeout=0)
    owner = root / ".write.lock.owner"
    try:
        lock.acquire()
    except Timeout:
        try:
            o = json.loads(owner.read_text())
            who = f" (pid {o['pid']} on {o['host']}, since {o['since']})"
        except (OSError, ValueError, KeyError):
            who = ""
        raise UserError(f"{root} is being written by another crystallab run{who}; wait for it to finish, or use another --out") from None
    _HELD[path] = [lock, 1]
    try:
        atomic_write_bytes(owner, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        for stale in root.glob("**/.*.tmp"):  # temp files of a killed writer: never renamed, never read
            stale.unlink(missing_ok=True)
        yield
    finally:
        del _HELD[path]
        lock.release()
