"""Reliability and safety: killed runs resume bit for bit, one writer per folder, every bad input
is one clear line with exit status 2, the loaders never crash, and unsafe inputs are refused."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallab.errors import UserError
from crystallab.ladder import Ladder, ladder_from_dict, load_ladder
from crystallab.store import GROUP, read_shards, writer_lock
from crystallab.suite import Task, load_task_file, task_from_dict

ENV = dict(os.environ, CI="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread: bit-identical numbers


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crystallab.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def one_line_exit_2(r: subprocess.CompletedProcess, needle: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("crystallab: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    if os.environ.get("CRYSTALLAB_RECORD_ERRORS"):  # collect what users see, for the docs
        with open(os.environ["CRYSTALLAB_RECORD_ERRORS"], "a") as f:
            f.write(f"{' '.join(map(str, r.args[3:]))}\n    {lines[0]}\n")
    return lines[0]


def sorted_rows(path: Path) -> list[dict]:
    key = [*GROUP, "option"]
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))


def write_task(d: Path, task_id: str = "many", version: int = 1, n_contexts: int = 40, **over) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    data = {
        "id": task_id,
        "version": version,
        "options": [str(i) for i in range(1, 13)],
        "contexts": [
            {"family": f"f{i % 4}", "text": f"Draw {i}: pick a number from 1 to 12:"} for i in range(n_contexts)
        ],
        # 5 chat families of 3 (the family sizes a user task is warned about otherwise)
        "instructions": [
            {"family": f"c{i // 3}", "text": f"Pick a random number between 1 and 12 ({i})."} for i in range(15)
        ],
    }
    data.update(over)
    (d / f"{task_id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return d


# ---- killed at random points ------------------------------------------------------------------


def test_sigkill_at_random_points_resumes_to_identical_table(tiny_ckpt, tmp_path):
    model = tiny_ckpt("llama", "digits")
    tasks = write_task(tmp_path / "tasks")
    args = ["measure", "--model", model, "--task", "many", "--tasks-dir", tasks, "--prompts", "raw", "--chunk", "1"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    r = cli(*args, "--out", ref)
    assert r.returncode == 0, r.stderr
    t_ref = time.monotonic() - t0
    n_shards = len(list((ref / "shards").glob("*.parquet")))
    assert n_shards == 40

    out = tmp_path / "killed"
    rng = random.Random(1234)
    # kill points: twice at a random moment of start-up (imports, model load), then once a random
    # number of shards is on disk (plus a random few ms: between writes or inside one)
    points = [("time", rng.uniform(0.1, 1.5)) for _ in range(2)] + [
        ("shards", k) for k in sorted(rng.sample(range(1, n_shards), 5))
    ]
    partial = []  # shards on disk after each kill
    for kind, at in points:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crystallab.cli.main", *map(str, args), "--out", str(out)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kind == "time":
            time.sleep(at)
        else:
            t1 = time.monotonic()
            while (
                proc.poll() is None
                and len(list((out / "shards").glob("*.parquet"))) < at
                and time.monotonic() - t1 < 120
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        shards = sorted((out / "shards").glob("*.parquet")) if (out / "shards").exists() else []
        read_shards(shards)  # whatever a kill leaves is readable: no torn shard is ever visible
        partial.append(len(shards))
    assert t_ref > 0 and len(points) >= 5
    assert sum(0 < n < n_shards for n in partial) >= 3, partial  # kills landed mid-measurement

    r = cli(*args, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted_rows(out / "distributions.parquet") == sorted_rows(ref / "distributions.parquet")
    assert not list(out.glob("**/.*.tmp"))  # a killed writer's temp files are swept by the next one
    labels = [
        [c["index"], c["label"], c["model"]] for c in json.loads((out / "manifest.json").read_text())["checkpoints"]
    ]
    assert labels == [[0, str(model), str(model)]]  # resuming never registers the checkpoint twice


def test_second_writer_is_refused_and_a_killed_holder_frees_the_lock(tiny_ckpt, tmp_path):
    model = tiny_ckpt("llama", "digits")
    out = tmp_path / "out"
    out.mkdir()
    with writer_lock(out):
        r = cli("measure", "--model", model, "--task", "coin_flip", "--prompts", "raw", "--out", out)
        one_line_exit_2(r, "is being written by another crystallab run (pid")
        with writer_lock(out):  # re-entrant in the holding process (a ladder's rungs)
            pass
    # a holder killed by SIGKILL leaves no stale lock
    code = (
        f"from crystallab.store import writer_lock; import time\nwith writer_lock({str(out)!r}):\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    one_line_exit_2(
        cli("measure", "--model", model, "--task", "coin_flip", "--prompts", "raw", "--out", out), f"pid {holder.pid}"
    )
    holder.kill()
    holder.wait()
    r = cli("measure", "--model", model, "--task", "coin_flip", "--prompts", "raw", "--out", out)
    assert r.returncode == 0, r.stderr


# ---- every bad input: one line, exit 2 ----------------------------------------------------------


BAD_TASKS = {
    "unknown_field.yaml": (
        "id: unknown_field\nversion: 1\noptions: [a, b]\ncontexts: [{family: x, text: 'pick:'}]\n"
        "instructions: [pick]\ncolour: red\n",
        "field 'colour': unknown key",
    ),
    "dup.yaml": (
        "id: dup\nversion: 1\noptions: [a, a]\ncontexts: [{family: x, text: 'pick:'}]\ninstructions: [pick]\n",
        "duplicate option 'a'",
    ),
    "collide.yaml": (
        "id: collide\nversion: 1\noptions: [{label: a, forms: [A]}, {label: b, forms: [A]}]\n"
        "contexts: [{family: x, text: 'pick:'}]\ninstructions: [pick]\n",
        "is also a form of option 'a'",
    ),
    "empty.yaml": (
        "id: empty\nversion: 1\noptions: []\ncontexts: [{family: x, text: 'pick:'}]\ninstructions: [pick]\n",
        "field 'options': must not be empty",
    ),
    "single.yaml": (
        "id: single\nversion: 1\noptions: [a]\ncontexts: [{family: x, text: 'pick:'}]\ninstructions: [pick]\n",
        "at least 2 options",
    ),
    "broken.yaml": ("id: broken\noptions: [a, b\n", "malformed YAML"),
}
BAD_LADDERS = {
    "cycle.yaml": (
        "checkpoints:\n  - {label: a, stage: sft, model: x/y, parent: b}\n"
        "  - {label: b, stage: rl, model: x/z, parent: a}\n",
        "parents form a cycle: a → b → a",
    ),
    "dupl.yaml": (
        "checkpoints:\n  - {label: a, stage: sft, model: x/y}\n  - {label: a, stage: rl, model: x/z}\n",
        "duplicate label 'a'",
    ),
    "orphan.yaml": (
        "checkpoints:\n  - {label: a, stage: sft, model: x/y, parent: base}\n",
        "no checkpoint is labelled 'base'",
    ),
    "broken_ladder.yaml": ("checkpoints: [\n", "malformed YAML"),
}
M = ["measure", "--model", "{model}", "--task", "coin_flip", "--out", "{out}"]
CASES = [
    ("malformed task YAML", ["tasks", "--tasks-dir", "{bad}", "broken"], "malformed YAML"),
    (
        "unknown task",
        ["measure", "--model", "{model}", "--task", "no_such_task", "--out", "{out}"],
        "unknown task 'no_such_task'",
    ),
    ("misspelt task", ["tasks", "coin_flp"], "did you mean 'coin_flip'"),
    ("unknown task field", ["tasks", "--tasks-dir", "{bad}", "unknown_field"], "unknown key"),
    ("duplicate options", ["tasks", "--tasks-dir", "{bad}", "dup"], "duplicate option"),
    ("colliding surface forms", ["tasks", "--tasks-dir", "{bad}", "collide"], "is also a form of option"),
    ("empty option list", ["tasks", "--tasks-dir", "{bad}", "empty"], "must not be empty"),
    ("single option", ["tasks", "--tasks-dir", "{bad}", "single"], "at least 2 options"),
    (
        "unknown model id",
        ["measure", "--model", "nosuchorg/nosuch-model-xyz", "--task", "coin_flip", "--out", "{out}"],
        "'nosuchorg/nosuch-model-xyz'",
    ),
    (
        "missing model path",
        ["measure", "--model", "/no/such/dir", "--task", "coin_flip", "--out", "{out}"],
        "model not found",
    ),
    (
        "unknown builtin",
        ["measure", "--model", "builtin:nope", "--task", "coin_flip", "--out", "{out}"],
        "unknown builtin model",
    ),
    (
        "not a GGUF file",
        ["measure", "--model", "gguf:{tmp}/fake.gguf", "--task", "coin_flip", "--out", "{out}"],
        "not a GGUF file",
    ),
    ("chat without a template, no fallback", [*M, "--prompts", "chat", "--no-plain-chat"], "has no chat template"),
    ("N = 0 samples", [*M, "--method", "sample", "--samples", "0"], "--samples must be a positive"),
    ("N < 0 samples", [*M, "--method", "sample", "--samples=-3"], "--samples must be a positive"),
    ("--limit 0", [*M, "--limit", "0"], "--limit must be positive"),
    ("--chunk 0", [*M, "--chunk", "0"], "--chunk must be positive"),
    ("unknown flag", [*M, "--samplez", "5"], "unrecognized arguments: --samplez"),
    ("misspelt command", ["measur"], "invalid choice: 'measur'"),
    (
        "unwritable --out",
        ["measure", "--model", "{model}", "--task", "coin_flip", "--out", "/proc/forbidden/x"],
        "cannot write results",
    ),
    (
        "incompatible results folder (measure)",
        ["measure", "--model", "{model}", "--task", "coin_flip", "--out", "{old}"],
        "incompatible crystallab",
    ),
    ("incompatible results folder (analyze)", ["analyze", "{old}"], "incompatible crystallab"),
    ("ladder with a cycle", ["ladder", "{lad}/cycle.yaml", "--task", "coin_flip", "--out", "{out}"], "form a cycle"),
    (
        "ladder with duplicate labels",
        ["ladder", "{lad}/dupl.yaml", "--task", "coin_flip", "--out", "{out}"],
        "duplicate label",
    ),
    (
        "ladder parent unknown",
        ["ladder", "{lad}/orphan.yaml", "--task", "coin_flip", "--out", "{out}"],
        "no checkpoint is labelled",
    ),
    (
        "malformed ladder YAML",
        ["ladder", "{lad}/broken_ladder.yaml", "--task", "coin_flip", "--out", "{out}"],
        "malformed YAML",
    ),
    (
        "unknown ladder preset",
        ["ladder", "--preset", "olmo2-1c", "--task", "coin_flip", "--out", "{out}"],
        "did you mean 'olmo2-1b'",
    ),
    (
        "remote code without --trust-remote-code",
        ["measure", "--model", "{remote}", "--task", "coin_flip", "--out", "{out}"],
        "unless you pass --trust-remote-code",
    ),
    (
        "pickle weights without --allow-pickle",
        ["measure", "--model", "{pickle}", "--task", "coin_flip", "--out", "{out}"],
        "--allow-pickle",
    ),
    (
        "NaN logits",
        ["measure", "--model", "{nan}", "--task", "coin_flip", "--prompts", "raw", "--out", "{out}"],
        "NaN or inf logits",
    ),
    (
        "NaN logits while sampling",
        [
            "measure",
            "--model",
            "{nan}",
            "--task",
            "coin_flip",
            "--prompts",
            "raw",
            "--method",
            "sample",
            "--samples",
            "4",
            "--out",
            "{out}",
        ],
        "NaN or inf logits while sampling",
    ),
    (
        "chat template breaking out of the sandbox",
        ["measure", "--model", "{evil}", "--task", "coin_flip", "--prompts", "chat", "--out", "{out}"],
        "refused by the jinja2 sandbox",
    ),
]


@pytest.fixture(scope="module")
def bad_world(tiny_ckpt, tmp_path_factory):
    """Every bad artefact the cases need, built once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("bad")
    good = tiny_ckpt("llama", "digits")
    (root / "fake.gguf").write_text("not gguf")
    for d, files in (("bad", BAD_TASKS), ("lad", BAD_LADDERS)):
        (root / d).mkdir()
        for name, (text, _) in files.items():
            (root / d / name).write_text(text)
    old = root / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": 99, "checkpoints": [], "tasks": {}, "runs": []}))

    def variant(name: str, edit=None, post=None) -> Path:
        d = root / name
        model = AutoModelForCausalLM.from_pretrained(good)
        tok = AutoTokenizer.from_pretrained(good)
        if edit:
            edit(model, tok, d)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        if post:
            post(d)
        return d

    def nan_head(model, tok, d):
        with torch.no_grad():
            model.lm_head.weight[:, 0] = float("nan")

    def evil_template(model, tok, d):  # reaches for os.system through a function's globals
        tok.chat_template = (
            "{{ cycler.__init__.__globals__.os.system('touch "
            + str(root / "PWNED")
            + "') }}{{ messages[0]['content'] }}"
        )

    def remote_code(d):  # an architecture transformers does not know, whose code would run on load
        (d / "evil_model.py").write_text(
            f"open({str(root / 'REMOTE_CODE_RAN')!r}, 'w').close()\n"
            "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilForCausalLM\n"
        )
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(
            model_type="evil-llama",
            auto_map={"AutoConfig": "evil_model.EvilConfig", "AutoModelForCausalLM": "evil_model.EvilForCausalLM"},
        )
        (d / "config.json").write_text(json.dumps(cfg))

    paths = {
        "nan": variant("nan", nan_head),
        "evil": variant("evil", evil_template),
        "remote": variant("remote", post=remote_code),
    }
    pk = variant("pickle")
    from safetensors.torch import load_file

    torch.save(load_file(pk / "model.safetensors"), pk / "pytorch_model.bin")  # the same weights, pickled
    (pk / "model.safetensors").unlink()
    return {"tmp": root, "bad": root / "bad", "lad": root / "lad", "old": old, "model": good, "pickle": pk, **paths}


