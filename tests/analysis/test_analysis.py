"""The analysis on synthetic tables with planted truths (SCIENCE.md v2): every verdict has a known
right answer, and each test answers one failure of version 1."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from crystallab.analysis import Analysis, Thresholds, analyze, analyze_dir, load_analysis
from crystallab.cli.main import main
from crystallab.errors import UserError

from synthetic import CHAT_FAMILIES, FAMILIES, SEED, jitter, ladder, rows_for, table, write

FAST = Thresholds(n_boot=150)


def run(kind: str, **kw) -> Analysis:
    return analyze(table(ladder(kind, **kw)), FAST)


def verdicts(an: Analysis, task: str = "number_1_10") -> dict[str, str]:
    return {k: v.value for k, v in an.verdicts[task].items()}


def test_planted_ladder_holds_and_names_the_seed_family():
    an = run("planted")
    assert verdicts(an) == {"liquid": "holds", "nucleation": "holds", "settling": "holds"}
    nuc = an.verdicts["number_1_10"]["nucleation"]
    assert nuc.numbers["k_star"] == SEED and nuc.numbers["inside"]
    assert an.state("base", "number_1_10", "raw").state == "liquid"
    assert an.state("sft", "number_1_10", "chat").state == "crystal"
    # every figure behind a verdict has an interval
    for key in ("d_k_star", "z_k_star", "margin"):
        v, lo, hi = nuc.numbers[key]
        assert lo is not None and hi is not None and lo <= v <= hi, key
    s = an.verdicts["number_1_10"]["settling"].numbers
    for key in ("retention", "rho", "redistribution"):
        v, lo, hi = s[key]
        assert lo <= v <= hi, key


@pytest.mark.parametrize("seed", [1, 2])
def test_planted_seed_named_across_noise(seed):
    an = run("planted", seed=seed)
    assert an.verdicts["number_1_10"]["nucleation"].numbers["k_star"] == SEED


def test_broad_seed_crystallises():
    """v1 needed the entropy to fall, so a broad seed could never crystallise."""
    an = run("broad")
    chat = an.state("sft", "number_1_10", "chat")
    assert chat.params["h"].value > 0.8  # a broad answer at every prompt ...
    assert chat.state == "crystal"  # ... and still one basin
    assert verdicts(an)["nucleation"] == "holds"


def test_two_option_task_uses_the_basin_test():
    """v1's seed-match null could never confirm a 2-option task; v2 says seed_p is not testable
    and decides on the basin test."""
    rng = np.random.default_rng(0)
    opts = ["heads", "tails"]
    fams = {"qa": np.array([0.8, 0.2]), "story": np.array([0.2, 0.8]), "game": np.array([0.5, 0.5])}
    base = rows_for(
        "base",
        0,
        "coin",
        {f: [jitter(p, rng, 2000) for _ in range(3)] for f, p in fams.items()},
        {f: [jitter(np.array([0.5, 0.5]), rng, 50) for _ in range(3)] for f in CHAT_FAMILIES},
        options=opts,
    )
    sft = rows_for(
        "sft",
        1,
        "coin",
        {},
        {f: [jitter(fams["qa"], rng, 5000) for _ in range(3)] for f in CHAT_FAMILIES},
        options=opts,
    )
    an = analyze(table(base + sft), FAST)
    nuc = an.verdicts["coin"]["nucleation"]
    assert nuc.numbers["seed_p_testable"] is False and nuc.numbers["relabellings"] == 1
    assert nuc.value == "holds" and nuc.numbers["k_star"] == "qa"
    assert "not testable" in nuc.why


def test_rl_that_moves_nothing_is_inconclusive():
    an = run("frozen")
    s = an.verdicts["number_1_10"]["settling"]
    assert s.value == "inconclusive" and "did not move" in s.why


def test_rl_escape_fails_settling_and_uniform_child_has_no_excess_retention():
    assert verdicts(run("escape"))["settling"] == "fails"
    rows = ladder("planted")
    rng = np.random.default_rng(5)
    rows = [r for r in rows if r["checkpoint"] != "rl"]
    rows += rows_for(
        "rl",
        2,
        "number_1_10",
        {},
        {f: [jitter(np.full(10, 0.1), rng, 1e5) for _ in range(3)] for f in CHAT_FAMILIES},
        valid=0.99,
    )
    an = analyze(table(rows), FAST)
    rho = an.verdicts["number_1_10"]["settling"].numbers["rho"][0]
    assert abs(rho) < 0.02 and an.verdicts["number_1_10"]["settling"].value == "fails"


def test_chat_framings_that_keep_their_own_distributions_stay_liquid():
    an = run("no-collapse")
    assert an.state("sft", "number_1_10", "chat").state == "liquid"
    nuc = an.verdicts["number_1_10"]["nucleation"]
    assert nuc.value == "fails" and "liquid" in nuc.why


def test_all_mass_on_other_is_inconclusive_not_dropped():
    an = run("dead")
    assert set(verdicts(an).values()) == {"inconclusive"}
    st = an.state("base", "number_1_10", "raw")
    assert st.state == "undefined" and st.n_valid == 0 and len(st.invalid_prompts) == st.n_prompts
    assert any("left out" in w for w in an.warnings)


def test_stage_names_are_never_read():
    """Rename every stage to 'other' (and shuffle the labels' names): the same analysis."""
    rows = ladder("planted")
    a = analyze(table(rows), FAST)
    for r in rows:
        r["stage"] = "other"
    b = analyze(table(rows), FAST)
    assert a.to_json() == b.to_json()
    assert "stage" not in json.dumps(a.to_json())
    # a ladder listed root-last is read from its parent graph
    c = analyze(table(rows), FAST, parents={"sft": "base", "rl": "sft", "base": None})
    assert verdicts(c) == verdicts(a) and c.root == "base"


def test_parent_graph_picks_root_and_edges():
    rows = ladder("planted")
    an = analyze(table(rows), FAST, parents={"base": None, "sft": "base", "rl": "base"})
    assert {(t.parent, t.child) for t in an.transitions} == {("base", "sft"), ("base", "rl")}
    assert an.verdicts["number_1_10"]["settling"].value == "inconclusive"  # sft has no descendant


def test_few_valid_prompts_are_undefined():
    rows = ladder("planted")
    for r in rows:  # keep two valid chat prompts at the child
        if r["checkpoint"] == "sft" and r["prompt_kind"] == "chat" and r["prompt_id"] not in ("chat-00", "chat-01"):
            r["prob"] = 1.0 if r["option"] == "⊥" else 0.0
    an = analyze(table(rows), FAST)
    assert an.state("sft", "number_1_10", "chat").state == "undefined"
    assert an.verdicts["number_1_10"]["nucleation"].value == "inconclusive"


def test_attraction_index_separates_fitting_from_nucleation():
    """With the SFT answers known: landing on the data (far from the basin) gives A <= 0 and fails."""
    rows = ladder("planted")
    t_far = {o: float(p) for o, p in zip([str(i) for i in range(1, 11)], FAMILIES["code"])}
    t_near = {o: 0.5 * float(a) + 0.5 * 0.1 for o, a in zip([str(i) for i in range(1, 11)], FAMILIES[SEED])}
    pulled = analyze(table(rows), FAST, train_answers={"sft": {"number_1_10": t_near}})
    nuc = pulled.verdicts["number_1_10"]["nucleation"]
    assert nuc.numbers["attraction"][1] > 0 and nuc.value == "holds"
    # the child sits exactly on its training data: A < 0
    rng = np.random.default_rng(1)
    rows2 = [r for r in rows if r["checkpoint"] != "sft" and r["checkpoint"] != "rl"]
    rows2 += rows_for(
        "sft",
        1,
        "number_1_10",
        {},
        {
            f: [jitter(FAMILIES["code"] * 0.5 + FAMILIES[SEED] * 0.5, rng, 3000) for _ in range(3)]
            for f in CHAT_FAMILIES
        },
        valid=0.95,
    )
    t_mix = {
        o: float(0.5 * a + 0.5 * b) for o, a, b in zip([str(i) for i in range(1, 11)], FAMILIES["code"], FAMILIES[SEED])
    }
    fitted = analyze(table(rows2), FAST, train_answers={"sft": {"number_1_10": t_mix}})
    nuc = fitted.verdicts["number_1_10"]["nucleation"]
    assert nuc.numbers["attraction"][0] < 0 and nuc.value == "fails"
    assert t_far  # the far target is the family the data would have pulled to


def test_replicas_need_a_common_seed():
    """Five replicas of SFT, three into qa and two into list: 'nucleation without a common seed'."""
    rng = np.random.default_rng(2)
    rows = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    for rep, fam in enumerate(["qa", "qa", "qa", "list", "list"]):
        rows += rows_for(
            "sft",
            1,
            "number_1_10",
            {},
            {f: [jitter(FAMILIES[fam], rng, 3000) for _ in range(3)] for f in CHAT_FAMILIES},
            valid=0.95,
            replica=rep,
        )
    an = analyze(table(rows), FAST)
    nuc = an.verdicts["number_1_10"]["nucleation"]
    assert nuc.value == "fails" and "without a common seed" in nuc.why
    assert nuc.numbers["k_star_counts"] == {"qa": 3, "list": 2}
    same = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    for rep in range(5):
        same += rows_for(
            "sft",
            1,
            "number_1_10",
            {},
            {f: [jitter(FAMILIES["qa"], rng, 3000) for _ in range(3)] for f in CHAT_FAMILIES},
            valid=0.95,
            replica=rep,
        )
    ok = analyze(table(same), FAST)
    assert ok.verdicts["number_1_10"]["nucleation"].value == "holds"
    assert ok.state("sft", "number_1_10", "chat").replicas == 5


def test_heldout_prompts_decide_the_verdict():
    """Train framings memorised onto the seed, held-out framings still liquid: the verdict reads
    the held-out ensemble and fails, while the train ensemble alone would be crystal."""
    rng = np.random.default_rng(4)
    rows = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    split = {"plain": "train", "game": "train", "code": "heldout", "person": "heldout", "story": "heldout"}
    other = {"code": "code", "person": "list", "story": "form"}
    chat = {
        f: [jitter(FAMILIES[SEED], rng, 3000) for _ in range(3)]
        if split[f] == "train"
        else [jitter(FAMILIES[other[f]], rng, 3000) for _ in range(3)]
        for f in CHAT_FAMILIES
    }
    rows += rows_for("sft", 1, "number_1_10", {}, chat, valid=0.95, split=split)
    an = analyze(table(rows), FAST)
    assert an.state("sft", "number_1_10", "chat", "train").state == "crystal"
    assert an.state("sft", "number_1_10", "chat", "heldout").state == "liquid"
    assert an.verdicts["number_1_10"]["nucleation"].value == "fails"


def test_holm_across_tasks():
    rows = ladder("planted", task="a") + ladder("planted", task="b", seed=1)
    an = analyze(table(rows), FAST)
    ps = [an.verdicts[t]["nucleation"] for t in ("a", "b")]
    assert all(v.p_holm is not None and v.p_holm >= v.p_value for v in ps)


def test_dynamics_along_a_tracked_run():
    """A child of the root tracked every few steps: its d_k*(t) follows a planted logistic."""
    rng = np.random.default_rng(0)
    rows = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    steps = [0, 1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 128]
    start = FAMILIES["game"]
    for rep in range(3):
        for s in steps:
            w = 1 / (1 + np.exp(-(s - 48) / 4))
            p = (1 - w) * start + w * FAMILIES[SEED]
            rows += rows_for(
                "sft",
                1,
                "number_1_10",
                {},
                {f: [jitter(p, rng, 5000) for _ in range(3)] for f in CHAT_FAMILIES},
                valid=0.95,
                step=s,
                replica=rep,
            )
    an = analyze(table(rows), FAST)
    (d,) = an.dynamics
    assert d.steps == steps and d.coordinate.startswith("d_k*") and SEED in d.coordinate
    assert d.test["verdict"] == "sharp" and abs(d.test["t0"] - 48) < 8
    assert len(d.replica_series) == 3 and d.chi[0] is not None
    assert d.series[f"d[{SEED}]"][0] > d.series[f"d[{SEED}]"][-1]


def test_sampled_rows_get_wider_intervals_than_exact():
    rows = [r for r in ladder("planted") if r["checkpoint"] == "base"]
    exact = analyze(table(rows), FAST)
    for r in rows:
        r["method"], r["n_samples"] = "sample", 20
    sampled = analyze(table(rows), FAST)
    e = exact.state("base", "number_1_10", "raw").params["h"]
    s = sampled.state("base", "number_1_10", "raw").params["h"]
    assert sampled.method == "sample" and e.value == s.value
    assert (s.hi - s.lo) > (e.hi - e.lo)


def test_analysis_json_round_trips_and_cli(tmp_path, capsys):
    d = write(tmp_path / "r", ladder("planted"))
    th = tmp_path / "th.yaml"
    th.write_text("n_boot: 100\n")
    assert main(["analyze", str(d), "--thresholds", str(th)]) == 0
    out = capsys.readouterr().out
    assert "nucleation holds" in " ".join(out.split()) and "analysis.json" in out
    raw = json.loads((d / "analysis.json").read_text())
    assert raw["version"] == 2 and raw["thresholds"]["n_boot"] == 100
    an = load_analysis(d)
    assert an.to_json() == raw
    assert an.verdicts["number_1_10"]["liquid"].value == "holds"
    th.write_text("epss: 0.2\n")
    assert main(["analyze", str(d), "--thresholds", str(th)]) == 2
    assert "did you mean 'eps'" in capsys.readouterr().err
    (d / "analysis.json").write_text('{"version": 1}')
    with pytest.raises(UserError, match="rerun"):
        load_analysis(d)


def test_mixed_task_versions_are_refused():
    rows = ladder("planted")
    for r in rows:
        if r["checkpoint"] == "rl":
            r["task_version"] = 2
    with pytest.raises(UserError, match="different versions"):
        analyze(table(rows))


def test_analyze_dir_reads_parents_and_answers_from_the_manifest(tmp_path):
    d = write(tmp_path / "r", ladder("planted"))
    m = json.loads((d / "manifest.json").read_text())
    for c in m["checkpoints"]:
        c["info"]["parent"] = {"base": None, "sft": "base", "rl": "base"}[c["label"]]
    (d / "manifest.json").write_text(json.dumps(m))
    an = analyze_dir(d, FAST)
    assert {(t.parent, t.child) for t in an.transitions} == {("base", "sft"), ("base", "rl")}
    assert isinstance(pa.__version__, str)


def test_measure_records_the_parent_graph(tmp_path):
    """`measure --parent` (and the ladder, from its parent links) writes each checkpoint's parent
    into the manifest, where the analysis reads its root and edges from."""
    from crystallab.store import ResultStore

    d = write(tmp_path / "r", ladder("planted"))
    store = ResultStore(d)
    for label, parent in (("base", None), ("sft", "base"), ("rl", "base")):
        store.checkpoint(label, f"synthetic/{label}", "other", {}, parent=parent)
    store.save_manifest()
    an = analyze_dir(d, FAST)
    assert [c.parent for c in an.checkpoints] == [None, "base", "base"]
    assert {(t.parent, t.child) for t in an.transitions} == {("base", "sft"), ("base", "rl")}
