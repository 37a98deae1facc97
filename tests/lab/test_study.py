"""The non-circular experiments end to end on a quick toy universe (lab/study.py): each command
runs, writes its folder, and its verdicts come from the measurements, not from its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from crystallab.cli.main import main
from crystallab.lab import universe as U
from crystallab.lab.config import LabConfig, resolve_lab_config
from crystallab.lab.study import escape_of, random_targets, run_study, seed_support, study_text

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    """One quick toy universe (v2) shared by the experiments (pretraining is the slow part)."""
    return U.pretrain(tmp_path_factory.mktemp("universe") / "base", seed=0, steps=120, log=lambda s: None)


def quick(universe: Path, out: Path, experiment: str, **kw) -> LabConfig:
    typed = {"out": str(out), "base_dir": str(universe), "report": False, **kw}
    return resolve_lab_config(experiment, typed=typed, quick=True)


def arm(s: dict, label: str) -> dict:
    return next(a for a in s["universes"][0]["arms"] if a["label"] == label)


def test_toy_universe_v2_design():
    names = [f.name for f in U.FAMILIES]
    assert len(names) >= 7 and "qa" in names
    for f in U.FAMILIES:
        assert f.heldout and f.heldout_instructions and len(f.instructions) >= 3
        assert not set(f.heldout) & set(f.templates)
    task = U.task_dict()
    held = [c for c in task["contexts"] if c["split"] == "heldout"]
    assert {c["family"] for c in held} == set(names)
    assert {i["family"] for i in task["instructions"]} == set(names)  # chat families mirror the raw ones
    assert "User:" not in " ".join(U.corpus(300, seed=0))  # the assistant format only comes from SFT


def test_split_task_marks_every_family():
    from crystallab.suite import load_task, task_from_dict

    t = task_from_dict(U.split_task(load_task("number_1_10").to_json()))
    for fams in (t.contexts, t.instructions):
        by: dict[str, set] = {}
        for x in fams:
            by.setdefault(x.family, set()).add(x.split)
        assert all(v == {"train", "heldout"} for v in by.values()), by


def test_seed_support_and_escape():
    q = np.array([0.5, 0.3, 0.15, 0.05])
    assert seed_support(q, option=1).tolist() == [0, 2]
    e = escape_of(q, q, option=3)
    assert e["delta"] == 0 and e["m_before"] == e["m_after"] == 0.05


def test_random_targets_span_entropy():
    from crystallab.lab.study import Base

    base = Base({f.name: f.planted for f in U.FAMILIES}, U.OPTIONS)
    ts = random_targets(base, 5, seed=0)
    h = [float(-(t * np.log(t)).sum()) for t in ts]
    assert h == sorted(h) or max(h) - min(h) > 0.8  # low to high entropy
    assert base.nearest(ts[0])[1] > 0.3  # the first is far from every basin


def test_generic_sft_end_to_end(universe, tmp_path, capsys):
    out = tmp_path / "g"
    args = ["lab", "generic-sft", "--quick", "--out", str(out), "--base-dir", str(universe), "--replicas", "2"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "generic-none:" in printed.out and "generic-known:" in printed.out and "held-out" in printed.out
    s = json.loads((out / "summary.json").read_text())
    u = s["universes"][0]
    assert u["base"]["raw_state"] == "liquid" and len(u["base"]["planted_js_distance"]) == len(U.FAMILIES)
    for label in ("generic-none", "generic-known"):
        a = arm(s, label)
        ho = a["chat"]["heldout"]
        # a held-out ensemble below v_min is undefined, never a crystal; else one state per replica
        assert (ho["state"] == "undefined" and ho["valid_mass"][0] < 0.5) or len(ho["replica_states"]) == 2, ho
        assert a["verdicts"]["nucleation"]["value"] in ("holds", "fails", "inconclusive")
        assert (out / "arms" / label / "analysis.json").exists()
    none, known = arm(s, "generic-none"), arm(s, "generic-known")
    assert none["option_mentions"]["share_with_mention"] == 0 and none["option_mentions"]["dist"] is None
    assert known["option_mentions"]["share_with_mention"] > 0.1
    assert known["info"]["mentions_d_nearest"] > 0.2  # the known mentions are far from every basin
    if known["chat"]["heldout"]["state"] != "undefined":
        assert known["d_mentions"][0] is not None
    if known.get("nucleation"):
        assert known["nucleation"]["attraction"] is not None  # the mentions are training answers: A applies
    # the rerun file records only what the experiment reads
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "replicas" in written and "sft_data" not in written and "rl_target" not in written


def test_held_out_prompts_never_reach_a_training_dataset(universe, tmp_path):
    """Asserted on the datasets the trainers were given (RUN/data/*.jsonl)."""
    out = tmp_path / "e"
    s = run_study(quick(universe, out, "rl-escape", m0="0.001,0.3", replicas=2), "rl-escape")
    files = sorted((out / "data").glob("*.jsonl"))
    assert {f.name.split("-")[0] for f in files} == {"sft", "rl"}
    text = "\n".join(f.read_text() for f in files)
    held = [i for f in U.FAMILIES for i in f.heldout_instructions] + [t for f in U.FAMILIES for t in f.heldout]
    seen = [i for f in U.FAMILIES for i in f.instructions]
    assert not [h for h in held if h in text]
    assert all(i in text for i in seen)  # the check can see an instruction when one is there
    # a seed-blind reward (random utility) escapes more with m0 = 0.3 than with m0 = 0.001
    lo, hi = arm(s, "sft-m0=0.001"), arm(s, "sft-m0=0.3")
    assert hi["escape"]["delta"][0] > lo["escape"]["delta"][0], (lo["escape"], hi["escape"])
    assert hi["escape"]["m_before"][0] > lo["escape"]["m_before"][0]
    for a in (lo, hi):
        assert set(a["escape_null"]) == {"lr×1", "lr×10", "lr×100"} and a["settling"]["support"]
    assert "bandit null" in study_text(s)


def test_random_target_far_from_every_basin_goes_to_the_data(universe, tmp_path):
    s = run_study(
        quick(universe, tmp_path / "rt", "random-target", targets=1, replicas=2, sft_steps=60), "random-target"
    )
    a = arm(s, "target-0")
    assert a["info"]["d_nearest"] > 0.3
    assert a["nucleation"]["attraction"][0] <= 0, a["nucleation"]  # trained hard, it lands on its data
    assert len(a["attraction_t"]["steps"]) >= 4 and a["attraction_t"]["A"][-1] <= 0


def test_erasure_and_diverse_sft_keeps_the_chat_liquid(universe, tmp_path):
    s = run_study(quick(universe, tmp_path / "er", "erasure", replicas=2, sft_steps=40), "erasure")
    assert [a["label"] for a in s["universes"][0]["arms"]] == ["generic", "seed", "diverse"]
    assert arm(s, "diverse")["chat"]["heldout"]["state"] == "liquid"
    for a in s["universes"][0]["arms"]:
        raw = a["raw"]["all"]
        assert raw["phi"] is not None and raw["n_basins"] is not None


def test_unused_settings_are_one_line(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("sft_data: planted\n")
    assert main(["lab", "generic-sft", "--config", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "not read by `crystallab lab generic-sft`" in capsys.readouterr().err
    assert main(["lab", "rl-escape", "--m0", "0,0.3", "--out", str(tmp_path / "y")]) == 2
    assert "(0, 1)" in capsys.readouterr().err
