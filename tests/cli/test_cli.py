"""`crystallab tasks` and `crystallab measure` through the command line, including resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pyarrow.parquet as pq
import yaml

from crystallab.cli.main import main

REQUIRED_COLUMNS = {
    "model",
    "checkpoint",
    "checkpoint_index",
    "stage",
    "step",
    "task",
    "task_version",
    "prompt_id",
    "prompt_kind",
    "prompt_text",
    "option",
    "prob",
    "method",
    "n_samples",
}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CI="1")
    return subprocess.run(
        [sys.executable, "-m", "crystallab.cli.main", *args], capture_output=True, text=True, env=env, timeout=300
    )


def rows_by_prompt(path):
    t = pq.read_table(path / "distributions.parquet").to_pylist()
    groups = defaultdict(dict)
    for r in t:
        groups[(r["checkpoint"], r["step"], r["task"], r["prompt_id"], r["method"])][r["option"]] = r["prob"]
    return t, groups


def test_tasks_list_and_json(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "number_1_10" in out and "rock_paper_scissors" in out
    assert main(["tasks", "coin_flip", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == "coin_flip" and data["version"] >= 1
    assert {o["label"] for o in data["options"]} == {"heads", "tails"}
    assert (
        len(data["instructions"]) >= 10
        and len(data["contexts"]) >= 20
        and {"family", "text"} <= set(data["contexts"][0])
    )


def test_measure_round_trip_and_resume(tiny_ckpt, tmp_path, capsys):
    model = str(tiny_ckpt("llama", "digits", chat_template=True))
    out = tmp_path / "run"
    args = [
        "measure",
        "--model",
        model,
        "--task",
        "number_1_10,coin_flip",
        "--out",
        str(out),
        "--label",
        "base",
        "--stage",
        "base",
        "--limit",
        "4",
        "--progress",
    ]
    assert main(args) == 0
    table, groups = rows_by_prompt(out)
    assert REQUIRED_COLUMNS <= set(table[0])
    assert len(groups) == 2 * (4 + 4)  # 2 tasks × (4 raw + 4 chat)
    for g in groups.values():
        assert abs(sum(g.values()) - 1) < 1e-6 and "⊥" in g
    assert {r["prompt_kind"] for r in table} == {"raw", "chat"}
    chat = next(r for r in table if r["prompt_kind"] == "chat")
    assert chat["prompt_text"].startswith("<s><|user|>")  # the tokenizer's own template was used
    capsys.readouterr()
    before = {f.name for f in (out / "shards").iterdir()}

    # resume: same command does no new work; a larger limit only measures what is missing
    assert main(args) == 0
    assert {f.name for f in (out / "shards").iterdir()} == before
    assert main([*args[:-2], "6", "--no-progress"]) == 0
    table2, groups2 = rows_by_prompt(out)
    assert len(groups2) == 2 * (6 + 6)
    for k, g in groups.items():  # finished groups kept bit for bit
        assert groups2[k] == g
    err = capsys.readouterr().err
    assert "16 finished prompt(s) kept, 8 to measure" in err and "prompts/s" in err
    assert "measure base … " in err  # one line per stage

    # a second checkpoint appends with the next index
    other = str(tiny_ckpt("llama", "digits", chat_template=True, seed=1))
    assert (
        main(
            [
                "measure",
                "--model",
                other,
                "--task",
                "coin_flip",
                "--out",
                str(out),
                "--label",
                "sft",
                "--stage",
                "sft",
                "--prompts",
                "chat",
                "--limit",
                "3",
            ]
        )
        == 0
    )
    table3, _ = rows_by_prompt(out)
    idx = {(r["checkpoint"], r["checkpoint_index"], r["stage"]) for r in table3}
    assert idx == {("base", 0, "base"), ("sft", 1, "sft")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["label"] for c in manifest["checkpoints"]] == ["base", "sft"]
    # the folder records the resolved configuration of the last run, the manifest every run's
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["label"] == "sft" and written["settings"]["prompts"] == "chat" and written["settings"]["limit"] == 3
    assert manifest["runs"][-1]["config"]["settings"] == written["settings"]
    assert (out / "crystallab.log").exists()
    assert manifest["checkpoints"][0]["info"]["fingerprint"] and manifest["tasks"]["coin_flip"]["version"] >= 1
    assert all("throughput" in r for r in manifest["runs"])


def test_measure_sample_keeps_completions(tiny_ckpt, tmp_path):
    model = str(tiny_ckpt("gpt2", "bpe"))
    out = tmp_path / "s"
    assert (
        main(
            [
                "measure",
                "--model",
                model,
                "--task",
                "coin_flip",
                "--out",
                str(out),
                "--method",
                "sample",
                "--samples",
                "25",
                "--prompts",
                "raw",
                "--limit",
                "2",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    table, groups = rows_by_prompt(out)
    assert {r["method"] for r in table} == {"sample"} and {r["n_samples"] for r in table} == {25}
    for g in groups.values():
        assert abs(sum(g.values()) - 1) < 1e-9
        assert all(abs(v * 25 - round(v * 25)) < 1e-9 for v in g.values())  # counts / N
    samples = pq.read_table(out / "samples").to_pylist()
    assert len(samples) == 2 * 25 and {"completion", "option", "prompt_id"} <= set(samples[0])


# every bad input (one line, exit 2) is covered in tests/test_measure.py


def test_measure_config_file_and_a_typed_flag(tiny_ckpt, tmp_path):
    """`measure --config DIR/config.yaml` repeats a run; a typed flag beats the file."""
    model = str(tiny_ckpt("gpt2", "bpe"))
    out = tmp_path / "c"
    f = tmp_path / "m.yaml"
    f.write_text(
        f"model: '{model}'\ntasks: [coin_flip]\nout: '{out}'\nsettings: {{prompts: raw, limit: 3}}\nlabel: one\n"
    )
    r = cli("measure", "--config", str(f), "--limit", "2")
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["settings"]["limit"] == 2 and written["settings"]["prompts"] == "raw" and written["label"] == "one"
    assert len({r["prompt_id"] for r in pq.read_table(out / "distributions.parquet").to_pylist()}) == 2
    assert len((r.stdout + r.stderr).splitlines()) <= 4 and "Warning" not in r.stderr, r.stderr


def test_help_is_fast_and_light():
    code = (
        "import sys, crystallab, crystallab.cli.main as m; m.build_parser(); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"]
