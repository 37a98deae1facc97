"""Sampling agrees with the exact scorer within sampling error; the parsers behave."""

from __future__ import annotations

import numpy as np
import pytest
from goodness import chi_square_p

from crystallab.models.text import MAX_DRAWS
from crystallab.scoring.exact import ScoreStats, score_exact
from crystallab.scoring.sample import parse_answer, sample_prompt
from crystallab.suite import load_task

N = 2000


@pytest.mark.parametrize(
    "prompt",
    [
        "Random numbers between 1 and 10: 3, 8, 1,",  # nothing after the comma
        "Random numbers between 1 and 10: 7, 2, ",  # a space: sampled from c̄, kept when they write it
        "Random numbers between 1 and 10: 7, 2,\n",  # a newline: it stays in the context
    ],
)
def test_sampled_agrees_with_exact(peaked, prompt):
    """Pearson chi-square at N = 2000 draws kept, alpha = 1e-3, on the token parser's event."""
    task = load_task("number_1_10")
    st = ScoreStats()
    exact = score_exact(peaked, [prompt], task, stats=st)[0]
    assert exact[:-1].sum() > 0.2, exact  # enough option mass for the test to have power
    res = sample_prompt(peaked, prompt, task, n=N, seed=11, parser="tokens")
    assert res.counts.sum() == N
    p = chi_square_p(res.counts, exact)
    assert p > 1e-3, (p, res.counts, exact * N)
    (w,) = st.lead_mass
    if prompt.endswith(" "):  # the kept fraction estimates W: binomial, within 4 standard errors
        assert 0.2 < w < 0.95, w
        assert abs(N / res.drawn - w) < 4 * np.sqrt(w * (1 - w) / res.drawn), (N, res.drawn, w)
    else:
        assert w == 1.0 and res.drawn == N


def test_sampled_agrees_with_exact_after_two_spaces(peaked):
    """w = two spaces, which the tokenizer writes as a lone space twice (no token starts with
    two spaces): the exact W follows the lone-space token one level deeper, and the kept draws
    agree with it (chi-square at N = 500 kept, alpha = 1e-3)."""
    task = load_task("number_1_10")
    prompt = "Random numbers between 1 and 10: 7, 2,  "
    assert not peaked.token_texts().starts_with("  ").any()
    st = ScoreStats()
    exact = score_exact(peaked, [prompt], task, stats=st)[0]
    assert exact[:-1].sum() > 0.2 and 0.05 < st.lead_mass[0] < 0.6, (exact, st.lead_mass)
    res = sample_prompt(peaked, prompt, task, n=500, seed=11, parser="tokens")
    assert res.counts.sum() == 500 and res.drawn > 500
    assert chi_square_p(res.counts, exact) > 1e-3, (res.counts, exact * 500)


def test_draws_stop_at_the_budget(peaked):
    """A lead the model (almost) never writes: draws stop at MAX_DRAWS * n, fewer are kept."""
    task = load_task("number_1_10")
    res = sample_prompt(peaked, "Random numbers between 1 and 10: 7, 2,\t", task, n=20, seed=3, parser="tokens")
    assert res.drawn == MAX_DRAWS * 20 and res.counts.sum() < 20


def test_chi_square_detects_a_wrong_scorer(peaked):
    """The same test rejects a distribution that is off by a little: it has power."""
    task = load_task("number_1_10")
    prompt = "Random numbers between 1 and 10: 3, 8, 1,"
    exact = score_exact(peaked, [prompt], task)[0]
    res = sample_prompt(peaked, prompt, task, n=N, seed=11, parser="tokens")
    wrong = exact.copy()
    top = int(np.argmax(exact[:-1]))
    wrong[top] *= 0.75  # e.g. a scorer that dropped one tokenization path of the favourite
    wrong[-1] += exact[top] - wrong[top]
    assert chi_square_p(res.counts, wrong) < 1e-3


