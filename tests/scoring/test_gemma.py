"""Integration on the real Gemma 3 270M base model (marked slow; CI runs it).

Gemma is the classic trap: digits are single tokens, a leading space is its own token, and
newlines merge with the character before them (``)\\n``)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from goodness import chi_square_p

from crystallab.cli.main import main
from crystallab.scoring.exact import build_trie, score_exact
from crystallab.scoring.sample import sample_prompt
from crystallab.suite import load_task

from test_exact import brute_force

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    from crystallab.models.hf import load_backend

    return load_backend("builtin:gemma-3-270m")


def test_gemma_tokenizer_traps(gemma):
    tok = gemma.tokenizer
    assert tok.convert_ids_to_tokens(tok(" 10", add_special_tokens=False).input_ids) == ["▁", "1", "0"]
    assert tok.convert_ids_to_tokens(tok(")\n7", add_special_tokens=False).input_ids) == [")", "\n", "7"]
    task = load_task("number_1_10")
    trie = build_trie(gemma, "Q: Pick a number.\nA:", task)
    assert trie.split == "moved"
    first = {tok.convert_ids_to_tokens(t) for n, t in enumerate(trie.tokens) if trie.parent[n] < 0}
    assert {"▁", "7", "seven", "Seven"} <= first  # ' 7' starts with the lone-space token


def test_gemma_exact_matches_brute_force(gemma):
    task = load_task("number_1_10")
    code = next(c.text for c in task.contexts if c.text.endswith(")\n"))
    prompts = [
        "Q: Pick a random number between 1 and 10.\nA:",
        "Random numbers between 1 and 10: 3, 8, 1, 6, 10, 2,",
        code,
        gemma.render_chat(task.instruction_texts[0])[0],
    ]
    exact = score_exact(gemma, prompts, task)
    diffs = [float(np.abs(e - brute_force(gemma, p, task)).max()) for p, e in zip(prompts, exact)]
    assert max(diffs) <= 1e-5, diffs
    assert exact[1][:-1].sum() > 0.5  # list continuation: the base model answers in-set


def test_gemma_sampling_agrees(gemma):
    task = load_task("coin_flip")
    prompt = next(c.text for c in task.contexts if c.family == "list")
    exact = score_exact(gemma, [prompt], task)[0]
    res = sample_prompt(gemma, prompt, task, n=600, seed=0, parser="tokens")
    assert chi_square_p(res.counts, exact) > 1e-3, (res.counts, exact * 600)


def test_gemma_sampling_agrees_under_decoding(gemma):
    """T = 0.7 with top-p 0.95 at N = 600 on a prompt whose answers spread over the options (so the
    nucleus cuts real mass); the same draws must reject the T = 1 untruncated distribution, or the
    test could not tell the setting was applied."""
    from crystallab.models.decoding import Decoding

    task = load_task("number_1_10")
    prompt = "Random numbers between 1 and 10: 3, 8, 1, 6, 10, 2,"
    d = Decoding(temperature=0.7, top_p=0.95)
    exact = score_exact(gemma, [prompt], task, decoding=d)[0]
    plain = score_exact(gemma, [prompt], task)[0]
    res = sample_prompt(gemma, prompt, task, n=600, seed=0, parser="tokens", decoding=d)
    p = chi_square_p(res.counts, exact)
    print(f"Gemma {d.label}: chi-square p {p:.3g} (N = 600), against T = 1 {chi_square_p(res.counts, plain):.3g}")
    assert p > 1e-3, (res.counts, exact * 600)
    assert chi_square_p(res.counts, plain) < 1e-3, (res.counts, plain * 600)


def test_gemma_measure_two_tasks(tmp_path):
    out = tmp_path / "g"
    assert (
        main(
            [
                "measure",
                "--model",
                "builtin:gemma-3-270m",
                "--task",
                "number_1_10,coin_flip",
                "--out",
                str(out),
                "--limit",
                "6",
                "--stage",
                "base",
            ]
        )
        == 0
    )
    rows = pq.read_table(out / "distributions.parquet").to_pylist()
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["prompt_id"]), {})[r["option"]] = r["prob"]
    assert len(groups) == 2 * 12
    for g in groups.values():
        assert abs(sum(g.values()) - 1) < 1e-6
    raw = [1 - g["⊥"] for (t, pid), g in groups.items() if t == "number_1_10" and pid.startswith("raw")]
    assert np.mean(raw) > 0.1  # the base model answers in-set on completion prompts
