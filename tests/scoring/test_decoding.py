"""Exact distributions under decoding settings (temperature, top-k, top-p, min-p): against
transformers' own logits warpers, a brute force over full forward passes, real sampling with
generate(), and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from goodness import chi_square_p

from crystallab.cli.main import main
from crystallab.models.decoding import DEFAULT, Decoding, processed_logprobs, threshold
from crystallab.models.hf import _thresholds
from crystallab.scoring.exact import build_trie, score_exact, score_exact_each
from crystallab.scoring.sample import parse_tokens, sample_prompt
from crystallab.suite import load_task

from test_exact import brute_force, warpers

SETTINGS = [
    Decoding(temperature=0.7),
    Decoding(top_p=0.9),
    Decoding(top_k=5),
    Decoding(min_p=0.1),
    Decoding(temperature=0.7, top_p=0.95),
    Decoding(temperature=1.5, top_k=3, top_p=0.8, min_p=0.05),
]
PROMPTS = [
    "Random numbers between 1 and 10: 3, 8, 1,",
    "Random numbers between 1 and 10: 7, 2, ",  # W under the processed distribution
    "Random numbers between 1 and 10: 7, 2,\n",
]
N = 2000


def _rows(V: int = 600, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, s, V) for s in (0.3, 1.0, 3.0, 8.0)]  # flat to peaked


@pytest.mark.parametrize("d", SETTINGS, ids=lambda d: d.label)
def test_reference_matches_transformers_warpers(d):
    for x in _rows():
        ours = np.exp(processed_logprobs(x, d))
        theirs = torch.softmax(warpers(d)(None, torch.from_numpy(x)[None])[0], -1).numpy()
        assert np.abs(ours - theirs).max() < 1e-12
        assert (ours > 0).sum() == (theirs > 0).sum() >= 1


def test_vllm_order_differs_only_when_min_p_meets_top_p():
    x = _rows()[1]
    for d in SETTINGS:
        same = np.array_equal(processed_logprobs(x, d), processed_logprobs(x, d, order="vllm"))
        assert same or (d.min_p > 0 and d.top_p < 1)
    both = Decoding(top_p=0.5, min_p=0.3)
    big = _rows()[0]
    assert not np.array_equal(processed_logprobs(big, both), processed_logprobs(big, both, order="vllm"))


@pytest.mark.parametrize("d", [*SETTINGS, Decoding(top_p=0.999)], ids=lambda d: d.label)
def test_torch_thresholds_match_the_reference(d):
    """The backend's per-row thresholds (top-p read a few hundred tokens at a time, widened when
    the nucleus is wider: a flat row at top-p 0.999 needs most of a 5000-token vocabulary)."""
    rows = [x.astype(np.float32) for x in _rows(V=5000, seed=1)]
    tau = _thresholds(torch.from_numpy(np.stack(rows)), d).squeeze(-1).numpy()
    for x, t in zip(rows, tau):
        assert ((x >= t) == (x >= threshold(x.astype(np.float64), d))).all()


@pytest.mark.parametrize("d", SETTINGS, ids=lambda d: d.label)
def test_exact_under_a_setting_matches_brute_force(peaked, d):
    """Every path's product of processed next-token probabilities, its processed boundary mass
    and W, by full forward passes through transformers' own warpers."""
    task = load_task("number_1_10")
    exact = score_exact(peaked, PROMPTS, task, decoding=d)
    for p, e in zip(PROMPTS, exact):
        assert np.abs(e - brute_force(peaked, p, task, decoding=d)).max() <= 1e-5
        assert abs(e.sum() - 1) < 1e-9 and (e >= 0).all()
    if d.truncates:  # not vacuous: truncation removed some option's paths altogether
        assert any((e[:-1] == 0).any() for e in exact)
    assert max(e[:-1].sum() for e in exact) > 0.2


def test_settings_change_the_distribution(peaked):
    task = load_task("number_1_10")
    base = score_exact(peaked, PROMPTS[:1], task)[0]
    for d in SETTINGS:
        assert np.abs(score_exact(peaked, PROMPTS[:1], task, decoding=d)[0] - base).max() > 1e-3


def test_many_temperatures_equal_separate_runs_bit_for_bit(peaked):
    task = load_task("number_1_10")
    temps = [Decoding(temperature=t, top_p=0.95) for t in (0.5, 0.7, 1.0, 1.5)]
    together = score_exact_each(peaked, PROMPTS, task, temps)
    for d, got in zip(temps, together):
        alone = score_exact(peaked, PROMPTS, task, decoding=d)
        assert all(np.array_equal(a, b) for a, b in zip(got, alone))


