"""Every file crystallab reads may be broken (issue 12, deliverable 7): truncated, binary, in the
wrong encoding, or of the wrong shape. Each reader either returns a valid object or raises one
UserError line naming the file; no other exception escapes. Unreadable shards are quarantined
by ``measure`` (``done_groups``) and named, never moved, by the readers the analysis uses."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallab.analysis import Analysis, Thresholds, _manifest_links, analyze_dir, load_analysis, summary_text
from crystallab.cli.main import main
from crystallab.errors import UserError
from crystallab.ladder import Ladder, load_ladder
from crystallab.store import GROUP, SAMPLE_SCHEMA, SCHEMA, ResultStore, atomic_write_table, merge_manifests, read_table
from crystallab.suite import Task, load_task_file
from crystallab.yamlconf import check_fields, read_settings

from synthetic import ladder, table, write

pytestmark = pytest.mark.filterwarnings("ignore::crystallab.suite.TaskWarning")  # fuzzed family sizes
# CRYSTALLAB_FUZZ_EXAMPLES=2000 for a longer campaign
FUZZ = settings(
    max_examples=int(os.environ.get("CRYSTALLAB_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FAST = Thresholds(n_boot=20, n_perm=50)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=10), c, max_size=4)),
    max_leaves=20,
)


def refused_or(fn: Callable[..., Any], *args: Any, names: str | None = None) -> Any:
    """What ``fn`` returns, or None when it refused with a one-line UserError (that names
    ``names``, the file, when given). Any other exception propagates and fails the test."""
    try:
        return fn(*args)
    except UserError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, msg
        if names is not None:
            assert names in msg, msg
        return None


def truncations(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(valid) - 1).map(lambda k: valid[:k])


def encodings(text: str) -> st.SearchStrategy[bytes]:
    """``text`` (with non-ASCII) in encodings other than UTF-8."""
    return st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"]).map(text.encode)


def file_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, truncations of ``valid``, and ``valid`` with a few bytes overwritten."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4)

    def flip(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(valid)
        for i, v in edits:
            b[i] = v
        return bytes(b)

    return st.one_of(st.binary(max_size=400), truncations(valid), flips.map(flip))


def yaml_text(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


# ---- task files ---------------------------------------------------------------------------------

TASK = {
    "id": "fuzz",
    "version": 1,
    "description": "Café au lait: pick one, vite",
    "options": ["crème", "thé", {"label": "café", "forms": ["Café"]}],
    "contexts": [{"family": f"f{i % 2}", "text": f"Au café {i}, on commande:"} for i in range(6)],
    "instructions": [
        {"family": f"c{i // 3}", "text": f"Choisis une boisson au hasard ({i}), réponds en un mot."} for i in range(15)
    ],
}
TASK_TEXT = yaml.safe_dump(TASK, allow_unicode=True, sort_keys=False)


def _task(path: Path, data: bytes) -> Task | None:
    path.write_bytes(data)
    task = refused_or(load_task_file, path, names=str(path))
    if task is not None:
        assert isinstance(task, Task) and len(task.options) >= 2 and len(set(task.labels)) == len(task.labels)
    return task


def test_task_baseline_loads(tmp_path):
    assert _task(tmp_path / "fuzz.yaml", TASK_TEXT.encode()).labels == ("crème", "thé", "café")
    assert _task(tmp_path / "fuzz.yaml", b"\xef\xbb\xbf" + TASK_TEXT.encode()) is not None  # a UTF-8 BOM is fine


@FUZZ
@given(data=st.one_of(file_bytes(TASK_TEXT.encode()), encodings(TASK_TEXT)))
def test_fuzz_task_file_bytes(tmp_path, data):
    got = _task(tmp_path / "fuzz.yaml", data)  # refused in one line, or a sound task
    assert got is None or isinstance(got, Task)


@FUZZ
@given(value=values)
def test_fuzz_task_file_shapes(tmp_path, value):
    got = _task(tmp_path / "fuzz.yaml", yaml_text(value))
    assert got is None or isinstance(got, Task)


@FUZZ
@given(key=st.sampled_from([*TASK, "parser", "metadata", "leading_space"]), value=values)
def test_fuzz_task_file_one_key_broken(tmp_path, key, value):
    got = _task(tmp_path / "fuzz.yaml", yaml_text({**TASK, key: value}))
    assert got is None or isinstance(got, Task)


@pytest.mark.parametrize(
    "encoding,needle", [("latin-1", "not UTF-8 text"), ("utf-16", "UTF-16"), ("utf-16-le", "NUL bytes")]
)
def test_task_in_another_encoding_names_the_file(tmp_path, encoding, needle):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(TASK_TEXT.encode(encoding))
    with pytest.raises(UserError, match=needle) as exc:
        load_task_file(path)
    assert str(path) in str(exc.value) and "task file" in str(exc.value) and "UTF-8" in str(exc.value)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_cli_tasks_with_a_non_utf8_task_is_one_line(tmp_path, capsys, encoding):
    (tmp_path / "fuzz.yaml").write_bytes(TASK_TEXT.encode(encoding))
    assert main(["tasks", "--tasks-dir", str(tmp_path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("crystallab: error: ") and "fuzz.yaml" in err[0], err


def test_dangling_task_symlink_is_one_line(tmp_path, capsys):
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    assert main(["tasks", "--tasks-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.yaml" in err[0], err


# ---- ladder files -------------------------------------------------------------------------------

LADDER_TEXT = (
    "name: café\ndescription: Échelle\ncheckpoints:\n"
    "  - {label: base, stage: base, model: x/base}\n"
    "  - {label: sft, stage: sft, model: x/sft, revision: main, parent: base}\n"
)


def _ladder(path: Path, data: bytes) -> Ladder | None:
    path.write_bytes(data)
    lad = refused_or(load_ladder, path, names=str(path))
    if lad is not None:
        assert isinstance(lad, Ladder) and lad.checkpoints
        assert all(isinstance(c.label, str) and isinstance(c.model, str) for c in lad.checkpoints)
    return lad


def test_ladder_baseline_loads(tmp_path):
    assert [c.label for c in _ladder(tmp_path / "l.yaml", LADDER_TEXT.encode()).checkpoints] == ["base", "sft"]


@FUZZ
@given(data=st.one_of(file_bytes(LADDER_TEXT.encode()), encodings(LADDER_TEXT), values.map(yaml_text)))
def test_fuzz_ladder_file(tmp_path, data):
    got = _ladder(tmp_path / "l.yaml", data)
    assert got is None or isinstance(got, Ladder)


# ---- thresholds and lab configs -----------------------------------------------------------------

THRESHOLDS_TEXT = "# résolution\neps: 0.1\nn_boot: 100\nlevel: 0.9\n"


def _thresholds(path: Path, data: bytes) -> Thresholds | None:
    path.write_bytes(data)
    th = refused_or(Thresholds.from_file, str(path), names=str(path))
    if th is not None:
        th.validate()
        assert all(isinstance(getattr(th, k), (int, float)) for k in Thresholds.names())
        assert isinstance(th.n_boot, int) and isinstance(th.seed, int)
    return th


def test_thresholds_baseline_loads(tmp_path):
    assert _thresholds(tmp_path / "th.yaml", THRESHOLDS_TEXT.encode()).n_boot == 100


@FUZZ
@given(data=st.one_of(file_bytes(THRESHOLDS_TEXT.encode()), encodings(THRESHOLDS_TEXT), values.map(yaml_text)))
def test_fuzz_thresholds_file(tmp_path, data):
    got = _thresholds(tmp_path / "th.yaml", data)
    assert got is None or isinstance(got, Thresholds)


@FUZZ
@given(key=st.sampled_from(Thresholds.names()), value=values)
def test_fuzz_thresholds_one_value(tmp_path, key, value):
    got = _thresholds(tmp_path / "th.yaml", yaml_text({key: value}))
    assert got is None or isinstance(got, Thresholds)


def _lab_config() -> type:
    try:
        from crystallab.lab.config import LabConfig
    except ImportError:  # before the lab config had its own module
        from crystallab.lab.experiments import LabConfig
    return LabConfig


LAB_KEYS = ["sft_data", "seed_family", "rl", "rl_rewards", "base_model", "sft_steps", "limit", "n_boot", "task"]


def _lab_settings(path: Path, data: bytes) -> dict | None:
    cfg = _lab_config()
    path.write_bytes(data)
    known = [f for f in cfg.__dataclass_fields__ if f != "extra"]
    got = refused_or(read_settings, path, known, "lab", cfg, names=str(path))
    if got is not None:
        refused_or(cfg(**got).validate)  # well-typed values: validation is one line at worst
    return got


@FUZZ
@given(
    data=st.one_of(
        file_bytes(b"sft_steps: 20\nrl_rewards: [validity]\n# \xc3\xa9\n"),
        st.fixed_dictionaries({}, optional={k: values for k in LAB_KEYS}).map(yaml_text),
    )
)
def test_fuzz_lab_settings(tmp_path, data):
    got = _lab_settings(tmp_path / "lab.yaml", data)
    assert got is None or isinstance(got, dict)


def test_lab_settings_types_are_checked(tmp_path):
    p = tmp_path / "lab.yaml"
    assert _lab_settings(p, b"rl_rewards: [validity, target]\nlimit: null\n") == {
        "rl_rewards": ("validity", "target"),
        "limit": None,
    }
    for text, needle in (
        ("sft_steps: many\n", "'sft_steps': expected a whole number, got a string ('many')"),
        ("rl_rewards: 5\n", "'rl_rewards': expected a list"),
        ("seed_family: [a]\n", "'seed_family': expected a string, got a list"),
    ):
        p.write_text(text)
        with pytest.raises(UserError, match=__import__("re").escape(needle)):
            read_settings(p, list(_lab_config().__dataclass_fields__), "lab", _lab_config())


def test_check_fields_reports_the_key():
    with pytest.raises(UserError, match=r"x\.yaml: setting 'rl': expected true or false, got a number \(1\)"):
        check_fields({"rl": 1}, _lab_config(), "x.yaml: setting")


def test_lab_config_from_yaml_wrong_shapes(tmp_path):
    p = tmp_path / "lab.yaml"
    for text in ("sft_steps: many\n", "rl_rewards: 5\n", "seed_family: [a]\n"):
        p.write_text(text)
        with pytest.raises(UserError):
            _lab_config().from_yaml(str(p)).validate()


def test_lab_config_from_yaml_binary_and_latin1(tmp_path):
    p = tmp_path / "lab.yaml"
    for data in (b"\x00\x01\x02PAR1", "task: caf\xe9\n".encode("latin-1")):
        p.write_bytes(data)
        with pytest.raises(UserError, match="lab.yaml"):
            _lab_config().from_yaml(str(p))


# ---- the manifest -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A small results folder (synthetic rows, no model) with its analysis.json."""
    d = write(tmp_path_factory.mktemp("robust") / "r", ladder("planted"))
    analyze_dir(d, FAST)
    return d


