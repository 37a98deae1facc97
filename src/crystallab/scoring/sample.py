"""The sampled estimator: N completions per prompt under a decoding setting (default T = 1), parsed, counted.

Completions are drawn from the same context tokens the exact scorer conditions on, so the two
estimate the same distribution. When the prompt's trailing spaces and tabs ``w`` moved into the
answers, completions are drawn from ``c̄`` and only those that write ``w`` first are kept (the
exact scorer divides by W, the probability of that event), with ``w`` stripped before parsing;
more are drawn until N are kept, up to MAX_DRAWS * N.

Two parsers:
  ``text``   (default) the task's parser: strip whitespace and the task's preambles, then the
             first option surface form at the start, followed by a non-alphanumeric character
             or the end. Lenient, as a human reading the answer would be.
  ``tokens`` the exact event the exact scorer computes: the completion's tokens follow one
             option's token path in the trie and then a boundary token (or end). Use it to check
             the exact scorer; it counts tokenizations that are not canonical as ⊥.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from crystallab.models.base import TextSampler, TokenSampler, sample_seed
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.text import MAX_DRAWS, decode_continuations, next_draws, split_blank_tail, strip_lead
from crystallab.suite import Task

_LEAD = " \t\r\n\"'`*_([{>#."


@lru_cache(maxsize=64)
def _matchers(task: Task) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    fold = (lambda s: s) if task.case_sensitive else str.casefold
    forms = sorted(((fold(f), k) for k, o in enumerate(task.options) for f in o.forms), key=lambda x: -len(x[0]))
    preambles = tuple(sorted((p.casefold() for p in task.preambles), key=len, reverse=True))
    return tuple(forms), preambles


def _word_end(s: str, i: int) -> bool:
    return i >= len(s) or not s[i].isalnum()


def parse_answer(text: str, task: Task) -> int | None:
    """Index of the option the answer names, or None (⊥).

    >>> from crystallab.suite import load_task
    >>> t = load_task("number_1_10")
    >>> [parse_answer(s, t) for s in [" 7", "Sure! I pick **7**.", "10", "1", "107", "Seven.", "none"]]
    [6, 6, 9, 0, None, 6, None]
    """
    forms, preambles = _matchers(task)
    s = text
    for _ in range(8):  # peel preambles and decoration, a few layers deep at most
        s = s.lstrip(_LEAD)
        low = s.casefold()
        for p in preambles:
            if low.startswith(p) and (not p[-1].isalnum() or _word_end(low, len(p))):
                s = s[len(p) :]
                break
        else:
            break
    cmp = s if task.case_sensitive else s.casefold()
    for f, k in forms:
        if cmp.startswith(f) and _word_end(cmp, len(f)):
            return k
    return None


def parse_tokens(tokens: Sequence[int], trie, boundary: np.ndarray, eos: set[int]) -> int | None:
    """The exact scorer's event on a sampled token sequence: the tokens follow an option's path
    in the trie, then leave it through a boundary token (or EOS). A boundary token that the trie
    continues with leads on to a longer option, as in the exact scorer. A completion cut by
    max_new_tokens inside or right after a path is ⊥ (callers allow one token past the deepest
    path)."""
    node, kids = -1, trie.root_children
    for t in tokens:
        if t in eos:
            return trie.terminal.get(node) if node >= 0 else None
        if t in kids:
            node = kids[t]
            kids = trie.children[node]
            continue
        return trie.terminal[node] if node >= 0 and node in trie.terminal and boundary[t] else None
    return None


@dataclass
class SampleResult:
    counts: np.ndarray  # [K + 1], ⊥ last
    completions: list[str]  # kept completions, as continuations of the prompt as written
    parsed: list[int | None]
    drawn: int = 0  # completions drawn, kept or not (debug: kept / drawn estimates W)
    tokens: int = 0  # tokens a server reported (text samplers); 0 for local backends

    @property
    def probs(self) -> np.ndarray:
        """Counts as frequencies; all ⊥ when no completion wrote the prompt's lead (W ~ 0)."""
        if self.counts.sum() == 0:
            return np.eye(len(self.counts))[-1]
        return self.counts / self.counts.sum()


