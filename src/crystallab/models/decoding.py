"""Decoding settings (temperature, top-k, top-p, min-p) and the next-token distribution they give.

A ``Decoding`` travels with a scoring or sampling request. The exact scorer applies it at every
trie node, so P(option | prompt) is the probability that a sampler with these settings writes
the option (SCIENCE.md "Exact distributions"; docs/scoring.md "Decoding settings").

The processing order is transformers' (``GenerationMixin._get_logits_processor``):

1. temperature: logits / T;
2. top-k: tokens below the k-th largest logit are removed (ties with it are kept);
3. top-p: of the tokens left, sorted by probability, the smallest prefix whose mass reaches
   ``top_p`` is kept (a token is removed when the mass ranked above it is already ``>= top_p``);
4. min-p: tokens whose probability is below ``min_p`` times the top token's are removed;

then the kept tokens are renormalised, and a removed token has probability 0. vLLM applies
min-p before top-k and top-p (``order="vllm"``); the two orders differ only when min-p and
top-p are combined (top-p's mass is then taken over fewer tokens).

Each truncation keeps the tokens whose logit is at least a per-row threshold, so the kept set
is ``{t : logit_t >= tau}`` (``threshold``); backends reduce a row of logits with that.

>>> import numpy as np
>>> logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
>>> np.round(np.exp(processed_logprobs(logits, Decoding(top_p=0.7))), 4).tolist()
[0.625, 0.375, 0.0, 0.0]
>>> np.round(np.exp(processed_logprobs(logits, Decoding(temperature=0.5))), 4).tolist()
[0.6849, 0.2466, 0.0616, 0.0068]
>>> Decoding(temperature=0.7, top_p=0.95).label
'T=0.7 top-p=0.95'
>>> Decoding(top_p=1.5).validate()
Traceback (most recent call last):
crystallab.errors.UserError: --top-p must be in (0, 1], got 1.5
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from crystallab.errors import UserError

ORDERS = ("transformers", "vllm")
COLUMNS = ("temperature", "top_k", "top_p", "min_p")  # the results table's columns, in this order


@dataclass(frozen=True)
class Decoding:
    """One decoding setting; the defaults are pure ancestral sampling (T = 1, no truncation)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off

    def validate(self) -> None:
        t, k, p, m = self.temperature, self.top_k, self.top_p, self.min_p
        if not _number(t) or not t > 0 or not math.isfinite(t):
            raise UserError(f"--temperature must be a positive number, got {t}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise UserError(f"--top-k must be a positive integer (0: off), got {k}")
        if not _number(p) or not 0 < p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {p}")
        if not _number(m) or not 0 <= m < 1:
            raise UserError(f"--min-p must be in [0, 1), got {m}")

    @property
    def truncates(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    @property
    def is_default(self) -> bool:
        return self.temperature == 1.0 and not self.truncates

    @property
    def label(self) -> str:
        """A short name: ``T=0.7 top-p=0.95`` (``T=1`` for the defaults)."""
        parts = [f"T={self.temperature:g}"]
        if self.top_k:
            parts.append(f"top-k={self.top_k}")
        if self.top_p < 1:
            parts.append(f"top-p={self.top_p:g}")
        if self.min_p > 0:
            parts.append(f"min-p={self.min_p:g}")
        return " ".join(parts)

    def columns(self) -> dict[str, Any]:
        """The row columns that record this setting."""
        return {"temperature": float(self.temperature), "top_k": int(self.top_k), "top_p": float(self.top_p),
                "min_p": float(self.min_p)}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Decoding:
        """The setting a row (or any mapping with the four columns) records; a missing or null
        column is the default (results written before these columns existed)."""
        d = cls()
        vals = {c: row.get(c) for c in COLUMNS}
        return cls(**{c: (type(getattr(d, c))(v) if v is not None else getattr(d, c)) for c, v in vals.items()})


DEFAULT = Decoding()


def _number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))


def decodings(
    temperatures: Iterable[float] = (1.0,), top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> list[Decoding]:
    """One ``Decoding`` per temperature, sharing the truncation settings; each validated.

    >>> [d.label for d in decodings((0.5, 1.0), top_k=5)]
    ['T=0.5 top-k=5', 'T=1 top-k=5']
    """
    temps = list(temperatures)
    if not temps:
        raise UserError("--temperature needs at least one value")
    if len(set(temps)) != len(temps):
        raise UserError(f"--temperature lists a value twice: {','.join(f'{t:g}' for t in temps)}")
    out = [Decoding(float(t) if _number(t) else t, top_k, top_p, min_p) for t in temps]
    for d in out:
        d.validate()
    return out


def _log_softmax(s: np.ndarray) -> np.ndarray:
    m = np.max(s)
    if not np.isfinite(m):
        return np.full_like(s, np.nan if np.isnan(m) or m > 0 else -np.inf)
    return s - (m + np.log(np.sum(np.exp(s - m))))


def threshold(logits: np.ndarray, d: Decoding, order: str = "transformers") -> float:
    """The logit ``tau`` such that the tokens the setting keeps are exactly ``logits >= tau``
    (ties at the top-p cut are kept, where transformers keeps them in sort order).

    >>> bool(threshold(np.log(np.array([0.5, 0.3, 0.15, 0.05])), Decoding(top_k=2)) == np.log(0.3))
    True
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    x = np.asarray(logits, dtype=np.float64)  # thresholds stay in logit units: x / T keeps the order
    tau = -np.inf
    steps = ("top_k", "top_p", "min_p") if order == "transformers" else ("min_p", "top_k", "top_p")
    for step in steps:
        if step == "top_k" and 0 < d.top_k < x.size:
            tau = max(tau, float(np.partition(x, x.size - d.top_k)[x.size - d.top_k]))
        elif step == "top_p" and d.top_p < 1.0:
            kept = np.sort(x[x >= tau])[::-1]
            p = np.exp(_log_softmax(kept / d.temperature))
            r = min(int(np.searchsorted(np.cumsum(p), d.top_p)), kept.size - 1)  # first rank reaching top_p
            tau = max(tau, float(kept[r]))
        elif step == "min_p" and d.min_p > 0.0:
            tau = max(tau, float(np.max(x)) + d.temperature * math.log(d.min_p))
    return tau


def processed_logprobs(logits: np.ndarray, d: Decoding, order: str = "transformers") -> np.ndarray:
    """log P(token) under the setting, from one row of logits (or of raw log-probabilities):
    scaled, truncated (-inf) and renormalised. The reference the backends are tested against."""
    x = np.asarray(logits, dtype=np.float64)
    s = x / d.temperature
    if d.truncates:
        s = np.where(x >= threshold(x, d, order), s, -np.inf)
    return _log_softmax(s)