def test_text_parser_counts_match_token_parser_on_clean_answers(peaked):
    task = load_task("number_1_10")
    prompt = "Random numbers between 1 and 10: 3, 8, 1,"
    res = sample_prompt(peaked, prompt, task, n=300, seed=5, parser="text", max_new_tokens=6)
    tok = sample_prompt(peaked, prompt, task, n=300, seed=5, parser="tokens", max_new_tokens=6)
    assert res.completions == tok.completions  # same seed, same draws
    # the lenient parser accepts everything the exact event does (and more)
    agree = [a == b for a, b in zip(res.parsed, tok.parsed) if b is not None]
    assert len(agree) > 100 and all(agree)


def test_text_parser_reads_completions_of_the_prompt_as_written(peaked):
    """After a prompt ending with a space, kept completions are stored and parsed without it,
    and the lenient parser still accepts everything the exact event does."""
    task = load_task("number_1_10")
    prompt = "Random numbers between 1 and 10: 7, 2, "
    res = sample_prompt(peaked, prompt, task, n=300, seed=5, parser="text", max_new_tokens=6)
    tok = sample_prompt(peaked, prompt, task, n=300, seed=5, parser="tokens", max_new_tokens=6)
    assert res.completions == tok.completions and res.drawn > 300  # same draws; some were not kept
    assert sum(c[:1].isdigit() for c in res.completions) > 100  # ' 7' after the space reads '7'
    agree = [a == b for a, b in zip(res.parsed, tok.parsed) if b is not None]
    assert len(agree) > 100 and all(agree)


def test_nothing_kept_is_all_other():
    """When no draw wrote the prompt's blanks (W ~ 0), the estimate is all ⊥, as the exact
    scorer's is when W is 0: there is no answer to the prompt as written to count."""
    from crystallab.scoring.sample import SampleResult

    none = SampleResult(counts=np.zeros(3, dtype=np.int64), completions=[], parsed=[], drawn=640)
    assert none.probs.tolist() == [0.0, 0.0, 1.0]


def test_sampling_is_seeded(peaked):
    task = load_task("coin_flip")
    a = sample_prompt(peaked, "Coin: ", task, n=20, seed=1)
    b = sample_prompt(peaked, "Coin: ", task, n=20, seed=1)
    c = sample_prompt(peaked, "Coin: ", task, n=20, seed=2)
    assert a.completions == b.completions and a.completions != c.completions


@pytest.mark.parametrize(
    "text,expected",
    [
        ("7", "7"),
        (" 7\n", "7"),
        ("Sure! My answer is 7.", "7"),
        ("**Seven**", "7"),
        ("SEVEN!", "7"),
        ("10", "10"),
        ("1", "1"),
        ("1, 2, 3", "1"),
        ("107", None),
        ("17", None),
        ("seventeen", None),
        ("", None),
        ("I pick ten", "10"),
    ],
)
def test_text_parser(text, expected):
    task = load_task("number_1_10")
    k = parse_answer(text, task)
    assert (None if k is None else task.labels[k]) == expected


def test_api_sampler_keeps_the_completions_that_write_the_space(monkeypatch):
    """The API sampler sends c̄ and keeps the completions that start with w, stripped, asking
    again until N are kept; a newline-ending prompt is sent as written and keeps everything."""

    from crystallab.models.api import ApiBackend
    from crystallab.scoring.sample import sample_text_prompt

    api = ApiBackend("api:http://127.0.0.1:9/v1#stub")
    sent: list[str] = []

    def post(path, body):
        sent.append(body["prompt"])
        return {"choices": [{"text": [" 7", "\n3", " 2, 5", "8"][i % 4]} for i in range(body["n"])]}

    monkeypatch.setattr(api, "post", post)
    task = load_task("number_1_10")
    res = sample_text_prompt(api, "Numbers: 4, ", False, task, 10, seed=1)
    assert set(sent) == {"Numbers: 4,"} and len(sent) == 2  # half are kept: a second request
    assert len(res.completions) == 10 and set(res.completions) == {"7", "2, 5"} and res.probs[6] + res.probs[1] == 1
    sent.clear()
    res = sample_text_prompt(api, "Numbers: 4,\n", False, task, 4, seed=1)
    assert sent == ["Numbers: 4,\n"] and res.completions == [" 7", "\n3", " 2, 5", "8"]
    api.close()