@pytest.mark.parametrize("what,args,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(bad_world, tmp_path, what, args, needle):
    args = [a.format(**bad_world, out=tmp_path / "out") for a in args]
    one_line_exit_2(cli(*args), needle)
    assert not (bad_world["tmp"] / "PWNED").exists()
    assert not (bad_world["tmp"] / "REMOTE_CODE_RAN").exists()


def test_bad_input_task_versions_differ(tiny_ckpt, tmp_path):
    """One task measured at two versions: measure refuses to mix them into one folder, and
    analyze refuses a folder that holds both (shards copied in by hand)."""
    model = tiny_ckpt("llama", "digits")
    base = ["--task", "many", "--prompts", "raw", "--limit", "2"]
    v1, v2 = write_task(tmp_path / "v1", n_contexts=12), write_task(tmp_path / "v2", version=2, n_contexts=12)
    assert (
        cli("measure", "--model", model, *base, "--tasks-dir", v1, "--out", tmp_path / "a", "--label", "one").returncode
        == 0
    )
    one_line_exit_2(
        cli("measure", "--model", model, *base, "--tasks-dir", v2, "--out", tmp_path / "a", "--label", "two"),
        "version 2 differs from version 1",
    )
    assert (
        cli("measure", "--model", model, *base, "--tasks-dir", v2, "--out", tmp_path / "b", "--label", "two").returncode
        == 0
    )
    for f in (tmp_path / "b" / "shards").glob("*.parquet"):
        shutil.copy(f, tmp_path / "a" / "shards" / f.name)
    (tmp_path / "a" / "distributions.parquet").unlink()
    one_line_exit_2(cli("analyze", tmp_path / "a"), "measured with different versions")


def test_pickle_and_remote_code_load_only_when_asked(bad_world, tmp_path):
    r = cli(
        "measure",
        "--model",
        bad_world["pickle"],
        "--task",
        "coin_flip",
        "--prompts",
        "raw",
        "--out",
        tmp_path / "p",
        "--allow-pickle",
    )
    assert r.returncode == 0, r.stderr
    assert not (bad_world["tmp"] / "REMOTE_CODE_RAN").exists()


# ---- loaders never crash ---------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=10), c, max_size=4)),
    max_leaves=20,
)
TASK_KEYS = [
    "id",
    "version",
    "description",
    "leading_space",
    "options",
    "parser",
    "instructions",
    "contexts",
    "metadata",
]
VALID_TASK = {
    "id": "t",
    "version": 1,
    "options": ["a", "b"],
    "contexts": [{"family": "x", "text": "pick:"}],
    "instructions": ["pick"],
}
VALID_LADDER = {
    "checkpoints": [
        {"label": "base", "stage": "base", "model": "x/y"},
        {"label": "sft", "stage": "sft", "model": "x/z", "parent": "base"},
    ]
}