def test_default_setting_is_unchanged(peaked):
    task = load_task("number_1_10")
    a = score_exact(peaked, PROMPTS, task)
    b = score_exact_each(peaked, PROMPTS, task, [Decoding(temperature=0.5), DEFAULT])[1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_temperature_to_zero_gives_the_greedy_answer(peaked):
    task = load_task("number_1_10")
    for prompt in (PROMPTS[0], PROMPTS[2]):
        trie = build_trie(peaked, prompt, task)
        ids = list(trie.context)
        with torch.no_grad():
            for _ in range(4):  # greedy decoding by hand, deeper than any option's path
                ids.append(int(peaked.model(torch.tensor([ids])).logits[0, -1].argmax()))
        k = parse_tokens(ids[len(trie.context) :], trie, peaked.boundary_mask(), peaked.eos_ids())
        p = score_exact(peaked, [prompt], task, decoding=Decoding(temperature=1e-3))[0]
        assert p[len(task.options) if k is None else k] > 0.999, (k, p)


@pytest.mark.parametrize("d", SETTINGS[:5], ids=lambda d: d.label)
def test_sampling_under_a_setting_agrees_with_exact(peaked, d):
    """generate() under the setting against the exact distribution under it: Pearson chi-square
    at N = 2000, alpha = 1e-3; and the same test rejects samples drawn with the setting dropped
    (its power: a setting silently lost, as generate()'s top_k=50 default once was, is caught)."""
    task = load_task("number_1_10")
    prompt = PROMPTS[0]
    exact = score_exact(peaked, [prompt], task, decoding=d)[0]
    res = sample_prompt(peaked, prompt, task, n=N, seed=5, parser="tokens", decoding=d)
    p = chi_square_p(res.counts, exact)
    dropped = sample_prompt(peaked, prompt, task, n=N, seed=5, parser="tokens")
    p_dropped = chi_square_p(dropped.counts, exact)
    print(f"{d.label}: chi-square p {p:.3g} (N = {N}); with the setting dropped {p_dropped:.3g}")  # pytest -s
    assert p > 1e-3, (d.label, p, res.counts, exact * N)
    assert p_dropped < 1e-3, (d.label, dropped.counts, exact * N)


def test_sampler_passes_every_setting_to_generate(peaked, monkeypatch):
    seen = {}
    real = peaked.model.generate

    def spy(*a, **kw):
        seen.update(kw["generation_config"].to_dict())
        return real(*a, **kw)

    monkeypatch.setattr(peaked.model, "generate", spy)
    peaked.sample([1, 2, 3], n=2, seed=0, max_new_tokens=2, decoding=Decoding(0.7, 5, 0.9, 0.1))
    assert (seen["temperature"], seen["top_k"], seen["top_p"], seen["min_p"]) == (0.7, 5, 0.9, 0.1)
    peaked.sample([1, 2, 3], n=2, seed=0, max_new_tokens=2)
    assert (seen["temperature"], seen["top_k"], seen["top_p"], seen["min_p"]) == (1.0, 0, 1.0, 0.0)


def test_settings_are_recorded_in_rows_and_manifest(tiny_ckpt, tmp_path):
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "r"
    args = ["measure", "--model", str(tiny_ckpt("llama", "digits")), "--task", "coin_flip", "--out", str(out)]
    assert main([*args, "--limit", "2", "--temperature", "0.5,1.5", "--top-p", "0.9"]) == 0
    t = pq.read_table(out / "distributions.parquet").to_pandas()
    assert sorted(set(t.temperature)) == [0.5, 1.5] and set(t.top_p) == {0.9} and set(t.top_k) == {0}
    for _, g in t.groupby(["prompt_id", "temperature"]):
        assert abs(g.prob.sum() - 1) < 1e-9
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    assert [d["temperature"] for d in run["decodings"]] == [0.5, 1.5]
    n = len(t)
    assert main([*args, "--limit", "2", "--temperature", "0.5,1.5", "--top-p", "0.9"]) == 0  # resumes: nothing new
    assert len(pq.read_table(out / "distributions.parquet")) == n


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--temperature", "0"),
        ("--temperature", "-0.5"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--top-k", "-1"),
        ("--min-p", "1"),
        ("--min-p", "-0.1"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(capsys, tmp_path, flag, value):
    code = main(["measure", "--model", "x", "--task", "coin_flip", "--out", str(tmp_path / "o"), f"{flag}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err


def test_melt_reads_each_temperature_on_its_own(tiny_ckpt, tmp_path, capsys):
    """`crystallab melt` analyses one temperature at a time (never a mix), and `analyze` on a
    folder of several temperatures reads the T = 1 rows only."""
    import json

    from crystallab.analysis import analyze

    out = tmp_path / "m"
    model = str(tiny_ckpt("llama", "digits"))
    base = ["measure", "--model", model, "--task", "number_1_10", "--prompts", "raw", "--out", str(out)]
    assert main([*base, "--limit", "4", "--temperature", "0.5,1,2"]) == 0
    capsys.readouterr()
    assert main(["melt", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "melting.json").read_text())
    (curve,) = data["curves"]
    assert curve["temperatures"] == [0.5, 1.0, 2.0] and len(curve["states"]) == 3
    assert (out / "melting.png").stat().st_size > 1000 and "number_1_10 / raw" in printed
    one = analyze(out)
    assert set(one.table.column("temperature").to_pylist()) == {1.0}
    h = [e and e["value"] for e in (x for x in curve["params"]["h"])]
    vm = [e[0] for e in curve["params"]["valid_mass"]]
    assert len(h) == len(vm) == 3
    from crystallab.analysis import analyze_dir
    from crystallab.reporting import write_report

    analyze_dir(out)
    page = write_report(out).read_text()
    assert 'id="melting"' in page and "number_1_10 / raw" in page and (out / "figures" / "melting.png").is_file()


def test_melt_needs_two_temperatures(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "one"
    model = str(tiny_ckpt("llama", "digits"))
    assert main(["measure", "--model", model, "--task", "coin_flip", "--out", str(out), "--limit", "1"]) == 0
    capsys.readouterr()
    assert main(["melt", str(out)]) == 2
    assert "two or more temperatures" in capsys.readouterr().err
