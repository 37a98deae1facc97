"""What every backend shares, free of torch: load settings, the trie request and its scores, the
capability protocols the scorers are written against, and two helpers (the boundary mask, seeds).

A backend offers one or more capabilities, each a small ``Protocol``; ``measure`` asks which
ones a loaded model has (``methods``) and never looks for method names:

==============  ==========================================  =============================
capability      what it does                                 backends
==============  ==========================================  =============================
TrieScorer      context + option trie -> log-probabilities   transformers, vLLM
                and boundary masses, one pass per batch
TokenSampler    context tokens -> sampled token sequences    transformers, vLLM
TextSampler     prompt text -> sampled completion texts      OpenAI-compatible API
TopLogprobs     texts -> the top-k next tokens after each    OpenAI-compatible API
==============  ==========================================  =============================

``Sampler`` is either kind of sampler. The scorers that use them live in ``crystallab.scoring``
(``exact``, ``sample``, ``topk``); a backend only computes or talks HTTP.

>>> class Echo:  # a text sampler needs only these members
...     info, device, concurrency = {}, "api", 1
...     name = "echo"
...     def render_chat(self, instruction): return instruction, "server"
...     def complete(self, text, chat, n, seed, max_tokens): return [" 7"] * n, 0
>>> methods(Echo())
('sample',)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields
from typing import AbstractSet, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.text import TokenTexts, decode_continuations, is_boundary_text, special_ids

METHODS = ("exact", "sample", "logprobs-topk")  # the one list of measurement methods


@dataclass(frozen=True)
class LoadSettings:
    """How a model is loaded: fixed for its lifetime (per-call settings travel with a request)."""

    dtype: str = field(
        default="auto", metadata={"help": "auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    device_map: str | None = field(
        default=None,
        metadata={
            "help": "auto: spread a model larger than one GPU over every visible GPU (accelerate)",
            "choices": ("auto",),
        },
    )
    revision: str | None = field(default=None, metadata={"help": "model revision (branch, tag or commit) for HF ids"})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the model repository's own code (off by default)"}
    )
    allow_pickle: bool = field(default=False, metadata={"help": "load pickle (.bin) weights when no safetensors exist"})
    allow_plain_chat: bool = field(
        default=True, metadata={"help": "give models without a chat template the plain User:/Assistant: template"}
    )

    @classmethod
    def of(cls, source: Any) -> LoadSettings:
        """The settings named like this class's fields, read from any object that has them."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)})


LeadKey = tuple[str, bool]  # a lead mask: (rest of w, whole), see TokenTexts.starts_with


@dataclass
class TrieItem:
    """One prompt's scoring request: the context tokens and the option trie in BFS order.

    ``parent[n]`` is the index of node n's parent node, or -1 when its parent is the context.
    ``lead`` asks, per (node or -1, lead mask), for the mass of the mask's tokens after the node.

    >>> TrieItem([5, 6], [1, 2, 3], [-1, 0, -1]).depth()
    [1, 2, 1]
    """

    context: list[int]
    tokens: list[int]
    parent: list[int]
    lead: list[tuple[int, LeadKey]] = field(default_factory=list)

    def depth(self) -> list[int]:
        d: list[int] = []
        for p in self.parent:
            d.append(1 if p < 0 else d[p] + 1)
        return d


@dataclass
class TrieScores:
    """Per trie node: log P(node token | context, ancestors) and log B(node), the mass of the
    boundary tokens right after the node (log of the sum over boundary tokens of P(b | ...));
    per entry of the item's ``lead``: the log-mass of its mask's tokens after its node."""

    logp: np.ndarray  # float64 [N]
    log_boundary: np.ndarray  # float64 [N]
    log_lead: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 [len(item.lead)]


@runtime_checkable
class Backend(Protocol):
    """What every loaded model has: a name, its manifest record and a way to render chat."""

    info: dict[str, Any]  # written to the manifest: never a secret
    device: Any

    @property
    def name(self) -> str: ...

    def render_chat(self, instruction: str) -> tuple[str, str]:
        """The prompt text for a chat instruction, and the template's name."""
        ...


