"""The results folder: a tidy distribution table in Parquet, plus a JSON manifest.

    DIR/manifest.json           checkpoints (index, label, model, stage, load info), runs, tasks
    DIR/distributions.parquet   the table every other part reads (consolidated from shards)
    DIR/shards/*.parquet        what each measurement chunk wrote, renamed into place atomically
    DIR/samples/*.parquet       raw completions of sampled measurements
    DIR/failures/*.json         prompts that failed (API errors after retries); remeasured on resume

One row per (checkpoint, step, task, prompt, option, method, replica, decoding setting);
``option == "⊥"`` holds the out-of-set mass and each prompt's probabilities sum to 1. See
docs/results.md for the schema. A measurement resumes by skipping the groups (all of that key
but the option) that a shard already holds. Nothing is pickled.
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
        # the decoding setting the distribution is under (models/decoding.py); shards written
        # before these columns existed read as the defaults, T = 1 and no truncation
        ("temperature", pa.float64()),
        ("top_k", pa.int64()),  # 0: off
        ("top_p", pa.float64()),  # 1: off
        ("min_p", pa.float64()),  # 0: off
    ]
)
SAMPLE_SCHEMA = pa.schema(
    [
        ("checkpoint", pa.string()),
        ("checkpoint_index", pa.int32()),
        ("step", pa.int64()),
        ("task", pa.string()),
        ("prompt_id", pa.string()),
        ("sample_index", pa.int32()),
        ("completion", pa.string()),
        ("option", pa.string()),
        ("replica", pa.int32()),
        ("temperature", pa.float64()),
        ("top_k", pa.int64()),
        ("top_p", pa.float64()),
        ("min_p", pa.float64()),
    ]
)
# what one measured prompt is keyed by: resume skips the groups a shard holds (replicas of a lab run
# may share a checkpoint label, so the replica is part of the key)
# and one prompt measured under several decoding settings is one group per setting
DECODING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}  # the columns and their defaults
GROUP = ("checkpoint", "step", "task", "prompt_id", "method", "replica", *DECODING)
# nullable columns a shard may lack (they read as null, the decoding columns as their defaults);
# every other column of its schema must be there
_MAY_LACK = {"shards": ("step", "uncovered", "split", "replica", *DECODING), "samples": ("step", "replica", *DECODING)}
# columns the analysis reads in every row: a shard with nulls in them is not a crystallab shard
_NOT_NULL = ("checkpoint", "checkpoint_index", "task", "prompt_id", "prompt_kind", "option", "prob", "method")
# what reading a broken Parquet file raises (pyarrow's errors, OSError for I/O and thrift, ValueError)
_PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError)
# Shards read whole and checked in this process, by (path, size, mtime): a shard is never
# rewritten (unique names), so a tracker measuring every few steps reads each one once instead
# of every shard at every step (a damaged or replaced file changes its size or mtime).
_VERIFIED: dict[tuple[str, str, int, int], pa.Table] = {}
_VERIFIED_MAX = 20000
# and each shard's measured groups, so done_groups before every tracked step costs a set union
_GROUPS: dict[tuple[str, str, int, int], frozenset[tuple]] = {}
_CHECKED: set[tuple[str, str, int, int]] = set()  # files whose metadata quarantine_unreadable found sound


def _file_key(f: Path, sub: str) -> tuple[str, str, int, int] | None:
    try:
        st = f.stat()
    except OSError:
        return None
    return (str(f.resolve()), sub, st.st_size, st.st_mtime_ns)


def _verified(f: Path, sub: str) -> pa.Table | None:
    key = _file_key(f, sub)
    return _VERIFIED.get(key) if key is not None else None


def _known_good(f: Path, sub: str) -> bool:
    """Read whole, or its groups read, at its present size and mtime: no need to check it again."""
    key = _file_key(f, sub)
    return key is not None and (key in _VERIFIED or key in _GROUPS or key in _CHECKED)


def _remember(f: Path, sub: str, t: pa.Table) -> None:
    key = _file_key(f, sub)
    if key is not None:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = t


def with_decoding_defaults(t: pa.Table) -> pa.Table:
    """``t`` with missing decoding values read as the defaults (T = 1, no truncation): rows
    written before the decoding columns existed were measured that way."""
    import pyarrow.compute as pc

    for name, default in DECODING.items():
        if name in t.column_names and t.column(name).null_count:
            i = t.column_names.index(name)
            t = t.set_column(i, t.field(i), pc.fill_null(t.column(name), pa.scalar(default, t.field(i).type)))
    return t


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
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)  # a flipped byte is an error
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
        # shards the last done_groups() moved to DIR/quarantine/ (unreadable: re-measured)
        self.quarantined: list[Path] = []

    @classmethod
    def reader(cls, root: str | Path) -> ResultStore:
        """An existing folder opened to read: nothing is created or written."""
        self = cls.__new__(cls)
        self.root = Path(root)
        self.quarantined = []
        self.manifest = self._read_manifest()
        return self

    # ---- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": FORMAT_VERSION, "checkpoints": [], "tasks": {}, "runs": []}
        from crystallab.yamlconf import kind_of, load_json

        m = load_json(self.manifest_path, "manifest")
        if not isinstance(m, dict):
            raise UserError(f"{self.manifest_path}: expected a JSON object, got {kind_of(m)}; {_MANIFEST_FIX}")
        fmt = m.get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            got = kind_of(fmt)
            raise UserError(
                f"{self.manifest_path}: field 'format': expected a whole number, got {got}; {_MANIFEST_FIX}"
            )
        if m.get("format") == 1:
            what = "written before the split and replica columns and the chat instruction families"
            raise UserError(
                f"{self.root} holds results format 1 ({what}); this crystallab reads format {FORMAT_VERSION}: "
                f"measure again into a new --out folder"
            )
        if m.get("format") != FORMAT_VERSION:
            raise UserError(
                f"{self.root} was written by an incompatible crystallab "
                f"(results format {m.get('format')!r}, this version reads {FORMAT_VERSION})"
            )
        check_manifest(m, str(self.manifest_path))
        return m

    def save_manifest(self) -> None:
        """Write the manifest, merged with what other processes wrote since it was read (Ray
        sweeps: several processes share one folder), under a file lock."""
        with manifest_lock(self.root):
            if self.manifest_path.exists():
                self.manifest = merge_manifests(self._read_manifest(), self.manifest)
            atomic_write_bytes(
                self.manifest_path, (json.dumps(self.manifest, indent=2, sort_keys=False, default=str) + "\n").encode()
            )

    def checkpoint(self, label: str, model: str, stage: str, info: dict[str, Any], parent: str | None = None) -> int:
        """The index of checkpoint ``label``: its existing index, or the next one."""
        return add_checkpoint(self.manifest, label, model, stage, info, parent, where=str(self.root))

    def register_task(self, task_id: str, version: int, prompts: dict[str, str]) -> None:
        add_task(self.manifest, task_id, version, prompts, where=str(self.root))

    # ---- rows --------------------------------------------------------------------------------
    def _shards(self, sub: str = "shards") -> list[Path]:
        return sorted((self.root / sub).glob("*.parquet"))

    def done_groups(self) -> set[tuple]:
        """(checkpoint, step, task, prompt_id, method, replica, temperature, top_k, top_p, min_p)
        groups already written.

        Unreadable shards are moved to DIR/quarantine/ first (:meth:`quarantine_unreadable`;
        the moved paths are left in ``self.quarantined``), so their prompts are measured again."""
        self.quarantined = self.quarantine_unreadable()
        done: set[tuple] = set()
        for f in self._shards():
            key = _file_key(f, "shards")
            groups = _GROUPS.get(key) if key is not None else None
            if groups is None:
                t = _verified(f, "shards")
                if t is None:
                    try:
                        t = pq.read_table(f, columns=list(GROUP), schema=SCHEMA, page_checksum_verification=True)
                        t.validate(full=True)
                    except _PARQUET_ERRORS:  # a whole footer over broken data pages
                        self.quarantined += self._quarantine(f)
                        continue
                t = with_decoding_defaults(t)
                groups = frozenset(zip(*(t.column(c).to_pylist() for c in GROUP)))
                if key is not None:
                    if len(_GROUPS) >= _VERIFIED_MAX:
                        _GROUPS.clear()
                        _CHECKED.clear()
                    _GROUPS[key] = groups
            done |= groups
        return done

    def quarantine_unreadable(self) -> list[Path]:
        """Move every shard of DIR/shards and DIR/samples whose magic bytes, footer or schema
        cannot be read (a truncated or foreign file) to DIR/quarantine/shards|samples/, keeping
        its name, and return where they went. A shard and its completions (the file of the same
        name in the other folder) move together, so a table row never lacks its completions.
        Only the metadata is read: cheap enough to run before every measurement."""
        moved: list[Path] = []
        for sub in ("shards", "samples"):
            for f in self._shards(sub):
                if not f.exists() or _known_good(f, sub):
                    continue
                if shard_problem(f, sub) is not None:
                    moved += self._quarantine(f)
                elif (key := _file_key(f, sub)) is not None:
                    _CHECKED.add(key)
        return moved

    def _quarantine(self, f: Path) -> list[Path]:
        """Move shard ``f`` and its twin in the other folder to DIR/quarantine/ (atomic renames)."""
        moved = []
        for sub in ("shards", "samples"):
            src = self.root / sub / f.name
            dest_dir = self.root / "quarantine" / sub
            dest = dest_dir / f.name
            n = 1
            while dest.exists():  # never overwrite an earlier quarantined file
                dest, n = dest_dir / f"{f.name}.{n}", n + 1
            try:
                dest_dir.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            except FileNotFoundError:  # no twin, or another process moved it first
                continue
            except OSError as exc:
                why = exc.strerror or exc
                raise UserError(
                    f"{src}: unreadable shard, and it cannot be moved to {dest_dir} ({why}); delete it"
                ) from None
            moved.append(dest)
        return moved

    def write_rows(self, rows: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None) -> None:
        """Write one chunk as its own shard; the rename makes it all-or-nothing. Completions are
        written first, so a table row never exists without its completions."""
        if not rows:
            return
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}.parquet"
        if samples:
            table = pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA)
            atomic_write_table(self.root / "samples" / name, table)
            _remember(self.root / "samples" / name, "samples", table)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        atomic_write_table(self.root / "shards" / name, table)
        # what this process just wrote needs no second read (a later change to the file changes its key)
        _remember(self.root / "shards" / name, "shards", table)

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
        from crystallab.yamlconf import load_json

        done = self.done_groups()
        latest: dict[tuple, dict[str, Any]] = {}
        for f in sorted((self.root / "failures").glob("*.json")):
            records = load_json(f, "failure record")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise UserError(
                    f"{f}: expected a JSON list of failure records; delete it (its prompts are measured again anyway)"
                )
            for r in records:
                key = tuple(_hashable(r.get(c) if r.get(c) is not None else DECODING.get(c)) for c in GROUP)
                if key not in done:
                    latest[key] = r
        return list(latest.values())

    def consolidate(self) -> pa.Table:
        """Rewrite distributions.parquet from the shards (atomically) and return it."""
        table = read_shards(self._shards())
        atomic_write_table(self.root / "distributions.parquet", table)
        return table


_MANIFEST_FIX = "the manifest is damaged: restore it from a copy, or measure into a new --out folder"


def check_manifest(m: dict[str, Any], src: str) -> None:
    """Refuse a manifest of the wrong shape with one line naming the field (missing lists and
    mappings are filled in empty).

    >>> check_manifest({"format": 2, "checkpoints": [{"index": 0, "label": 3}]}, "m.json")
    Traceback (most recent call last):
    crystallab.errors.UserError: m.json: field 'checkpoints[0].label': expected a non-empty string, got a number; \