def _copy(results: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(results, dest)
    return dest


def _manifest(d: Path, data: bytes) -> ResultStore | None:
    (d / "manifest.json").write_bytes(data)
    store = refused_or(ResultStore, d, names=str(d))
    if store is not None:  # a manifest it accepts is usable: register, merge, save
        store.checkpoint("new-ckpt", "x/new", "base", {"k": 1})
        store.register_task("new_task", 1, {"raw-00": "pick:"})
        merge_manifests(json.loads(json.dumps(store.manifest)), store.manifest)
        store.save_manifest()
    return store


def test_manifest_baseline_loads(results, tmp_path):
    d = _copy(results, tmp_path / "r")
    assert _manifest(d, (results / "manifest.json").read_bytes()) is not None


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_manifest_bytes_and_shapes(results, tmp_path, data):
    d = _copy(results, tmp_path / "r")
    got = _manifest(d, data)
    assert got is None or isinstance(got, ResultStore)


@FUZZ
@given(k=st.integers(0, 10**6), encoding=st.sampled_from(["utf-16", "utf-32"]))
def test_fuzz_manifest_truncated_or_encoded(results, tmp_path, k, encoding):
    d = _copy(results, tmp_path / "r")
    valid = (results / "manifest.json").read_bytes()
    for broken in (valid[: k % len(valid)], valid.decode().replace('"base"', '"bäse"').encode(encoding)):
        got = _manifest(d, broken)  # refused in one line, or loaded and usable
        assert got is None or isinstance(got, ResultStore)


@FUZZ
@given(
    where=st.sampled_from(
        [
            "checkpoints",
            "tasks",
            "runs",
            "ck.index",
            "ck.label",
            "ck.model",
            "ck.stage",
            "ck.info",
            "ck.parent",
            "ck",
            "format",
        ]
    ),
    value=values,
)
def test_fuzz_manifest_one_field_broken(results, tmp_path, where, value):
    d = _copy(results, tmp_path / "r")
    m = json.loads((results / "manifest.json").read_text())
    m["tasks"] = {"number_1_10": {"version": 1, "prompts": {"raw-00": "x"}}}
    if where == "ck":
        m["checkpoints"][0] = value
    elif where.startswith("ck."):
        m["checkpoints"][0][where[3:]] = value
    else:
        m[where] = value
    store = _manifest(d, json.dumps(m).encode())
    if store is not None:  # the analysis reads parents and answers from it
        refused_or(_manifest_links, store.manifest, str(store.manifest_path))


def test_broken_train_answers_are_one_line(results, tmp_path):
    d = _copy(results, tmp_path / "r")
    m = json.loads((d / "manifest.json").read_text())
    m["checkpoints"][1]["info"]["train_answers"] = {"number_1_10": [0.5, 0.5]}
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"checkpoints\[1\]\.info\.train_answers"):
        analyze_dir(d, FAST)