def sample_prompt(
    backend: TokenSampler,
    prompt_text: str,
    task: Task,
    n: int,
    seed: int,
    parser: str = "text",
    decoding: Decoding = DEFAULT,
    max_new_tokens: int | None = None,
) -> SampleResult:
    """Draw ``n`` completions of one prompt under ``decoding`` and count the options they name."""
    from crystallab.scoring.exact import build_trie

    if n <= 0:
        raise ValueError("the number of samples must be positive")
    trie = build_trie(backend, prompt_text, task)
    depth = max(max(trie_depths(trie), default=1), len(trie.lead))  # covering w takes <= len(w) tokens
    if max_new_tokens is None:
        max_new_tokens = depth + 1 if parser == "tokens" else max(16, depth + 8)
    seqs, drawn = draw_kept(backend, trie.context, trie.lead, n, seed, max_new_tokens, decoding)
    # the kept tokens write w first; a decoder that still loses it leaves the text as decoded
    decoded = decode_continuations(backend.tokenizer, seqs)
    texts = [t if (u := strip_lead(t, trie.lead)) is None else u for t in decoded]
    K = len(task.options)
    counts = np.zeros(K + 1, dtype=np.int64)
    parsed: list[int | None] = []
    boundary, eos = backend.boundary_mask(), backend.eos_ids()
    for seq, text in zip(seqs, texts):
        k = parse_tokens(seq, trie, boundary, eos) if parser == "tokens" else parse_answer(text, task)
        parsed.append(k)
        counts[K if k is None else k] += 1
    return SampleResult(counts=counts, completions=texts, parsed=parsed, drawn=drawn)


def draw_kept(
    backend: TokenSampler,
    context: list[int],
    lead: str,
    n: int,
    seed: int,
    max_new_tokens: int,
    decoding: Decoding = DEFAULT,
) -> tuple[list[list[int]], int]:
    """Up to ``n`` completions of ``context`` that write ``lead`` first (all of them when there
    is no lead), and how many were drawn. The first round uses ``seed`` itself, so a prompt
    without a lead draws what it always drew; the first n kept of i.i.d. draws are an i.i.d.
    sample of the conditional distribution."""
    if not lead:
        return backend.sample(context, n=n, seed=seed, max_new_tokens=max_new_tokens, decoding=decoding), n
    vocab = backend.token_texts()
    kept: list[list[int]] = []
    drawn, budget, r = 0, MAX_DRAWS * n, 0
    while len(kept) < n and (k := next_draws(n - len(kept), len(kept), drawn, budget - drawn)) > 0:
        s = seed if r == 0 else sample_seed(seed, "lead", str(r))
        got = backend.sample(context, n=k, seed=s, max_new_tokens=max_new_tokens, decoding=decoding)
        kept += [q for q in got if vocab.covers(q, lead)]
        drawn, r = drawn + k, r + 1
    return kept[:n], drawn


def trie_depths(trie) -> list[int]:
    d: list[int] = []
    for p in trie.parent:
        d.append(1 if p < 0 else d[p] + 1)
    return d


def sample_text_prompt(
    backend: TextSampler, text: str, chat: bool, task: Task, n: int, seed: int, decoding: Decoding = DEFAULT
) -> SampleResult:
    """N completions of one prompt from a server, parsed with the task's text parser.

    Raw prompts are sent as ``c̄`` (without their trailing spaces and tabs ``w``), and only the
    completions that start with ``w`` are kept, ``w`` stripped, as the local sampler does. A server
    may cap ``n`` or ignore it (``transformers serve`` answers one per request), so more are asked
    for, concurrently, until N are kept, up to MAX_DRAWS * N.
    """
    if n <= 0:
        raise ValueError("the number of samples must be positive")
    ctx, lead = (text, "") if chat else split_blank_tail(text)
    texts: list[str] = []
    tokens = drawn = 0

    def keep(got: list[str], tk: int) -> None:
        nonlocal tokens, drawn
        tokens, drawn = tokens + tk, drawn + len(got)
        for t in got:
            if (u := strip_lead(t, lead)) is not None and len(texts) < n:
                texts.append(u)

    first, k_first = backend.complete(ctx, chat, n, seed, decoding=decoding)
    keep(first[:n], k_first)
    per = max(1, len(first))
    j = 1
    with ThreadPoolExecutor(max_workers=max(1, backend.concurrency)) as pool:
        while len(texts) < n and (want := next_draws(n - len(texts), len(texts), drawn, MAX_DRAWS * n - drawn)):
            asks = [min(per, want - i * per) for i in range(min(-(-want // per), 4 * backend.concurrency))]
            futs = [
                pool.submit(backend.complete, ctx, chat, k, sample_seed(seed, str(j + i)), decoding=decoding)
                for i, k in enumerate(asks)
            ]
            j += len(asks)
            for f, k in zip(futs, asks):
                got, tk = f.result()
                keep(got[:k], tk)
    K = len(task.options)
    parsed = [parse_answer(t, task) for t in texts]
    counts = np.bincount([K if k is None else k for k in parsed], minlength=K + 1).astype(np.int64)
    return SampleResult(counts=counts, completions=texts, parsed=parsed, drawn=drawn, tokens=tokens)
