"""The lab: trainer wrappers change parameters, the tracker writes one slice per tracked step,
and the toy pipeline runs end to end with verdicts that depend on the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crystallab.cli.main import main
from crystallab.lab.rl import DPORecipe, GRPORecipe, run_dpo, run_grpo
from crystallab.lab.sft import SFTRecipe, run_sft
from crystallab.lab.tracker import PhaseTracker
from crystallab.measuring import MeasureConfig, MeasureSettings
from crystallab.store import read_table
from crystallab.suite import load_task


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def changed(before: Path, after: Path) -> list[str]:
    a, b = weights(before), weights(after)
    assert set(a) == set(b)
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt("llama", "digits", chat_template=True, seed=5)


@pytest.mark.parametrize("lora", [False, True])
def test_sft_changes_parameters(tiny, tmp_path, lora):
    task = load_task("number_1_10")
    out = run_sft(
        SFTRecipe(
            model=str(tiny),
            out=str(tmp_path / "sft"),
            instructions=task.instruction_texts,
            options=task.labels,
            answers=[0.1] * 10,
            n_examples=32,
            steps=3,
            batch_size=8,
            lora=lora,
        ),
        log=lambda s: None,
    )
    diff = changed(tiny, out)
    assert diff, "SFT changed no parameter"
    if lora:  # merged LoRA touches the adapted linear layers, never the embeddings
        assert all("embed" not in k for k in diff)


def test_grpo_changes_parameters(tiny, tmp_path):
    task = load_task("number_1_10")
    # 8 completions per prompt and 2 prompts per step: an update needs rewards that differ within a group,
    # which 4 completions of an untrained model often do not give
    out = run_grpo(
        GRPORecipe(
            model=str(tiny),
            out=str(tmp_path / "rl"),
            task=task,
            rewards=("validity", "diversity"),
            steps=2,
            num_generations=8,
            prompts_per_step=2,
            learning_rate=1e-2,
        ),
        log=lambda s: None,
    )
    assert changed(tiny, out)


def test_dpo_changes_parameters(tiny, tmp_path):
    task = load_task("number_1_10")
    out = run_dpo(
        DPORecipe(
            model=str(tiny), out=str(tmp_path / "dpo"), task=task, chosen={"7"}, n_pairs=16, steps=2, batch_size=4
        ),
        log=lambda s: None,
    )
    assert changed(tiny, out)


def test_tracker_writes_one_slice_per_tracked_step(tiny, tmp_path):
    task = load_task("coin_flip")
    results = tmp_path / "results"
    tracker = PhaseTracker(
        MeasureConfig(
            model="run",
            tasks=["coin_flip"],
            out=str(results),
            label="sft",
            stage="sft",
            settings=MeasureSettings(limit=3),
        ),
        every=2,
    )
    run_sft(
        SFTRecipe(
            model=str(tiny),
            out=str(tmp_path / "sft"),
            instructions=task.instruction_texts,
            options=task.labels,
            answers=[0.9, 0.1],
            n_examples=32,
            steps=5,
            batch_size=8,
            callbacks=[tracker],
        ),
        log=lambda s: None,
    )
    assert not (results / "distributions.parquet").exists()  # left to whoever analyses the run
    rows = read_table(results).to_pylist()  # the shards, the source of truth
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 2, 4, 5]  # start, every 2 steps, and the end
    for s in steps:
        prompts = {r["prompt_id"] for r in rows if r["step"] == s}
        assert len(prompts) == 6  # 3 raw + 3 chat prompts at every tracked step
        assert len([r for r in rows if r["step"] == s]) == 6 * 3  # heads, tails, ⊥


def test_bad_rewards_are_user_errors():
    from crystallab.errors import UserError
    from crystallab.lab.rl import make_rewards

    task = load_task("coin_flip")
    with pytest.raises(UserError, match="unknown reward"):
        make_rewards(task, ["validty"])
    with pytest.raises(UserError, match="target option set"):
        make_rewards(task, ["target"])


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    """One quick toy universe shared by the pipeline tests (pretraining is the slow part)."""
    from crystallab.lab.universe import pretrain

    return pretrain(tmp_path_factory.mktemp("universe") / "base", seed=0, steps=120, log=lambda s: None)


def test_demo_quick_end_to_end(universe, tmp_path, capsys):
    """The demo is the non-circular story: generic SFT (replicated), GRPO under a seed-blind
    reward, verdicts read on held-out prompts, whatever they turn out to be."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--base-dir", str(universe)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "report.html" in printed and "held-out" in printed and "nucleation" in printed and "escape" in printed
    stages = [line.split(" … ")[0] for line in captured.err.splitlines() if " … " in line]
    replicas = ["sft (replica 1/2)", "rl (replica 1/2)", "sft (replica 2/2)", "rl (replica 2/2)"]
    assert stages == ["measure base", *replicas, "analyze", "report"]  # the universe was reused: no pretrain
    assert yaml.safe_load((out / "config.yaml").read_text())["base_dir"] == str(universe)
    s = json.loads((out / "summary.json").read_text())
    u = s["universes"][0]
    assert u["base"]["raw_state"] == "liquid"  # the planted universe is liquid
    assert max(u["base"]["planted_js_distance"].values()) < 0.35
    (a,) = u["arms"]
    assert a["label"] == "sft" and a["mentions"] == "known" and a["info"]["reward"] == "utility"
    assert a["verdicts"]["nucleation"]["value"] in ("holds", "fails", "inconclusive")
    assert len(a["chat"]["heldout"]["replica_states"]) == 2 and a["escape"]["replicas"] == 2
    for ck in ("sft", "rl"):
        for r in (0, 1):
            assert (out / "checkpoints" / ck / f"r{r}" / "model.safetensors").exists()
    analysis = json.loads((out / "results" / "analysis.json").read_text())
    assert {d["checkpoint"] for d in analysis["dynamics"]} == {"sft", "rl"}
    assert (out / "results" / "report.html").exists() and (out / "arms" / "sft" / "report.html").exists()