# ---- results shards -----------------------------------------------------------------------------


def _shard_bytes(results: Path) -> bytes:
    return (results / "shards" / "synthetic.parquet").read_bytes()


def _read(d: Path) -> pa.Table | None:
    t = refused_or(read_table, d, names="synthetic.parquet")
    if t is not None:
        assert t.schema.equals(SCHEMA) or set(SCHEMA.names) <= set(t.column_names)
    return t


@FUZZ
@given(data=st.data())
def test_fuzz_results_shard(results, tmp_path, data):
    d = _copy(results, tmp_path / "r")
    shard = d / "shards" / "synthetic.parquet"
    shard.write_bytes(data.draw(file_bytes(_shard_bytes(results))))
    before = sorted(p.name for p in d.rglob("*"))
    t = _read(d)
    assert sorted(p.name for p in d.rglob("*")) == before  # a reader never moves a file
    if t is None:  # measure would quarantine it (or it was fine to read after all)
        store = ResultStore(d)
        refused_or(store.done_groups)


@pytest.mark.parametrize("bad", ["truncated", "empty", "text", "foreign", "wrong types", "nulls"])
def test_bad_shard_named_by_the_reader(results, tmp_path, bad):
    d = _copy(results, tmp_path / "r")
    shard = d / "shards" / "synthetic.parquet"
    valid = shard.read_bytes()
    if bad == "truncated":
        shard.write_bytes(valid[: len(valid) // 2])
    elif bad == "empty":
        shard.write_bytes(b"")
    elif bad == "text":
        shard.write_text("checkpoint,prob\nbase,0.5\n")
    elif bad == "foreign":
        pq.write_table(pa.table({"a": [1, 2]}), shard)
    elif bad == "wrong types":
        t = pq.read_table(shard)
        pq.write_table(t.set_column(t.schema.get_field_index("prob"), "prob", pa.array(["x"] * len(t))), shard)
    else:
        t = pq.read_table(shard)
        pq.write_table(t.set_column(t.schema.get_field_index("task"), "task", pa.nulls(len(t), pa.string())), shard)
    with pytest.raises(UserError) as exc:
        read_table(d)
    msg = str(exc.value)
    assert "\n" not in msg and str(shard) in msg and "crystallab measure" in msg and "quarantine" in msg, msg
    assert shard.exists()


def test_cli_analyze_with_a_truncated_shard_is_one_line(results, tmp_path, capsys):
    d = _copy(results, tmp_path / "r")
    shard = d / "shards" / "synthetic.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert main(["analyze", str(d)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("crystallab: error: "), err
    assert str(shard) in err[0] and "not a readable Parquet file (truncated?)" in err[0], err
    assert shard.exists()


def test_cli_analyze_with_a_broken_manifest_is_one_line(results, tmp_path, capsys):
    d = _copy(results, tmp_path / "r")
    cut = (d / "manifest.json").read_bytes()[:40]
    for data in (b"\xff\xfe{\x00", cut, b"[1, 2]", b'{"format": 2, "checkpoints": 5}', b'{"format": "2"}'):
        (d / "manifest.json").write_bytes(data)
        assert main(["analyze", str(d)]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "manifest.json" in err[0], err


def test_distributions_table_fallback_is_checked(results, tmp_path):
    d = _copy(results, tmp_path / "r")
    shutil.rmtree(d / "shards")
    assert read_table(d).num_rows == pq.read_table(results / "distributions.parquet").num_rows
    f = d / "distributions.parquet"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(UserError, match="distributions.parquet: not a readable Parquet results table"):
        read_table(d)
    pq.write_table(pa.table({"a": [1]}), f)
    with pytest.raises(UserError, match="no column 'model'"):
        read_table(d)


# ---- quarantine ---------------------------------------------------------------------------------


def _two_shard_folder(d: Path) -> tuple[Path, Path]:
    """A folder with the base rows in one shard (plus completions) and the sft rows in another."""
    rows = ladder("planted")
    write(d, rows)
    (d / "shards" / "synthetic.parquet").unlink()
    (d / "samples").mkdir(exist_ok=True)
    a, b = d / "shards" / "a.parquet", d / "shards" / "b.parquet"
    atomic_write_table(a, table([r for r in rows if r["checkpoint"] == "base"]))
    atomic_write_table(b, table([r for r in rows if r["checkpoint"] != "base"]))
    sample = {
        "checkpoint": "base",
        "checkpoint_index": 0,
        "step": None,
        "task": "number_1_10",
        "prompt_id": "raw-00",
        "sample_index": 0,
        "completion": " 7",
        "option": "7",
        "replica": None,
    }
    atomic_write_table(d / "samples" / "a.parquet", pa.Table.from_pylist([sample], schema=SAMPLE_SCHEMA))
    return a, b


def test_quarantine_moves_a_truncated_shard_and_resumes_past_it(tmp_path):
    d = tmp_path / "r"
    a, b = _two_shard_folder(d)
    store = ResultStore(d)
    all_groups = store.done_groups()
    assert store.quarantined == []
    base = {g for g in all_groups if g[0] == "base"}
    assert base and base != all_groups
    a.write_bytes(a.read_bytes()[:-50])

    with pytest.raises(UserError, match="a.parquet"):  # the reader names it and leaves it in place
        read_table(d)
    assert a.exists()

    moved = store.quarantine_unreadable()
    assert moved == [d / "quarantine" / "shards" / "a.parquet", d / "quarantine" / "samples" / "a.parquet"]
    assert not a.exists() and not (d / "samples" / "a.parquet").exists() and b.exists()
    assert store.quarantine_unreadable() == []
    assert store.done_groups() == all_groups - base and store.quarantined == []
    assert read_table(d).num_rows == pq.read_table(b).num_rows


def test_done_groups_quarantines_and_records_what_it_moved(tmp_path):
    d = tmp_path / "r"
    _two_shard_folder(d)
    (d / "samples" / "a.parquet").write_bytes(b"PAR1 not really")  # broken completions take their rows along
    junk = d / "shards" / "junk.parquet"
    junk.write_bytes(os.urandom(200))
    store = ResultStore(d)
    groups = store.done_groups()
    assert sorted(p.relative_to(d).as_posix() for p in store.quarantined) == [
        "quarantine/samples/a.parquet",
        "quarantine/shards/a.parquet",
        "quarantine/shards/junk.parquet",
    ]
    assert groups and all(g[0] != "base" for g in groups)
    assert [p.name for p in (d / "shards").iterdir()] == ["b.parquet"]


def test_quarantine_never_overwrites(tmp_path):
    d = tmp_path / "r"
    a, _ = _two_shard_folder(d)
    (d / "quarantine" / "shards").mkdir(parents=True)
    (d / "quarantine" / "shards" / "a.parquet").write_bytes(b"earlier")
    a.write_bytes(b"")
    moved = ResultStore(d).quarantine_unreadable()
    assert d / "quarantine" / "shards" / "a.parquet.1" in moved
    assert (d / "quarantine" / "shards" / "a.parquet").read_bytes() == b"earlier"


def test_damaged_data_pages_are_quarantined_by_done_groups(tmp_path):
    """A shard whose footer is whole but whose pages are not passes the cheap check; reading the
    group columns then fails and done_groups quarantines it all the same."""
    d = tmp_path / "r"
    a, _ = _two_shard_folder(d)
    valid = a.read_bytes()
    footer = len(valid) - 8 - pq.read_metadata(a).serialized_size
    rng = random.Random(0)
    for start in range(4, footer - 64, 16):
        b = bytearray(valid)
        b[start : start + 64] = bytes(rng.randrange(256) for _ in range(64))
        a.write_bytes(bytes(b))
        try:
            pq.read_table(a, columns=list(GROUP)).validate(full=True)
        except Exception:  # noqa: BLE001 - any failure is what this test needs
            break
    else:
        pytest.skip("no damage found that pyarrow detects")
    store = ResultStore(d)
    store.done_groups()
    assert d / "quarantine" / "shards" / "a.parquet" in store.quarantined


def test_samples_reader_names_a_broken_samples_shard(tmp_path):
    from crystallab import store as S

    if not hasattr(S, "read_samples"):
        pytest.skip("no read_samples")
    d = tmp_path / "r"
    _two_shard_folder(d)
    assert S.read_samples(d).num_rows == 1
    (d / "samples" / "a.parquet").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match=r"samples/a\.parquet: not a readable Parquet file"):
        S.read_samples(d)


def test_broken_failure_records_are_one_line(tmp_path):
    d = tmp_path / "r"
    _two_shard_folder(d)
    (d / "failures").mkdir()
    f = d / "failures" / "x.json"
    store = ResultStore(d)
    for data in (b'[{"checkpoint": "base"', b"\xff\xfe", b"5", b"[1]"):
        f.write_bytes(data)
        with pytest.raises(UserError, match="x.json"):
            store.failures()
    f.write_text(json.dumps([{"checkpoint": "zz", "prompt_id": ["odd"], "task": {"a": 1}}]))
    assert len(store.failures()) == 1


# ---- analysis.json ------------------------------------------------------------------------------


def _analysis(d: Path, data: bytes) -> Analysis | None:
    (d / "analysis.json").write_bytes(data)
    an = refused_or(load_analysis, d, names=str(d / "analysis.json"))
    if an is not None:
        assert isinstance(an, Analysis)
        summary_text(an)  # well-typed enough to print
    return an


def test_analysis_baseline_loads(results, tmp_path):
    d = _copy(results, tmp_path / "r")
    assert _analysis(d, (results / "analysis.json").read_bytes()).to_json() == json.loads(
        (results / "analysis.json").read_text()
    )


@FUZZ
@given(data=st.data())
def test_fuzz_analysis_json_bytes(results, tmp_path, data):
    d = _copy(results, tmp_path / "r")
    valid = (results / "analysis.json").read_bytes()
    got = _analysis(d, data.draw(st.one_of(file_bytes(valid), values.map(lambda v: json.dumps(v).encode()))))
    assert got is None or isinstance(got, Analysis)


def _paths(x: Any, at: tuple = ()) -> list[tuple]:
    """Every path into a parsed JSON value."""
    out = [at]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, (*at, k))
    elif isinstance(x, list):
        for i, v in enumerate(x[:3]):
            out += _paths(v, (*at, i))
    return out


@FUZZ
@given(data=st.data(), value=values)
def test_fuzz_analysis_json_one_field_broken(results, tmp_path, data, value):
    d = _copy(results, tmp_path / "r")
    doc = json.loads((results / "analysis.json").read_text())
    path = data.draw(st.sampled_from([p for p in _paths(doc) if p and p != ("version",)]))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    got = _analysis(d, json.dumps(doc).encode())
    assert got is None or isinstance(got, Analysis)


def test_done_groups_reads_each_shard_once_and_again_when_it_changes(tmp_path, monkeypatch):
    """A tracker asks for the done groups before every tracked step; with hundreds of shards a
    re-read per step made each step slower than the last. Groups are kept per file (path, size,
    mtime), the shards this process writes are never read back, and a changed file is read again."""
    import crystallab.store as store_mod

    d = tmp_path / "r"
    a, _ = _two_shard_folder(d)
    store = ResultStore(d)
    groups = store.done_groups()
    rows = [r for r in ladder("planted") if r["checkpoint"] == "sft"]
    fresh = [dict(r, checkpoint="rl", step=3) for r in rows]
    store.write_rows(fresh)
    reads: list[str] = []
    real = pq.read_table
    monkeypatch.setattr(store_mod.pq, "read_table", lambda f, *a, **k: reads.append(str(f)) or real(f, *a, **k))
    monkeypatch.setattr(store_mod, "shard_problem", lambda f, sub: reads.append(str(f)))
    new = {tuple(r.get(c, store_mod.DECODING.get(c)) for c in store_mod.GROUP) for r in fresh}
    assert store.done_groups() == groups | new and reads == []
    a.write_bytes(a.read_bytes()[:-50])  # a changed file is checked again (and quarantined)
    assert store.done_groups() == (groups | new) - {g for g in groups if g[0] == "base"}
    assert str(a) in reads
