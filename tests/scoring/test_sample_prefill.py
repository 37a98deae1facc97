"""Sampling with one prefill per prompt (HFBackend.sample): the context's KV cache is computed
once and copied to the batch, and the samples are the plain generate() path's for the same seed."""

from __future__ import annotations

import pytest

from crystallab.models.decoding import Decoding

pytest.importorskip("transformers")

CONTEXT = "Random numbers between 1 and 10: 3, 7, 1, 9, 2, 5, 8, 4, 6, 10, 3, 7, 1, 9, 2, 5,"


@pytest.mark.parametrize(
    "decoding", [Decoding(), Decoding(temperature=0.7, top_p=0.9), Decoding(top_k=5), Decoding(min_p=0.1)]
)
def test_one_prefill_draws_the_plain_paths_samples(tiny_ckpt, backend_of, decoding):
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    plain = be.sample(ctx, n=200, seed=11, max_new_tokens=6, decoding=decoding, one_prefill=False)
    fast = be.sample(ctx, n=200, seed=11, max_new_tokens=6, decoding=decoding)
    assert len(fast) == 200 and fast == plain  # measured: 0 of 200 differ, at every setting


def test_one_prefill_applies_the_decoding_setting(tiny_ckpt, backend_of):
    """top_k = 1 is greedy: every sample is the same continuation (a setting dropped on the new
    path would show as spread)."""
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    got = be.sample(ctx, n=50, seed=3, max_new_tokens=5, decoding=Decoding(top_k=1))
    assert len({tuple(s) for s in got}) == 1
    assert len({tuple(s) for s in be.sample(ctx, n=50, seed=3, max_new_tokens=5)}) > 1


def test_one_prefill_in_chunks(tiny_ckpt, backend_of):
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    a = be.sample(ctx, n=130, seed=2, max_new_tokens=4, chunk=50)
    b = be.sample(ctx, n=130, seed=2, max_new_tokens=4, chunk=50, one_prefill=False)
    assert len(a) == 130 and a == b
    one = be.sample(be.encode("7"), n=10, seed=2, max_new_tokens=3)  # a one-token context: nothing to cache
    assert len(one) == 10