def test_sft_that_keeps_base_diversity_fails_nucleation(universe, tmp_path):
    from crystallab.lab.experiments import LabConfig, run_lab

    s = run_lab(
        LabConfig.quick(
            out=str(tmp_path / "diverse"),
            sft_data="diverse",
            rl=False,
            report=False,
            sft_steps=40,
            base_dir=str(universe),
        ),
        log=lambda s: None,
    )
    assert s["verdicts"]["nucleation"] == "fails", s["why"]


def test_forced_seed_outside_reports_whether_rl_escaped(universe, tmp_path, capsys):
    out = tmp_path / "forced"
    args = [
        "lab",
        "forced-seed",
        "--seed-from",
        "outside",
        "--quick",
        "--out",
        str(out),
        "--base-dir",
        str(universe),
        "--no-report",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "can RL escape the forced seed's support?" in printed
    s = json.loads((out / "summary.json").read_text())
    assert (
        s["forced"]["kind"] == "outside" and s["forced"]["nearest_base_js_distance"] > 0.2
    )  # really outside the repertoire
    assert set(s["rl"]["target"]).isdisjoint(s["rl"]["sft_support"])  # rewarded only outside the SFT support
    value, lo, hi = s["settling"]["retention"]
    assert 0.0 <= lo <= value <= hi <= 1.0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["sft_data"] == "outside" and written["rl_target"] == "outside-support"
    assert s["experiment"] == "forced-seed"


def test_lab_config_file(tmp_path, capsys):
    from crystallab.lab.experiments import LabConfig

    f = tmp_path / "c.yaml"
    f.write_text(
        "base_model: builtin:gemma-3-270m\ntask: number_1_10\nsft_data: base-prompt\nlora: true\n"
        "rl_rewards: [validity, target]\n"
    )
    cfg = LabConfig.from_yaml(str(f), out="x")
    assert cfg.lora and cfg.rl_rewards == ("validity", "target") and cfg.out == "x"
    f.write_text("sft_stepz: 3\n")
    assert main(["lab", "forced-seed", "--config", str(f)]) == 2
    assert "did you mean 'sft_steps'" in capsys.readouterr().err


def test_shipped_lab_configs_parse():
    from crystallab.lab.experiments import LabConfig

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert {c.name for c in configs} >= {"gemma-270m-cpu.yaml", "olmo2-1b-gpu.yaml"}
    for c in configs:
        cfg = LabConfig.from_yaml(str(c))
        assert cfg.base_model
        if "study" in c.name or "sweep" in c.name:  # non-circular studies and sweeps: no SFT data setting
            cfg.validate()
            assert "sft_data" not in LabConfig.read_yaml(str(c))
        else:  # a positive control
            cfg.validate_control()
            assert cfg.sft_data == "base-prompt"


def test_lab_config_from_yaml_checks_types(tmp_path):
    from crystallab.errors import UserError
    from crystallab.lab.experiments import LabConfig

    f = tmp_path / "c.yaml"
    f.write_text("sft_steps: many\n")
    with pytest.raises(UserError, match="'sft_steps': expected a whole number"):
        LabConfig.from_yaml(str(f))


# ---- quiet by default (issue 12, deliverable 9) ------------------------------------------------


def crystallab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, CI="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(
        [sys.executable, "-m", "crystallab.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_demo_is_quiet_and_logs_to_the_run_folder(tmp_path):
    """One line per stage, the summary, no library chatter; the trainers' logs in RUN/train.log."""
    out = tmp_path / "demo"
    r = crystallab("demo", "--quick", "--no-report", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert len(text.splitlines()) <= 40, text
    assert "FutureWarning" not in text and "{'loss'" not in text and "Map:" not in text and "it/s]" not in text, text
    stages = [line.split(" … ")[0] for line in r.stderr.splitlines() if " … " in line]
    assert stages[:2] == ["pretrain", "measure base"] and stages[-1] == "analyze", r.stderr
    assert stages[2:4] == ["sft (replica 1/2)", "rl (replica 1/2)"], r.stderr
    log = (out / "train.log").read_text()
    for name in ("pretrain", "sft", "rl"):
        assert f"crystallab.train INFO: {name} step" in log and "'loss'" in log
    assert (out / "config.yaml").exists() and json.loads((out / "summary.json").read_text())["experiment"] == "demo"


def test_verbose_prints_the_trainer_logs(universe, tmp_path):
    out = tmp_path / "v"
    r = crystallab(
        "-v",
        "demo",
        "--quick",
        "--no-report",
        "--replicas",
        "1",
        "--sft-steps",
        "4",
        "--rl-steps",
        "2",
        "--track-every",
        "2",
        "--base-dir",
        str(universe),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "crystallab.train: sft step" in r.stderr and "'loss'" in r.stderr
    assert "sft step" in (out / "train.log").read_text()
