"""The vLLM backend without vLLM (none on CPU CI): the spec, the one-line missing-dependency
error, and the mapping from vLLM-style outputs to exact trie scores, with a stand-in ``LLM``
whose logprobs come from a tiny transformers model."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import FakeLLM

from crystallab.errors import MissingDependency
from crystallab.models.spec import parse_spec
from crystallab.suite import load_task

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_vllm_spec_options_pass_through():
    s = parse_spec("vllm:allenai/OLMo-2-1124-13B?tensor_parallel_size=4&enable_prefix_caching=1")
    assert (s.kind, s.target, s.opts) == (
        "vllm",
        "allenai/OLMo-2-1124-13B",
        {"tensor_parallel_size": "4", "enable_prefix_caching": "1"},
    )


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here; this checks the message without it")
def test_vllm_missing_is_one_clear_line(tmp_path, capsys):
    from crystallab.cli.main import main
    from crystallab.models.vllm import load_vllm

    with pytest.raises(MissingDependency, match=r"pip install 'crystallab\[vllm\]'"):
        load_vllm("vllm:allenai/OLMo-2-0425-1B")
    assert (
        main(["measure", "--model", "vllm:allenai/OLMo-2-0425-1B", "--task", "coin_flip", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crystallab[vllm]" in err[0], err


@pytest.mark.parametrize("tok", ["digits", "bpe"])
def test_vllm_prompt_scores_map_to_exact_trie_probabilities(tiny_ckpt, backend_of, tok):
    """score_exact on the vLLM backend (full next-token logprobs at the context and at every
    trie node) equals score_exact on the transformers backend (one tree-masked forward pass)."""
    from crystallab.models.vllm import VLLMBackend
    from crystallab.scoring.exact import score_exact

    hf = backend_of(tiny_ckpt("llama", tok, chat_template=True))
    fake = FakeLLM(hf)
    vb = VLLMBackend(
        fake, hf.tokenizer, {"model": "vllm:fake"}, lambda **kw: SimpleNamespace(**kw), vocab_size=hf.vocab_size
    )
    for tid in ("number_1_10", "color"):
        task = load_task(tid)
        prompts = [c.text for c in task.contexts[:3]] + [vb.render_chat(task.instruction_texts[0])[0]]
        want = np.array(score_exact(hf, prompts, task))
        got = np.array(score_exact(vb, prompts, task))
        np.testing.assert_allclose(got, want, atol=2e-6)
    assert all(p.logprobs == -1 and p.max_tokens == 1 for p in fake.calls)


def test_vllm_sampling_passes_untruncated_params(tiny_ckpt, backend_of):
    from crystallab.models.vllm import VLLMBackend
    from crystallab.scoring.sample import sample_prompt

    hf = backend_of(tiny_ckpt("llama", "digits"))
    fake = FakeLLM(hf)
    vb = VLLMBackend(
        fake, hf.tokenizer, {"model": "vllm:fake"}, lambda **kw: SimpleNamespace(**kw), vocab_size=hf.vocab_size
    )
    task = load_task("number_1_10")
    res = sample_prompt(vb, task.contexts[0].text, task, n=50, seed=3, parser="tokens")
    want = sample_prompt(hf, task.contexts[0].text, task, n=50, seed=3, parser="tokens")
    assert res.counts.tolist() == want.counts.tolist()  # same draws, and EOS restored for the token parser
    (p,) = fake.calls
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.seed) == (
        50,
        1.0,
        1.0,
        -1,
        0.0,
        1.0,
        3,
    )


def test_device_map_auto_passes_through_and_scores_like_a_plain_load(tiny_ckpt, backend_of, monkeypatch):
    """--device-map auto (a model larger than one GPU) goes to from_pretrained; on a machine
    without GPUs accelerate places everything on the CPU and the scores are unchanged."""
    from transformers import AutoModelForCausalLM

    from crystallab.models.hf import LoadSettings, load_backend
    from crystallab.scoring.exact import score_exact

    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *a, **kw):
        seen.append(kw.get("device_map"))
        return real(cls, *a, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    path = tiny_ckpt("llama", "digits")
    spread = load_backend(str(path), LoadSettings(device_map="auto"))
    assert seen == ["auto"] and spread.info["settings"]["device_map"] == "auto"
    task = load_task("number_1_10")
    prompts = [c.text for c in task.contexts[:3]]
    np.testing.assert_allclose(
        np.array(score_exact(spread, prompts, task)), np.array(score_exact(backend_of(path), prompts, task)), atol=1e-6
    )