def _loaded_or_refused(fn, *args):
    """What ``fn`` loads, or None when it refused the input with a one-line UserError. Anything
    else (a traceback) propagates and fails the test."""
    try:
        return fn(*args)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


def _check_task(task) -> None:
    """A task the loader accepts is usable: at least 2 options, unique labels, a prompt."""
    if task is None:
        return
    assert isinstance(task, Task)
    assert len(task.options) >= 2 and len(set(task.labels)) == len(task.labels)
    assert task.contexts or task.instructions


def _check_ladder(ladder) -> None:
    """A ladder the loader accepts has unique labels and lists every parent before its child."""
    if ladder is None:
        return
    assert isinstance(ladder, Ladder) and ladder.checkpoints
    labels = [c.label for c in ladder.checkpoints]
    assert len(set(labels)) == len(labels)
    assert all(c.parent is None or c.parent in labels[:i] for i, c in enumerate(ladder.checkpoints))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=values)
def test_fuzz_task_loader_arbitrary_values(data):
    _check_task(_loaded_or_refused(task_from_dict, data, "fuzz.yaml"))


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(TASK_KEYS + ["extra"]), value=values, drop=st.booleans())
def test_fuzz_task_loader_one_field_broken(key, value, drop):
    data = dict(VALID_TASK)
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    _check_task(_loaded_or_refused(task_from_dict, data, "fuzz.yaml"))


