"""The lab's speed-ups change nothing that is measured: TRL's fused LM head scoring only the
labelled positions gives the same loss and gradients as scoring every position."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl.trainer import utils as trl_utils  # noqa: E402

from crystallab.lab.sft import score_labelled_positions_only  # noqa: E402


def _loss_and_grads(path, compact: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    ids = torch.randint(3, 20, (3, 9))
    labels = ids.clone()
    labels[:, :6] = -100  # a prompt, then a 3-token completion
    labels[1, 8] = -100  # one row ends early
    original = trl_utils._use_triton
    try:
        if compact:
            score_labelled_positions_only()
        else:
            trl_utils._use_triton = lambda device: False
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
    finally:
        trl_utils._use_triton = original
    return out.loss.detach(), out.log_probs.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_compact_lm_head_gives_the_same_loss_and_gradients(tiny_ckpt):
    path = tiny_ckpt("llama")
    loss_full, lp_full, g_full = _loss_and_grads(path, compact=False)
    loss_c, lp_c, g_c = _loss_and_grads(path, compact=True)
    assert torch.allclose(loss_full, loss_c, atol=1e-6)
    assert torch.allclose(lp_full, lp_c, atol=1e-6)
    assert len(g_full) == len(g_c) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_c))


def test_the_hook_is_set_once_and_only_widens_the_choice():
    original = trl_utils._use_triton
    try:
        assert score_labelled_positions_only()
        hook = trl_utils._use_triton
        assert score_labelled_positions_only() and trl_utils._use_triton is hook  # idempotent
        assert hook(torch.device("cpu"))
    finally:
        trl_utils._use_triton = original