the manifest is damaged: restore it from a copy, or measure into a new --out folder
    """
    from crystallab.yamlconf import kind_of

    def bad(where: str, expected: str, value: Any) -> UserError:
        return UserError(f"{src}: field '{where}': expected {expected}, got {kind_of(value)}; {_MANIFEST_FIX}")

    def text(x: Any) -> bool:
        return isinstance(x, str) and bool(x.strip())

    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    for key, kind, empty in (("checkpoints", list, []), ("tasks", dict, {}), ("runs", list, [])):
        m.setdefault(key, empty)
        if not isinstance(m[key], kind):
            raise bad(key, "a list" if kind is list else "a mapping", m[key])
    labels: set[str] = set()
    for i, c in enumerate(m["checkpoints"]):
        where = f"checkpoints[{i}]"
        if not isinstance(c, dict):
            raise bad(where, "a mapping", c)
        for k, ok, expected in (
            ("index", whole, "a whole number"),
            ("label", text, "a non-empty string"),
            ("model", lambda x: isinstance(x, str), "a string"),
            ("stage", lambda x: isinstance(x, str), "a string"),
        ):
            if not ok(c.get(k)):
                raise bad(f"{where}.{k}", expected, c.get(k))
        if c["label"] in labels:
            raise UserError(f"{src}: field '{where}.label': duplicate label '{c['label']}'; {_MANIFEST_FIX}")
        labels.add(c["label"])
        if not isinstance(c.setdefault("info", {}), dict):
            raise bad(f"{where}.info", "a mapping", c["info"])
        if c.get("parent") is not None and not isinstance(c["parent"], str):
            raise bad(f"{where}.parent", "a checkpoint label", c["parent"])
    for k, v in m["tasks"].items():
        where = f"tasks.{k}"
        if not isinstance(v, dict):
            raise bad(where, "a mapping", v)
        if not (whole(v.get("version")) and v["version"] >= 1):
            raise bad(f"{where}.version", "a positive whole number", v.get("version"))
        prompts = v.setdefault("prompts", {})
        if not isinstance(prompts, dict) or not all(isinstance(t, str) for t in prompts.values()):
            raise bad(f"{where}.prompts", "a mapping of prompt ids to texts", prompts)
    for i, r in enumerate(m["runs"]):
        if not isinstance(r, dict):
            raise bad(f"runs[{i}]", "a mapping", r)


def _hashable(x: Any) -> Any:
    """``x`` usable in a set key (a failure record's field may hold a list or a mapping)."""
    return x if isinstance(x, (str, int, float, bool, type(None))) else json.dumps(x, sort_keys=True, default=str)


def shard_problem(f: Path, sub: str = "shards") -> str | None:
    """Why shard ``f`` (of DIR/shards or DIR/samples) cannot be read, or None when its magic
    bytes, its footer and its schema are whole. Reads the footer only.

    A truncated file has lost its footer's magic bytes (or all of its footer), so any cut is
    seen. (The footer's row-group metadata is not walked: pyarrow aborts the process on some
    damaged footers there, where reading the file raises an error instead.)"""
    schema = SCHEMA if sub == "shards" else SAMPLE_SCHEMA
    unreadable = "not a readable Parquet file (truncated?)"
    try:
        with open(f, "rb") as fh:
            if fh.read(4) != b"PAR1":  # the header magic (the footer's is checked by read_metadata)
                return unreadable
        got = pq.read_metadata(f).schema.to_arrow_schema()
    except _PARQUET_ERRORS:
        return unreadable
    what = "results" if sub == "shards" else "samples"
    for field in schema:
        i = got.get_field_index(field.name)
        if i < 0:
            if field.name not in _MAY_LACK[sub]:
                return f"not a crystallab {what} shard (no column '{field.name}')"
            continue
        if not _castable(got.field(i).type, field.type):
            return f"not a crystallab {what} shard (column '{field.name}' holds {got.field(i).type}, not {field.type})"
    return None


def _castable(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether a column of type ``a`` reads as type ``b`` without loss of meaning."""
    t = pa.types
    return (
        a == b
        or t.is_null(a)
        or (t.is_integer(a) and t.is_integer(b))
        or (t.is_floating(a) and t.is_floating(b))
        or (t.is_integer(a) and t.is_floating(b))
        or ((t.is_string(a) or t.is_large_string(a)) and (t.is_string(b) or t.is_large_string(b)))
    )


def _shard_error(f: Path, problem: str) -> UserError:
    """The one line for an unreadable shard, met by a reader (which never moves files)."""
    return UserError(
        f"{f}: {problem}; rerun `crystallab measure` with the same arguments "
        f"(it moves the file to {f.parent.parent / 'quarantine'} and re-measures its prompts), or delete it"
    )


def _check_not_null(t: pa.Table, f: Path, error: Any) -> None:
    """Refuse (``error(f, problem)``) a table with missing values where every row needs one."""
    for c in _NOT_NULL:
        if c in t.column_names and t.column(c).null_count:
            raise error(f, f"not a crystallab shard (column '{c}' has missing values)")


def _read_shard(f: Path, sub: str = "shards") -> pa.Table:
    """One shard of DIR/shards (or DIR/samples) in its schema; an unreadable or foreign one is a
    UserError naming it."""
    known = _verified(f, sub)
    if known is not None:
        return known
    problem = shard_problem(f, sub)
    if problem is not None:
        raise _shard_error(f, problem)
    try:
        t = pq.read_table(f, schema=SCHEMA if sub == "shards" else SAMPLE_SCHEMA, page_checksum_verification=True)
        t.validate(full=True)  # damaged pages can decode into strings that are not UTF-8
    except _PARQUET_ERRORS:
        raise _shard_error(f, "not a readable Parquet file (damaged data pages)") from None
    if sub == "shards":
        _check_not_null(t, f, _shard_error)
    t = with_decoding_defaults(t)
    _remember(f, sub, t)
    return t


def rows_where(table: pa.Table, **where: Any) -> list[dict[str, Any]]:
    """The rows (as dicts) whose columns equal ``where``, filtered in Arrow first: a lab run's
    table holds every arm's tracked steps, and a caller wants one checkpoint's.

    >>> t = pa.table({"checkpoint": ["base", "sft", "base"], "prob": [0.1, 0.2, 0.3]})
    >>> rows_where(t, checkpoint="base")
    [{'checkpoint': 'base', 'prob': 0.1}, {'checkpoint': 'base', 'prob': 0.3}]
    """
    import pyarrow.compute as pc

    mask = None
    for col, value in where.items():
        m = pc.equal(table.column(col), value)
        mask = m if mask is None else pc.and_(mask, m)
    return (table if mask is None else table.filter(mask)).to_pylist()


def manifest_lock(root: Path, timeout: float = 120.0):
    """An inter-process lock around manifest read-merge-write (``filelock``)."""
    from filelock import FileLock

    return FileLock(str(Path(root) / ".manifest.lock"), timeout=timeout)


def merge_manifests(disk: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Merge this process's manifest into the one on disk: checkpoints by label (the disk's index
    wins), tasks by id (prompt texts united), runs by ``run_id`` (or by content); other keys from
    ``mine``.

    >>> d = {"format": 2, "checkpoints": [{"index": 0, "label": "a", "model": "m", "stage": "base", "info": {}}],
    ...      "tasks": {"t": {"version": 1, "prompts": {"raw-00": "x"}}}, "runs": [{"run_id": "1"}]}
    >>> m = {"format": 2, "checkpoints": [{"index": 0, "label": "b", "model": "n", "stage": "sft", "info": {}}],
    ...      "tasks": {"t": {"version": 1, "prompts": {"raw-01": "y"}}}, "runs": [{"run_id": "2"}]}
    >>> out = merge_manifests(d, m)
    >>> ([(c["index"], c["label"]) for c in out["checkpoints"]], sorted(out["tasks"]["t"]["prompts"]),
    ...  [r["run_id"] for r in out["runs"]])
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


# ---- the manifest's and the table's rules (shared with the in-memory Results) -----------------
def new_manifest() -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "checkpoints": [], "tasks": {}, "runs": []}


def add_checkpoint(
    manifest: dict[str, Any],
    label: str,
    model: str,
    stage: str,
    info: dict[str, Any],
    parent: str | None = None,
    where: str = "these results",
) -> int:
    """The index of checkpoint ``label`` in ``manifest``: its existing index, or the next one.
    ``parent`` (the checkpoint it was trained from) is recorded for the analysis' parent graph."""
    if stage not in STAGES:
        raise UserError(f"unknown stage '{stage}'; use one of {', '.join(STAGES)}")
    for c in manifest["checkpoints"]:
        if c["label"] == label:
            if c["model"] != model:
                raise UserError(
                    f"checkpoint label '{label}' already names model '{c['model']}' in {where}; choose another --label"
                )
            c["stage"], c["info"] = stage, info
            if parent is not None:
                c["parent"] = parent
            return int(c["index"])
    index = len(manifest["checkpoints"])
    entry = {"index": index, "label": label, "model": model, "stage": stage, "info": info}
    if parent is not None:
        entry["parent"] = parent
    manifest["checkpoints"].append(entry)
    return index


def add_task(manifest: dict[str, Any], task_id: str, version: int, prompts: dict[str, str], where: str = "") -> None:
    """Record a task's version and raw prompt texts; a second version of one task is refused."""
    known = manifest["tasks"].get(task_id)
    if known and known["version"] != version:
        raise UserError(
            f"task '{task_id}' version {version} differs from version {known['version']} already "
            f"measured in {where or 'these results'}; use a new --out"
        )
    entry = manifest["tasks"].setdefault(task_id, {"version": version, "prompts": {}})
    entry["prompts"].update(prompts)


def group_keys(table: pa.Table) -> list[tuple]:
    """Each row's GROUP key (checkpoint, step, task, prompt, method, replica, decoding), in row order."""
    return list(zip(*[table.column(c).to_pylist() for c in GROUP]))


def groups_of(table: pa.Table) -> set[tuple]:
    """The groups a table holds."""
    return set(group_keys(table))


def tidy(tables: list[pa.Table]) -> pa.Table:
    """One table from shards: a group written twice keeps its first copy; rows in reading order."""
    if not tables:
        return SCHEMA.empty_table()
    t = pa.concat_tables(tables)
    # a group written twice (two runs racing before locks existed) keeps one copy
    import pyarrow.compute as pc

    key = pc.binary_join_element_wise(
        *[pc.cast(pc.fill_null(pc.cast(t[c], pa.string()), "∅"), pa.string()) for c in (*GROUP, "option")], "\x1f"
    )
    _, first = _unique_first(key)
    t = t.take(first)
    order = [
        ("checkpoint_index", "ascending"),
        ("step", "ascending"),
        ("task", "ascending"),
        ("method", "ascending"),
        ("temperature", "ascending"),
        ("prompt_kind", "descending"),
        ("prompt_id", "ascending"),
    ]
    return t.sort_by(order)


def read_samples(root: str | Path) -> pa.Table:
    """The completions of a results folder's sampled measurements (DIR/samples)."""
    files = sorted((Path(root) / "samples").glob("*.parquet"))
    tables = [_read_shard(f, "samples") for f in files]
    return pa.concat_tables(tables) if tables else SAMPLE_SCHEMA.empty_table()


def read_shards(files: Iterable[Path]) -> pa.Table:
    """The rows of results shards ``files`` as one table; an unreadable shard is one line naming
    it (nothing is moved: readers leave the folder as it is)."""
    return tidy([_read_shard(Path(f)) for f in files])


def _unique_first(key: pa.Array) -> tuple[list, list[int]]:
    seen: dict[str, int] = {}
    for i, k in enumerate(key.to_pylist()):
        seen.setdefault(k, i)
    return list(seen), sorted(seen.values())


def read_table(path: str | Path) -> pa.Table:
    """Read a results folder's table (or a Parquet file). Raises UserError if it is missing.

    A folder is read from its shards, the source of truth, so a run killed before it rewrote
    distributions.parquet is still read whole. An unreadable shard or table is one line naming
    the file; nothing is moved (``crystallab measure`` quarantines unreadable shards)."""
    p = Path(path)
    try:
        shards = sorted((p / "shards").glob("*.parquet")) if p.is_dir() else []
    except OSError as exc:
        raise UserError(f"cannot read results folder {p}: {exc.strerror or exc}") from None
    if shards:
        return read_shards(shards)
    f = p / "distributions.parquet" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"no results table at {f}; run `crystallab measure --out {p}` first")

    def table_error(f: Path, problem: str) -> UserError:
        return UserError(f"{f}: {problem}; it cannot be analysed (measure again into a new --out folder)")

    try:
        t = pq.read_table(f, page_checksum_verification=True)
        t.validate(full=True)
    except _PARQUET_ERRORS:
        raise table_error(f, "not a readable Parquet results table (truncated?)") from None
    for col in SCHEMA:  # a table written before a nullable column existed reads it as null
        if col.name not in t.column_names:
            if col.name not in _MAY_LACK["shards"]:
                raise table_error(f, f"not a crystallab results table (no column '{col.name}')")
            t = t.append_column(col, pa.nulls(len(t), col.type))
    try:
        t = t.select(SCHEMA.names).cast(SCHEMA)
    except _PARQUET_ERRORS:
        raise table_error(f, "not a crystallab results table (a column of the wrong type)") from None
    _check_not_null(t, f, table_error)
    return with_decoding_defaults(t)


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
        except (OSError, ValueError, KeyError, TypeError):
            who = ""
        raise UserError(
            f"{root} is being written by another crystallab run{who}; wait for it to finish, or use another --out"
        ) from None
    _HELD[path] = [lock, 1]
    try:
        atomic_write_bytes(
            owner,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            ).encode(),
        )
        for stale in root.glob("**/.*.tmp"):  # temp files of a killed writer: never renamed, never read
            stale.unlink(missing_ok=True)
        yield
    finally:
        del _HELD[path]
        lock.release()