@settings(max_examples=200, deadline=None)
@given(data=values)
def test_fuzz_ladder_loader_arbitrary_values(data):
    _check_ladder(_loaded_or_refused(ladder_from_dict, data, "fuzz.yaml"))


@settings(max_examples=200, deadline=None)
@given(
    i=st.integers(0, 1), key=st.sampled_from(["label", "stage", "model", "revision", "parent", "other"]), value=values
)
def test_fuzz_ladder_loader_one_field_broken(i, key, value):
    data = {"checkpoints": [dict(c) for c in VALID_LADDER["checkpoints"]]}
    data["checkpoints"][i][key] = value
    _check_ladder(_loaded_or_refused(ladder_from_dict, data, "fuzz.yaml"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_fuzz_loaders_arbitrary_yaml_text(tmp_path, text):
    for name, fn, check in (("t.yaml", load_task_file, _check_task), ("l.yaml", load_ladder, _check_ladder)):
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        check(_loaded_or_refused(fn, p))


def test_fuzz_baselines_load():
    """The valid inputs the fuzzers mutate do load, so the checks above see accepted inputs too."""
    _check_task(task_from_dict(VALID_TASK, "ok.yaml"))
    _check_ladder(ladder_from_dict(VALID_LADDER, "ok.yaml"))
    assert task_from_dict(VALID_TASK, "ok.yaml").labels == ("a", "b")


# ---- numerical guards in the analysis -----------------------------------------------------------


def test_all_other_prompts_and_single_option_tasks_are_reported_not_measured():
    import numpy as np
    import pyarrow as pa

    from crystallab.analysis import Thresholds, analyze, summary_text
    from crystallab.store import SCHEMA

    rng = np.random.default_rng(0)
    rows = []

    def add(task, pid, opts, probs):
        for o, p in zip(opts, probs):
            rows.append(
                {
                    "model": "m",
                    "checkpoint": "base",
                    "checkpoint_index": 0,
                    "stage": "base",
                    "step": None,
                    "task": task,
                    "task_version": 1,
                    "prompt_id": pid,
                    "prompt_kind": "raw",
                    "prompt_family": "f",
                    "prompt_text": pid,
                    "option": o,
                    "prob": float(p),
                    "method": "exact",
                    "n_samples": 0,
                    "seed": 0,
                }
            )

    for i in range(6):
        add("t", f"raw-{i:02d}", ["a", "b", "c", "⊥"], [*rng.dirichlet([1, 1, 1]) * 0.9, 0.1])
    add("t", "raw-06", ["a", "b", "c", "⊥"], [0.0, 0.0, 0.0, 1.0])  # all ⊥
    add("solo", "raw-00", ["a", "⊥"], [0.7, 0.3])
    a = analyze(pa.Table.from_pylist(rows, schema=SCHEMA), Thresholds(n_boot=100))
    s = a.state("base", "t", "raw")
    assert s.n_prompts == 7 and s.n_valid == 6 and s.invalid_prompts == ["raw-06"]
    assert s.params["valid_mass"].value == pytest.approx(0.9 * 6 / 7)
    assert "solo" not in a.tasks and not [x for x in a.states if x.task == "solo"]
    text = summary_text(a)
    assert "raw-06" in text and "task 'solo' has 1 option(s)" in text
