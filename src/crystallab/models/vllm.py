"""The vLLM backend: ``vllm:HF_ID_OR_DIR[?tensor_parallel_size=N&...]`` (``pip install 'crystallab[vllm]'``).

It implements the same narrow interface as the transformers backend, so ``score_exact`` and
``sample_prompt`` run on it unchanged:

``score_tries``  exact scoring. For every prompt, vLLM is asked for the full next-token
                 distribution (``logprobs=-1``, the raw log-softmax of the model's logits, one
                 generated token) after the context and after every trie node, as token-id prompts
                 (no re-tokenization). A node's log-probability is read from its parent's
                 distribution and its boundary mass from its own. Prompts go to ``LLM.generate``
                 as one batch, so vLLM schedules them.
                 Under a decoding setting the same raw distributions are processed in numpy
                 (``models/decoding.py``) in vLLM's own order (min-p before top-k / top-p), so
                 exact and sampled agree on this backend.
``sample``       ``LLM.generate`` with ``n`` completions under the decoding setting (every
                 field explicit, so the model's generation_config cannot truncate), seeded.

Load settings: ``tensor_parallel_size`` passes through to ``vllm.LLM``; prefix caching is OFF
by default (``enable_prefix_caching=1`` turns it on). vLLM has a history of wrong or
order-dependent logprobs when prefix caching meets prompt logprobs (vllm-project/vllm#3251,
#8268, #13105, and, open in 2026, #42019 "prompt_logprobs depends on request order when prefix
caching is enabled"); this backend reads only next-token logprobs, but an exact scorer should not
depend on cache state, so the safe default wins over speed.

Not run in this repository's CI (no GPU there, and vLLM needs one): tests cover the spec, the
missing-dependency error and the mapping from vLLM's outputs to trie scores with a stand-in
``LLM`` object backed by a tiny transformers model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crystallab.errors import UserError, require
from crystallab.models.base import LoadSettings, TrieScores, compute_boundary_mask
from crystallab.models.decoding import DEFAULT, Decoding, processed_logprobs
from crystallab.models.spec import ModelSpec, parse_spec
from crystallab.models.text import TokenizerText


def load_vllm(spec: str | ModelSpec, settings: LoadSettings | None = None) -> VLLMBackend:
    """Load a ``vllm:`` spec in-process; ``settings`` as for every backend (device is vLLM's)."""
    vllm = require("vllm", "vllm")
    settings = settings or LoadSettings()
    revision, dtype = settings.revision, settings.dtype
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    o = ms.opts
    try:
        kwargs: dict[str, Any] = dict(
            model=ms.target,
            revision=revision,
            trust_remote_code=settings.trust_remote_code,
            dtype=o.get("dtype", dtype),
            tensor_parallel_size=int(o.get("tensor_parallel_size", 1)),
            gpu_memory_utilization=float(o.get("gpu_memory_utilization", 0.9)),
            enable_prefix_caching=o.get("enable_prefix_caching", "0").lower() in ("1", "true", "yes"),
            max_logprobs=-1,  # full next-token distributions (logprobs=-1) for exact scoring
            seed=0,
        )
        if "max_model_len" in o:
            kwargs["max_model_len"] = int(o["max_model_len"])
    except ValueError as exc:
        raise UserError(f"model spec {ms.raw}: bad option value ({exc})") from exc
    try:
        llm = vllm.LLM(**kwargs)
    except Exception as exc:  # vLLM raises many kinds here
        raise UserError(
            f"vLLM cannot load '{ms.target}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    info = {
        "model": ms.raw,
        "kind": "vllm",
        "revision": revision,
        "vllm_version": getattr(vllm, "__version__", None),
        "load": {k: v for k, v in kwargs.items() if k != "model"},
    }
    return VLLMBackend(llm, llm.get_tokenizer(), info, vllm.SamplingParams, allow_plain_chat=settings.allow_plain_chat)


def _as_array(logprobs: Any, V: int) -> np.ndarray:
    """vLLM's logprobs for one position ({token_id: Logprob} or a float per id) as a dense
    float64 array of length V; ids absent from the output get -inf."""
    out = np.full(V, -np.inf)
    if hasattr(logprobs, "items"):
        ids = np.fromiter(logprobs.keys(), dtype=np.int64, count=len(logprobs))
        vals = np.fromiter((getattr(v, "logprob", v) for v in logprobs.values()), dtype=np.float64, count=len(logprobs))
    else:  # FlatLogprobs-like: parallel token_ids / logprobs
        ids, vals = np.asarray(logprobs.token_ids, dtype=np.int64), np.asarray(logprobs.logprobs, dtype=np.float64)
    keep = ids < V
    out[ids[keep]] = vals[keep]
    return out


class VLLMBackend(TokenizerText):
    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        info: dict[str, Any],
        sampling_params: Any,
        allow_plain_chat: bool = True,
        vocab_size: int | None = None,
    ):
        self.llm = llm
        self.tokenizer = tokenizer
        self.info = info
        self.SamplingParams = sampling_params
        self.allow_plain_chat = allow_plain_chat
        self.device = "cuda"
        self._vocab = vocab_size
        self._boundary: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        if self._vocab is None:
            try:
                self._vocab = int(self.llm.llm_engine.model_config.get_vocab_size())
            except Exception:  # noqa: BLE001  (engine internals move between vLLM versions)
                self._vocab = len(self.tokenizer)
        return self._vocab

    def eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        return {int(i) for i in ids if i is not None}

    def boundary_mask(self) -> np.ndarray:
        if self._boundary is None:
            texts = self.token_texts().texts
            self._boundary = compute_boundary_mask(self.tokenizer, self.vocab_size, self.eos_ids(), texts)
        return self._boundary

    # ---- scoring -----------------------------------------------------------------------------
    def next_token_logprobs(self, prompts: Sequence[list[int]]) -> list[np.ndarray]:
        """The full next-token log-distribution after each token-id prompt."""
        params = self.SamplingParams(max_tokens=1, temperature=1.0, logprobs=-1, detokenize=False, seed=0)
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        V = self.vocab_size
        return [_as_array(o.outputs[0].logprobs[0], V) for o in outs]

    def score_tries(
        self,
        items: Sequence,
        padding_side: str = "right",
        rows: Sequence[Sequence[int]] | None = None,
        decodings: Sequence[Decoding] = (DEFAULT,),
    ) -> list[list[TrieScores]]:
        """Per item and decoding, per trie node: log P(node | context, ancestors) and log B(node),
        and per lead request the log-mass of its mask, from the next-token distributions after
        the context and after every node, processed per decoding (``padding_side`` and ``rows``
        are for the transformers backend's packing and are ignored here)."""
        prompts: list[list[int]] = []
        starts: list[int] = []
        for it in items:
            starts.append(len(prompts))
            paths: list[list[int]] = []
            for n, (tok, par) in enumerate(zip(it.tokens, it.parent)):
                paths.append((paths[par] if par >= 0 else []) + [int(tok)])
            prompts.append(list(it.context))
            prompts += [list(it.context) + p for p in paths]
        raw = self.next_token_logprobs(prompts)
        boundary, masks = self.boundary_mask(), self.token_texts()
        out: list[list[TrieScores]] = [[] for _ in items]
        for d in decodings:
            dists = raw if d.is_default else [processed_logprobs(x, d, order="vllm") for x in raw]
            for i, (it, s) in enumerate(zip(items, starts)):
                N = len(it.tokens)
                logp = np.array(
                    [dists[s + 1 + it.parent[n]][it.tokens[n]] for n in range(N)], dtype=np.float64
                )  # parent -1 is the root (s)
                logb = np.array([_logsumexp(dists[s + 1 + n][boundary]) for n in range(N)], dtype=np.float64)
                logl = np.array(
                    [_logsumexp(dists[s + 1 + n][masks.starts_with(*k)]) for n, k in it.lead], dtype=np.float64
                )
                out[i].append(TrieScores(logp=logp, log_boundary=logb, log_lead=logl))
        return out

    # ---- sampling ----------------------------------------------------------------------------
    def sample(
        self,
        context: list[int],
        n: int,
        seed: int,
        max_new_tokens: int,
        decoding: Decoding = DEFAULT,
    ) -> list[list[int]]:
        eos = sorted(self.eos_ids())
        params = self.SamplingParams(
            n=n,
            temperature=float(decoding.temperature),
            top_p=float(decoding.top_p),
            top_k=int(decoding.top_k) if decoding.top_k > 0 else -1,
            min_p=float(decoding.min_p),
            repetition_penalty=1.0,
            seed=int(seed),
            max_tokens=max_new_tokens,
            stop_token_ids=eos,
            detokenize=False,
        )
        (res,) = self.llm.generate([{"prompt_token_ids": list(context)}], params, use_tqdm=False)
        seqs = []
        for c in res.outputs:
            toks = list(c.token_ids)
            if getattr(c, "finish_reason", None) == "stop" and eos and (not toks or toks[-1] not in eos):
                toks.append(eos[0])  # stopped on EOS: keep the end visible to the token parser
            seqs.append(toks)
        return seqs


def _logsumexp(x: np.ndarray) -> float:
    if x.size == 0:
        return -np.inf
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m)))) if np.isfinite(m) else -np.inf