@runtime_checkable
class Tokenized(Protocol):
    """A backend whose tokenizer is on this side of the wire (transformers, vLLM)."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]: ...
    def wants_special_tokens(self, text: str) -> bool: ...
    def encode_many(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]: ...
    def boundary_mask(self) -> np.ndarray: ...
    def eos_ids(self) -> set[int]: ...
    def token_texts(self) -> TokenTexts: ...


@runtime_checkable
class TrieScorer(Tokenized, Protocol):
    """Scores a batch of (context, option trie) requests exactly (``scoring.exact``)."""

    def score_tries(
        self,
        items: Sequence[TrieItem],
        padding_side: str = "right",
        rows: Sequence[Sequence[int]] | None = None,
        decodings: Sequence[Decoding] = (DEFAULT,),
    ) -> list[list[TrieScores]]:
        """Per item, one ``TrieScores`` per decoding setting, all from one forward pass."""
        ...


@runtime_checkable
class TokenSampler(Tokenized, Protocol):
    """Draws completions of a context, as token ids (EOS kept when generated)."""

    def sample(
        self,
        context: list[int],
        n: int,
        seed: int,
        max_new_tokens: int,
        decoding: Decoding = DEFAULT,
    ) -> list[list[int]]: ...


@runtime_checkable
class TextSampler(Protocol):
    """Draws completions of a prompt text on a server; ``chat`` sends it as one user message.
    Returns the completion texts (possibly fewer or more than ``n``: callers ask again) and the
    tokens the server reported."""

    concurrency: int  # requests a scorer may keep in flight

    def complete(
        self,
        text: str,
        chat: bool,
        n: int,
        seed: int,
        max_tokens: int | None = None,
        decoding: Decoding = DEFAULT,
    ) -> tuple[list[str], int]: ...


@runtime_checkable
class TopLogprobs(Protocol):
    """The top-k next tokens (text -> log-probability) after each of several raw texts."""

    concurrency: int

    def top_logprobs(self, texts: Sequence[str]) -> list[dict[str, float]]: ...


Sampler = TokenSampler | TextSampler


def methods(backend: object) -> tuple[str, ...]:
    """The measurement methods a backend's capabilities allow, in METHODS order."""
    have = {
        "exact": isinstance(backend, TrieScorer),
        "sample": isinstance(backend, (TokenSampler, TextSampler)),
        "logprobs-topk": isinstance(backend, TopLogprobs),
    }
    return tuple(m for m in METHODS if have[m])


def is_remote(backend: object) -> bool:
    """Served models: each prompt succeeds or fails on its own, and prompts run concurrently."""
    return not isinstance(backend, Tokenized)


def compute_boundary_mask(
    tokenizer: Any,
    vocab_size: int,
    eos_ids: AbstractSet[int] = frozenset(),
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Which token ids start a new word (or end the answer): special tokens, and tokens whose
    decoded text begins with a non-alphanumeric character, or is empty.

    ``texts`` are the token texts (decoded here when not given), each decoded after an anchor
    token whose text is stripped, because some SentencePiece decoders drop the leading space of
    the first token of a sequence (``decode_continuations``).
    """
    if texts is None:
        ids = [[i] for i in range(min(len(tokenizer), vocab_size))]
        texts = decode_continuations(tokenizer, ids, skip_special_tokens=False)
    mask = np.zeros(vocab_size, dtype=bool)
    for i, t in enumerate(texts[:vocab_size]):
        mask[i] = is_boundary_text(t)
    for i in special_ids(tokenizer, eos_ids):
        if 0 <= i < vocab_size:
            mask[i] = True
    return mask


def sample_seed(seed: int, *parts: str) -> int:
    """A per-prompt seed derived deterministically from the run seed and the prompt's identity.

    >>> sample_seed(0, "base", "coin_flip", "raw-0") == sample_seed(0, "base", "coin_flip", "raw-0")
    True
    >>> sample_seed(0, "a") != sample_seed(1, "a")
    True
    """
    return (seed * 1_000_003 + zlib.crc32("\x1f".join(parts).encode())) % (2**31 - 1)
