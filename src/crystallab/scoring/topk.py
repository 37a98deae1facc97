"""Approximate exact scoring from a server's top-k next-token logprobs (``--method logprobs-topk``).

The answer strings are walked as text: every top-k token that continues an answer is queried
again, one position deeper, until the answer is complete and the next token closes it (a token
starting with a character that is not a letter or digit, or EOS). Option probabilities are lower
bounds; ``uncovered`` is an upper bound on what they miss: the sum, over every queried position,
of the path's probability times the mass outside the top-k list there (divided by W when the
prompt ends with blanks, see ``topk_walk``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from crystallab.errors import UserError
from crystallab.models.base import TopLogprobs
from crystallab.models.text import is_boundary_text, split_blank_tail
from crystallab.suite import Task


class TopkError(Exception):
    """The server's answer cannot be walked (no top logprobs): the prompt fails, and is retried."""


@dataclass
class TopkResult:
    probs: np.ndarray  # K options, then ⊥ (the options are lower bounds)
    uncovered: float  # upper bound on the option mass the top-k lists did not show
    queried: int  # distinct texts the walk asked about


def score_topk(backend: TopLogprobs, text: str, task: Task) -> TopkResult:
    """One raw prompt's option distribution from top-k walks, each text asked about once."""
    from crystallab.scoring.exact import answer_strings

    cache: dict[str, dict[str, float]] = {}

    def query(texts: list[str]) -> list[dict[str, float]]:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, backend.top_logprobs(new)))
        return [cache[t] for t in texts]

    probs, unc, q = topk_walk(text, answer_strings(task), len(task.options), query)
    return TopkResult(probs=probs, uncovered=unc, queried=q)


def topk_walk(
    prompt: str,
    answers: Sequence[tuple[int, str]],
    n_options: int,
    top_logprobs: Callable[[list[str]], list[dict[str, float]]],
) -> tuple[np.ndarray, float, int]:
    """Option probabilities (K, then ⊥), the uncovered-mass bound and the number of distinct
    texts queried, from ``top_logprobs(texts) -> [{token_text: logprob}, ...]`` (the server's
    top-k after each text; one level of the walk is asked at once).

    The prompt's trailing spaces and tabs ``w`` move into the answers, as in the exact scorer,
    and the answers are conditioned on the text after ``c̄`` starting with ``w``: with ``Wt``
    that event's mass among the walked paths and ``Uw`` the mass outside the top-k lists while
    ``w`` is being written, the true W lies in ``[Wt, Wt + Uw]``, so options are divided by
    ``Wt + Uw`` (still lower bounds) and ``uncovered`` bounds the rest: ``(N + U) / Wt - sum``.

    >>> table = {"Q:": {" a": math.log(0.5), " b": math.log(0.3), "\\n": math.log(0.1)},
    ...          "Q: a": {"\\n": math.log(0.9), "x": math.log(0.05)}, "Q: b": {".": math.log(0.6)}}
    >>> probs, unc, q = topk_walk("Q: ", [(0, "a"), (0, " a"), (1, "b"), (1, " b")], 2,
    ...                           lambda ts: [table[t] for t in ts])
    >>> [round(float(x), 4) for x in probs], round(unc, 4), q
    ([0.5, 0.2, 0.3], 0.3937, 3)

    A newline stays in the context (no lead, W = 1):

    >>> table = {"Q:\\n": {"a": math.log(0.5), "b": math.log(0.25)},
    ...          "Q:\\na": {",": 0.0}, "Q:\\nb": {"c": 0.0}}
    >>> probs, unc, q = topk_walk("Q:\\n", [(0, "a"), (1, "b")], 2, lambda ts: [table[t] for t in ts])
    >>> [round(float(x), 4) for x in probs], round(unc, 4), q
    ([0.5, 0.0, 0.5], 0.25, 3)
    """
    ctx, lead = split_blank_tail(prompt)
    texts: dict[str, int] = {}
    for k, s in answers:
        a = lead + s
        if texts.setdefault(a, k) != k:
            raise UserError(f"surface forms collide: {a!r} names two options")
    probs = np.zeros(n_options + 1)
    uncovered = 0.0
    lead_mass, lead_unc = (0.0, 0.0) if lead else (1.0, 0.0)  # Wt, Uw
    queried: set[str] = set()
    frontier: list[tuple[str, float]] = [("", 0.0)]
    while frontier:
        # the same text reached through two tokenizations is one node: add up its path mass
        merged: dict[str, float] = {}
        for s, lp in frontier:
            merged[s] = float(np.logaddexp(merged[s], lp)) if s in merged else lp
        frontier = list(merged.items())
        nxt: list[tuple[str, float]] = []
        results = top_logprobs([ctx + s for s, _ in frontier])
        queried.update(s for s, _ in frontier)
        for (s, lp), top in zip(frontier, results):
            if not top:
                raise TopkError("the server returned no top logprobs")
            covered = sum(math.exp(v) for v in top.values())
            miss = math.exp(lp) * max(0.0, 1.0 - covered)
            uncovered += miss
            writing = len(s) < len(lead)  # s is then a proper prefix of w: every answer starts with w
            lead_unc += miss if writing else 0.0
            for t, lt in top.items():
                p = math.exp(lp + lt)
                s2 = s + t
                if writing and s2.startswith(lead):
                    lead_mass += p
                if t and any(a.startswith(s2) for a in texts):
                    nxt.append((s2, lp + lt))
                    continue
                # the longest answer that s2 completes and that a boundary character then closes
                best = max(
                    (
                        a
                        for a in texts
                        if len(a) >= len(s)
                        and s2.startswith(a)
                        and (len(s2) == len(a) and not t or len(s2) > len(a) and is_boundary_text(s2[len(a) :]))
                    ),
                    key=len,
                    default=None,
                )
                if best is not None and best:
                    probs[texts[best]] += p
        frontier = nxt
    found = probs[:n_options].sum()
    probs[:n_options] /= max(lead_mass + lead_unc, 1e-300)  # found is 0 when both are
    total = probs[:n_options].sum()
    probs[n_options] = max(0.0, 1.0 - total)
    bound = (found + uncovered) / lead_mass - total if lead_mass > 0 else 1.0
    return probs, float(min(max(bound, 0.0), 1.0)), len(queried)
