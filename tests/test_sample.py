"""Sampling agrees with the exact scorer within sampling error; the parsers behave."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from tiny import train_briefly

from crystallab.scoring.exact import score_exact
from crystallab.scoring.sample import parse_answer, sample_prompt
from crystallab.tasks import load_task

N = 2000


def chi_square_p(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Pearson goodness of fit, pooling the cells with expected count < 5 into one."""
    exp = probs * counts.sum()
    small = exp < min_expected
    obs_c = np.append(counts[~small], counts[small].sum())
    exp_c = np.append(exp[~small], exp[small].sum())
    keep = exp_c > 0
    return float(stats.chisquare(obs_c[keep], exp_c[keep] * obs_c[keep].sum() / exp_c[keep].sum()).pvalue)


@pytest.fixture(scope="module")
def peaked(tiny_ckpt, backend_of):
    """A tiny model trained for a few steps on lists of random numbers, so that options carry
    real, uneven mass (a random init puts almost all of it on ⊥)."""
    import random

    be = backend_of(tiny_ckpt("llama", "digits", seed=3))
    rng = random.Random(0)
    weights = [1, 2, 3, 2, 1, 5, 9, 2, 1, 4]
    lines = ["Random numbers between 1 and 10: " + ", ".join(str(rng.choices(range(1, 11), weights)[0]) for _ in range(10)) for _ in range(64)]
    return train_briefly(be, lines)


@pytest.mark.parametrize("prompt", ["Random numbers between 1 and 10: 3, 8, 1,", "Random numbers between 1 and 10: 7, 2, "])
def test_sampled_agrees_with_exact(peaked, prompt):
    task = load_task("number_1_10")
    exact = score_exact(peaked, [prompt], task)[0]
    assert exact[:-1].sum() > 0.2, exact  # enough option mass for the test to have power
    res = sample_prompt(peaked, prompt, task, n=N, seed=11, parser="tokens")
    assert res.counts.sum() == N
    p = chi_square_p(res.counts, exact)
    assert p > 1e-3, (p, res.counts, exact * N)


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


def test_sampling_is_seeded(peaked):
    task = load_task("coin_flip")
    a = sample_prompt(peaked, "Coin: ", task, n=20, seed=1)
    b = sample_prompt(peaked, "Coin: ", task, n=20, seed=1)
    c = sample_prompt(peaked, "Coin: ", task, n=20, seed=2)
    assert a.completions == b.completions and a.completions != c.completions


@pytest.mark.parametrize("text,expected", [
    ("7", "7"), (" 7\n", "7"), ("Sure! My answer is 7.", "7"), ("**Seven**", "7"), ("SEVEN!", "7"),
    ("10", "10"), ("1", "1"), ("1, 2, 3", "1"), ("107", None), ("17", None), ("seventeen", None), ("", None), ("I pick ten", "10"),
])
def test_text_parser(text, expected):
    task = load_task("number_1_10")
    k = parse_answer(text, task)
    assert (None if k is None else task.labels[k]) == expected
