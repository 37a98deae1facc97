"""Sampling with one prefill per prompt (HFBackend.sample): the context's KV cache is computed
once and copied to the batch, and the samples are the plain generate() path's for the same seed."""

from __future__ import annotations

import pytest

from crystallab.models.decoding import Decoding

pytest.importorskip("transformers")

CONTEXT = "Random numbers between 1 and 10: 3, 7, 1, 9, 2, 5, 8, 4, 6, 10, 3, 7, 1, 9, 2, 5,"


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory, backend_of):
    """A tiny Gemma 3 (the builtin model's architecture): two sliding-window layers of window 8
    and one full-attention layer, so a context of ~50 tokens overflows the window."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from tiny import make_tokenizer

    out = tmp_path_factory.mktemp("gemma3-tiny")
    tok = make_tokenizer("digits", out)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=512,
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return backend_of(out)


def _prefill_rows(be, monkeypatch) -> list[tuple[int, int]]:
    """Record the [batch, tokens] of every forward pass the model runs."""
    shapes: list[tuple[int, int]] = []
    forward = be.model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shapes.append(tuple(ids.shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(be.model, "forward", spy)
    return shapes


@pytest.mark.parametrize(
    "decoding", [Decoding(), Decoding(temperature=0.7, top_p=0.9), Decoding(top_k=5), Decoding(min_p=0.1)]
)
def test_one_prefill_draws_the_plain_paths_samples(tiny_ckpt, backend_of, decoding):
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    plain = be.sample(ctx, n=100, seed=11, max_new_tokens=6, decoding=decoding, one_prefill=False)
    fast = be.sample(ctx, n=100, seed=11, max_new_tokens=6, decoding=decoding)
    assert len(fast) == 100 and fast == plain  # measured: 0 of 100 differ, at every setting


def test_one_prefill_runs_the_context_once(tiny_ckpt, backend_of, monkeypatch):
    """The power check for the speed-up: only one forward pass sees more than one token, and it
    is one row; the plain path prefills N rows."""
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    shapes = _prefill_rows(be, monkeypatch)
    be.sample(ctx, n=20, seed=1, max_new_tokens=3)
    assert [s for s in shapes if s[1] > 1] == [(1, len(ctx) - 1)] and (20, 1) in shapes
    shapes.clear()
    be.sample(ctx, n=20, seed=1, max_new_tokens=3, one_prefill=False)
    assert [s for s in shapes if s[1] > 1] == [(20, len(ctx))]


def test_one_prefill_applies_the_decoding_setting(tiny_ckpt, backend_of):
    """top_k = 1 is greedy: every sample is the same continuation (a setting dropped on the new
    path would show as spread)."""
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    got = be.sample(ctx, n=50, seed=3, max_new_tokens=5, decoding=Decoding(top_k=1))
    assert len({tuple(s) for s in got}) == 1
    assert len({tuple(s) for s in be.sample(ctx, n=50, seed=3, max_new_tokens=5)}) > 1


def test_one_prefill_in_chunks(tiny_ckpt, backend_of):
    """Each chunk gets its own copy of the cache: a shared one would grow under the first chunk's
    tokens and the second chunk would attend to them."""
    be = backend_of(tiny_ckpt("llama", "digits", seed=0))
    ctx = be.encode(CONTEXT)
    a = be.sample(ctx, n=130, seed=2, max_new_tokens=4, chunk=50)
    b = be.sample(ctx, n=130, seed=2, max_new_tokens=4, chunk=50, one_prefill=False)
    assert len(a) == 130 and a == b
    one = be.sample(be.encode("7"), n=10, seed=2, max_new_tokens=3)  # a one-token context: nothing to cache
    assert len(one) == 10


def test_one_prefill_with_a_sliding_window_cache(gemma3):
    """Gemma 3's hybrid cache (sliding-window layers keep only their window) is copied and grown
    like a plain one: the context (~50 tokens) and the samples run past the window of 8."""
    ctx = gemma3.encode(CONTEXT)
    assert len(ctx) > 4 * 8
    a = gemma3.sample(ctx, n=30, seed=5, max_new_tokens=10, chunk=12)
    b = gemma3.sample(ctx, n=30, seed=5, max_new_tokens=10, chunk=12, one_prefill=False)
    assert len(a) == 30 and a == b and len({tuple(s) for s in a}) > 1
