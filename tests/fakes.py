"""Stand-ins for engines this machine lacks: a vLLM ``LLM`` backed by a tiny transformers model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


class FakeLLM:
    """Answers ``generate`` the way vllm.LLM does (RequestOutput-like objects), from a
    transformers model: logprobs=-1 gives the full next-token log-distribution as
    {token_id: Logprob}; n completions are drawn with the HF backend's sampler."""

    def __init__(self, hf):
        self.hf = hf
        self.calls: list = []

    def get_tokenizer(self):
        return self.hf.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        import torch

        self.calls.append(params)
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            if getattr(params, "logprobs", None) == -1:
                with torch.inference_mode():
                    logits = self.hf.model(torch.tensor([ids])).logits[0, -1].double()
                lp = torch.log_softmax(logits, -1).tolist()
                d = {i: SimpleNamespace(logprob=v, rank=None, decoded_token=None) for i, v in enumerate(lp)}
                outs.append(
                    SimpleNamespace(
                        outputs=[SimpleNamespace(logprobs=[d], token_ids=[int(np.argmax(lp))], finish_reason="length")]
                    )
                )
            else:
                seqs = self.hf.sample(
                    ids, n=params.n, seed=params.seed, max_new_tokens=params.max_tokens, decoding=_decoding(params)
                )
                eos = set(params.stop_token_ids)
                outs.append(
                    SimpleNamespace(
                        outputs=[
                            SimpleNamespace(
                                token_ids=[t for t in s if t not in eos],
                                finish_reason="stop" if s and s[-1] in eos else "length",
                                logprobs=None,
                            )
                            for s in seqs
                        ]
                    )
                )
        return outs


def _decoding(params):
    """The decoding setting a SamplingParams asks for (vLLM's top_k -1 is off)."""
    from crystallab.models.decoding import Decoding

    k = int(getattr(params, "top_k", -1) or -1)
    return Decoding(float(params.temperature), k if k > 0 else 0, float(params.top_p), float(params.min_p or 0.0))
