"""`crystallab lab sweep` end to end on quick toy universes (lab/sweeps.py): every grid point
and replica trained and read, the hysteresis runs continued from the A and B ends, the verdict
computed from the end states, resumable, and `--sizes` giving one sweep per size with the width
against size. The statistics themselves (Σ, dip, hysteresis, planted step vs linear) are tested
in tests/test_transitions.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crystallab.analysis import load_analysis
from crystallab.cli.main import main
from crystallab.lab import universe as U
from crystallab.lab.config import resolve_lab_config
from crystallab.lab.study import Base
from crystallab.lab.sweeps import lambda_grid, mixture, pick_families, run_sweep, sweep_text
from crystallab.store import read_table

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    return U.pretrain(tmp_path_factory.mktemp("universe") / "base", seed=0, steps=120, log=lambda s: None)


def test_sweep_quick_end_to_end_and_resumes(universe, tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = resolve_lab_config("sweep", typed={"out": str(out), "base_dir": str(universe)}, quick=True)
    assert (cfg.grid, cfg.replicas, cfg.rl) == (5, 2, False)
    s = run_sweep(cfg)
    run = s["sizes"][0]
    w = run["sweep"]
    n = w["numbers"]
    assert w["grid"] == lambda_grid(5) and len(w["m"]) == 2 and all(len(row) == 5 for row in w["m"])
    assert w["verdict"] in ("sharp", "gradual") and n["valid_runs"] == sum(x is not None for r in w["m"] for x in r)
    fa, fb = n["families"]
    assert fa != fb and n["d_AB"] > 0
    # the ends: m near -1 at λ = 0 and near +1 at λ = 1 (the SFT data are A's and B's own answers)
    med = w["m_median"]
    assert med[0] < 0 < med[-1]
    assert n["hysteresis_lambda"] in w["grid"] and len(n["ends_from_A"]) == len(n["ends_from_B"]) == 2
    # every run is in the table, read on the held-out chat prompts; the ends' checkpoints kept, the rest deleted
    t = read_table(out / "results")
    labels = set(t.column("checkpoint").to_pylist())
    assert {"base", "mix-0", "mix-0.25", "mix-0.5", "mix-0.75", "mix-1", "hyst-from-A", "hyst-from-B"} <= labels
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["mix-0", "mix-1"]  # base: the shared universe
    assert {p.name for p in (out / "checkpoints" / "mix-0").iterdir()} == {"r0", "r1"}
    # the hysteresis runs never saw other data than the λ_c mixture, and started from the ends
    an = load_analysis(out / "results")
    parents = {c.label: c.parent for c in an.checkpoints}
    assert parents["hyst-from-A"] == "mix-0" and parents["hyst-from-B"] == "mix-1" and parents["mix-0.5"] == "base"
    assert len(an.sweeps) == 1 and an.sweeps[0].m == w["m"]
    page = (out / "results" / "report.html").read_text(encoding="utf-8")
    assert 'id="sweeps"' in page and "How to read a sweep" in page and "hysteresis p" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"][0]["sweep"]["m"] == w["m"]
    text = sweep_text(s)
    assert f"sweep {fa} → {fb}" in text and "m_lin" in text
    # a rerun into the same folder trains nothing and finds the same end states
    again = run_sweep(cfg)
    assert again["sizes"][0]["sweep"]["m"] == w["m"]
    assert again["sizes"][0]["timings"].get("measure", 0) == 0


def test_sweep_sizes(tmp_path, capsys):
    out = tmp_path / "sizes"
    rc = main(
        ["lab", "sweep", "--quick", "--out", str(out), "--sizes", "32,64", "--grid", "3"]
        + ["--sft-steps", "10", "--no-report"]
    )
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["size"] for r in s["sizes"]] == [32, 64]
    assert (out / "size-32" / "results" / "analysis.json").is_file() and (out / "size-64" / "checkpoints").is_dir()
    sc = s["size_scaling"]
    assert set(sc["widths"]) == {"32", "64"} and sc["trend"] in ("narrows", "does not narrow", "cannot tell")
    assert "size scaling:" in capsys.readouterr().out
    cfg = json.loads((out / "size-64" / "checkpoints" / "base" / "config.json").read_text())
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 4


def test_sweep_of_sft_steps(universe, tmp_path, capsys):
    """--control steps: the data fixed at family B's answers, one run per step count on a log grid,
    read against the relaxation null from the base's m to the data's; no hysteresis arm."""
    out = tmp_path / "steps"
    rc = main(
        ["lab", "sweep", "--quick", "--out", str(out), "--base-dir", str(universe), "--control", "steps"]
        + ["--replicas", "2", "--sft-steps", "16"]
    )
    assert rc == 0
    w = json.loads((out / "summary.json").read_text())["sizes"][0]["sweep"]
    n = w["numbers"]
    assert n["control"] == "steps" and n["at"] == 1.0 and n["values"] == [1.0, 2.0, 6.0, 13.0, 32.0]
    assert w["grid"] == pytest.approx(np.log10(n["values"]).tolist())
    assert len(w["m"]) == 2 and all(len(row) == 5 for row in w["m"])
    assert w["verdict"] in ("sharp", "gradual") and w["hysteresis_p"] is None and not n["ends_from_A"]
    # the null runs from the base's own m to the data's (family B's answers: m = +1), monotonically
    assert n["m_end"] == pytest.approx(1.0) and n["m_start"] is not None and n["m_start"] < 1.0
    null = w["m_lin"]
    assert all(b >= a - 1e-9 for a, b in zip(null, null[1:])) and null[0] >= n["m_start"] - 1e-9
    # longer training on B's answers moves the assistant towards B
    med = w["m_median"]
    assert med[-1] > med[0]
    labels = set(read_table(out / "results").column("checkpoint").to_pylist())
    assert {"base", "steps-1", "steps-6", "steps-32"} <= labels and not any(x.startswith("hyst") for x in labels)
    assert not (out / "checkpoints").exists() or not any(
        p.name.startswith("steps") for p in (out / "checkpoints").iterdir()
    )
    page = (out / "results" / "report.html").read_text(encoding="utf-8")
    assert "relaxation" in page and "log10 SFT steps" in page
    text = capsys.readouterr().out
    assert "steps sweep" in text and "null" in text


def test_sweep_of_learning_rate(universe, tmp_path):
    out = tmp_path / "lr"
    rc = main(
        ["lab", "sweep", "--quick", "--out", str(out), "--base-dir", str(universe), "--control", "lr", "--at", "0"]
        + ["--grid", "3", "--sft-steps", "8", "--sft-lr", "1e-3", "--no-report"]
    )
    assert rc == 0
    w = json.loads((out / "summary.json").read_text())["sizes"][0]["sweep"]
    n = w["numbers"]
    assert n["values"] == [3.33e-05, 0.000316, 0.003] and n["at"] == 0.0 and n["m_end"] == pytest.approx(-1.0)
    labels = set(read_table(out / "results").column("checkpoint").to_pylist())
    assert {"lr-3.33e-05", "lr-0.000316", "lr-0.003"} <= labels
    assert w["m_median"][-1] < w["m_median"][0]  # a larger rate moves the assistant further towards A's answers


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grid", "2"], "--grid must be at least 3"),
        (["--control", "steps", "--at", "1.5"], "--at is a mixture λ in [0, 1]"),
        (["--control", "steps", "--sft-steps", "1", "--grid", "3"], "fewer than 3 distinct step counts"),
        (["--sizes", "30"], "multiple of 4"),
        (["--sizes", "32,x"], "comma-separated integers"),
        (["--sizes", "32,32"], "repeats a size"),
        (["--base-model", "builtin:gemma-3-270m", "--task", "number_1_10", "--sizes", "32,64"], "needs the toy"),
    ],
)
def test_sweep_bad_settings_are_one_line(tmp_path, capsys, flags, message):
    assert main(["lab", "sweep", "--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_pick_families_and_mixture():
    b = Base(
        {"a": np.array([0.8, 0.1, 0.1]), "b": np.array([0.6, 0.3, 0.1]), "c": np.array([0.1, 0.1, 0.8])}, list("123")
    )
    assert pick_families(b, None) == ("a", "c")  # the most distant pair
    assert pick_families(b, "c,b") == ("c", "b")
    from crystallab.errors import UserError

    for bad in ("a", "a,a", "a,zz"):
        with pytest.raises(UserError):
            pick_families(b, bad)
    q = mixture(b.families["a"], b.families["c"], 0.5)
    assert np.allclose(q, [0.45, 0.1, 0.45])
