"""Phases, transitions and verdicts on synthetic ladders with planted answers."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from crystallab.cli.main import main
from crystallab.phases import Thresholds, analyze
from crystallab.store import SCHEMA
from synthetic import SEED_PROMPT, ladder, write


def run(kind: str, **kw):
    return analyze(pa.Table.from_pylist(ladder(kind, **kw), schema=SCHEMA), Thresholds(n_boot=300, n_perm=300))


def verdict(a, claim, task="number_1_10"):
    return a["verdicts"][task][claim]["value"]


def test_planted_ladder_holds_and_names_the_seed():
    a = run("planted")
    states = [s["state"] for s in a["states"]]
    assert states == ["liquid", "crystal", "crystal"]
    assert [verdict(a, c) for c in ("liquid", "nucleation", "settling")] == ["holds", "holds", "holds"]
    t0 = a["transitions"][0]
    assert t0["seed"]["prompt_id"] == SEED_PROMPT and t0["seed"]["confirmed"] and t0["seed"]["p_value"] < 0.01
    assert t0["kind"] == "nucleation" and a["transitions"][1]["kind"] == "settling"
    assert set(t0["collapse"]) >= {"diversity", "entropy_norm"} and t0["collapse"]["holds"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_seed_named_across_noise(seed):
    a = run("planted", seed=seed)
    assert a["transitions"][0]["seed"]["prompt_id"] == SEED_PROMPT


def test_rl_leaving_the_support_fails_settling():
    a = run("escape")
    assert verdict(a, "nucleation") == "holds" and verdict(a, "settling") == "fails"
    assert a["verdicts"]["number_1_10"]["settling"]["numbers"]["retention"] < 0.9


def test_no_collapse_fails_nucleation():
    a = run("no-collapse")
    assert verdict(a, "nucleation") == "fails"
    assert a["transitions"][0]["collapse"]["holds"] is False


def test_all_other_mass_is_inconclusive_not_dropped():
    rows = ladder("planted") + ladder("dead", task="coin_dead")
    a = analyze(pa.Table.from_pylist(rows, schema=SCHEMA), Thresholds(n_boot=200, n_perm=200))
    assert "coin_dead" in a["verdicts"]
    assert {v["value"] for v in a["verdicts"]["coin_dead"].values()} == {"inconclusive"}
    assert {s["state"] for s in a["states"] if s["task"] == "coin_dead"} == {"undefined"}
    assert verdict(a, "nucleation") == "holds"  # the healthy task next to it is unaffected


def test_dynamics_over_steps():
    import numpy as np

    from synthetic import CLUSTERS, SEED, jitter, rows_for

    rng = np.random.default_rng(0)
    rows = []
    for k, step in enumerate(range(0, 100, 10)):
        w = 1 / (1 + np.exp(-(step - 45) / 5))  # the chat prompts crystallise around step 45
        chat = [jitter((1 - w) * CLUSTERS[i % 4] + w * SEED, rng, 3000) for i in range(8)]
        rows += rows_for("run", 0, "sft", "number_1_10", [jitter(CLUSTERS[i % 4], rng) for i in range(8)], chat, step=step)
    a = analyze(pa.Table.from_pylist(rows, schema=SCHEMA), Thresholds(n_boot=200, n_perm=200))
    (d,) = a["dynamics"]
    assert d["steps"] == list(range(0, 100, 10)) and len(d["series"]["diversity"]) == 10
    assert abs(d["transition_step"] - 45) <= 10 and d["sharpness"] > 0
    assert d["series"]["diversity"][0][0] > d["series"]["diversity"][-1][0]


def test_analyze_cli_writes_json(tmp_path, capsys):
    d = write(tmp_path / "r", ladder("planted"))
    th = tmp_path / "th.yaml"
    th.write_text("n_boot: 200\nn_perm: 200\n")
    assert main(["analyze", str(d), "--thresholds", str(th)]) == 0
    out = capsys.readouterr().out
    assert "nucleation" in out and "holds" in out
    a = json.loads((d / "analysis.json").read_text())
    assert a["thresholds"]["n_boot"] == 200 and a["verdicts"]["number_1_10"]["liquid"]["value"] == "holds"
    st = a["states"][0]["sets"]["raw"]["params"]
    assert all(len(v) == 3 for v in st.values())
    th.write_text("tua: 0.2\n")
    assert main(["analyze", str(d), "--thresholds", str(th)]) == 2
    assert "did you mean 'tau'" in capsys.readouterr().err


def test_mixed_task_versions_are_refused(tmp_path):
    rows = ladder("planted")
    for r in rows:
        if r["checkpoint"] == "rl":
            r["task_version"] = 2
    with pytest.raises(Exception, match="different versions"):
        analyze(pa.Table.from_pylist(rows, schema=SCHEMA))


def test_sampled_rows_get_wider_intervals_than_exact():
    """Intervals of sampled rows include the sampling noise: at N=20 they are wider than the
    same distributions measured exactly."""
    rows = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    exact = analyze(pa.Table.from_pylist(rows, schema=SCHEMA), Thresholds(n_boot=300, n_perm=100))
    for r in rows:
        r["method"], r["n_samples"] = "sample", 20
    sampled = analyze(pa.Table.from_pylist(rows, schema=SCHEMA), Thresholds(n_boot=300, n_perm=100))
    assert sampled["method"] == "sample"
    e = exact["states"][0]["sets"]["raw"]["params"]["entropy_norm"]
    s = sampled["states"][0]["sets"]["raw"]["params"]["entropy_norm"]
    assert e[0] == s[0] and (s[2] - s[1]) > (e[2] - e[1])
