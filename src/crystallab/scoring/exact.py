"""The exact scorer: P(option | prompt) for every option and ⊥, as SCIENCE.md defines it.

For each prompt ``c = c̄ + w`` (``w`` its trailing spaces and tabs) the surface forms of all
options (with and without a leading space) are split into context and continuation tokens, and
inserted in one token trie. The backend scores the context and the whole trie in a single
forward pass, so the context is computed once and every shared prefix once. Then, in log space,

    P(s | c) = prod_j P(t_j | c̄, t_<j) * B(c̄, s) / W(c)
    P(o | c) = sum over the distinct token paths s of o

W(c) is the probability that the text after ``c̄`` starts with ``w`` (1 when ``w`` is empty or
stays in the context), so the answer is conditional on the prompt as written; see ``plan_lead``.

B is the boundary mass after the path. One refinement keeps events disjoint when one option's
path is a prefix of another's (``New`` / ``New York``): boundary children of a terminal node
that lead on to a longer option are not counted in its B, since that text is the longer option.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from crystallab.errors import NumericalError, UserError
from crystallab.models.base import Tokenized, TrieItem, TrieScorer, TrieScores
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.text import TokenTexts, split_blank_tail
from crystallab.suite import Task

LEAD_NODES = 64  # most trie nodes a prompt's lead w may add (see plan_lead)


def answer_strings(task: Task) -> list[tuple[int, str]]:
    """(option index, surface string) for every form, with/without a leading space per the task.

    >>> from crystallab.suite import load_task
    >>> answer_strings(load_task("coin_flip"))[:2]
    [(0, 'heads'), (0, ' heads')]
    """
    out: list[tuple[int, str]] = []
    for k, opt in enumerate(task.options):
        for f in opt.forms:
            if task.leading_space in ("both", "never"):
                out.append((k, f))
            if task.leading_space in ("both", "always"):
                out.append((k, " " + f))
    return out


@dataclass
class PromptTrie:
    """One prompt's option trie. Nodes are in BFS-compatible order (parents before children)."""

    context: list[int]
    tokens: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    terminal: dict[int, int] = field(default_factory=dict)  # node -> option index
    children: list[dict[int, int]] = field(default_factory=list)
    root_children: dict[int, int] = field(default_factory=dict)
    split: str = "moved"  # moved | kept-whitespace | fallback (see build_trie)
    lead: str = ""  # w when the context is c̄ and the answer is conditioned on w (W), else ""
    # W's terms (see plan_lead): (node, rest of w still to write, whole) and the term each extends
    lead_nodes: list[tuple[int, str, bool]] = field(default_factory=list)
    lead_up: list[int] = field(default_factory=list)

    def child(self, node: int, tok: int) -> int:
        """The node after ``node`` (-1: the context) and token ``tok``, added if new."""
        kids = self.root_children if node < 0 else self.children[node]
        if tok not in kids:
            kids[tok] = len(self.tokens)
            self.tokens.append(int(tok))
            self.parent.append(node)
            self.children.append({})
        return kids[tok]

    def insert(self, path: Sequence[int], option: int, what: str) -> None:
        node = -1
        for t in path:
            node = self.child(node, int(t))
        prev = self.terminal.get(node)
        if prev is not None and prev != option:
            raise UserError(f"surface forms collide: {what} has the same tokens as a form of option #{prev}")
        self.terminal[node] = option


def split_answers(
    backend: Tokenized,
    prompt_text: str,
    task: Task,
) -> tuple[list[int], list[tuple[int, str]], list[list[int]], str, str]:
    """(context tokens, the task's (option, answer string) pairs, each answer's token path, the
    split used: ``moved``, ``kept-whitespace`` or lm-eval's fallback, and the lead ``w`` the
    answers are conditioned on: empty when there is none or the context kept it); see
    ``build_trie``."""
    answers = answer_strings(task)
    ctx_text, lead = split_blank_tail(prompt_text)
    ctx, paths, mode = _split(backend, ctx_text, [lead + s for _, s in answers])
    if mode != "moved" and lead:
        ctx_b, paths_b, mode_b = _split(backend, prompt_text, [s for _, s in answers])
        if mode_b == "moved":
            return ctx_b, answers, paths_b, "kept-whitespace", ""
    return ctx, answers, paths, mode, lead


def build_trie(backend: Tokenized, prompt_text: str, task: Task) -> PromptTrie:
    """The prompt's context tokens and its option trie.

    The prompt's trailing spaces and tabs ``w`` move to the front of each answer (newlines stay:
    the model sees them, and common tokenizers do not merge a newline into the next word), and
    the answer's tokens are the tail of tokenize(c̄ + w + answer) after tokenize(c̄). When the
    tokens of ``c̄`` are not a prefix of that for some answer, ``w`` was merged into the context's
    last token; then the split that keeps ``w`` in the context is used if it is prefix-consistent
    for every answer (no W then: the model has read ``w``), and only otherwise is an answer
    tokenized alone (lm-eval's fallback), which would score a path the model never produces.
    """
    ctx, answers, paths, mode, lead = split_answers(backend, prompt_text, task)
    trie = PromptTrie(context=ctx, split=mode, lead=lead)
    for (k, s), path in zip(answers, paths):
        if not path:
            raise UserError(f"task {task.id}: surface form {s!r} tokenizes to nothing")
        trie.insert(path, k, f"form {s!r} of option '{task.options[k].label}'")
    if lead:
        plan_lead(trie, backend.token_texts())
    return trie


def plan_lead(trie: PromptTrie, vocab: TokenTexts, budget: int | None = None) -> None:
    """The terms of W(c), the probability that the text after ``c̄`` starts with ``w``.

    At a node with ``rest`` of ``w`` still to write, W sums the tokens that start ``rest`` and,
    for each token that is a proper prefix of it (a lone space when ``w`` is two spaces), that
    token's probability times W one level deeper. Those prefix tokens become trie nodes, so W
    comes from the same forward pass as the answers; counting only the first level would leave
    out answer paths such as ``' '``, ``' 7'`` and could give probabilities above 1. Past
    ``budget`` nodes (long runs of blanks in a vocabulary with many space-run tokens) a term
    counts its prefix tokens in full (``whole``): W is then an upper bound, so probabilities
    stay lower bounds that never sum above 1. ``budget`` defaults to LEAD_NODES.
    """
    budget = LEAD_NODES if budget is None else budget
    trie.lead_nodes, trie.lead_up = [(-1, trie.lead, False)], [-1]
    added, i = 0, 0
    while i < len(trie.lead_nodes):
        node, rest, _ = trie.lead_nodes[i]
        pre = vocab.prefixes(rest)
        if added + len(pre) > budget:
            trie.lead_nodes[i] = (node, rest, True)
        else:
            for tok, tail in pre:
                trie.lead_nodes.append((trie.child(node, tok), tail, False))
                trie.lead_up.append(i)
            added += len(pre)
        i += 1


def lead_log_mass(trie: PromptTrie, logp: np.ndarray, log_lead: np.ndarray) -> float:
    """log W(c) from the node scores and each lead term's own mask mass (0 without a lead)."""
    if not trie.lead_nodes:
        return 0.0
    acc = [float(x) for x in log_lead]
    for i in range(len(acc) - 1, 0, -1):  # terms come after the term they extend
        up, node = trie.lead_up[i], trie.lead_nodes[i][0]
        acc[up] = float(np.logaddexp(acc[up], logp[node] + acc[i]))
    return acc[0]


def _split(backend: Tokenized, ctx_text: str, conts: list[str]) -> tuple[list[int], list[list[int]], str]:
    ctx = backend.encode(ctx_text)
    wholes = backend.encode_many(
        [ctx_text + c for c in conts], add_special_tokens=backend.wants_special_tokens(ctx_text)
    )
    ok = [w[: len(ctx)] == ctx and len(w) > len(ctx) for w in wholes]
    if all(ok):
        return ctx, [w[len(ctx) :] for w in wholes], "moved"
    alone = backend.encode_many(conts, add_special_tokens=False)
    return ctx, [w[len(ctx) :] if good else a for w, a, good in zip(wholes, alone, ok)], "fallback"


def lead_requests(trie: PromptTrie) -> list[tuple[int, tuple[str, bool]]]:
    """What the backend must sum for W: per lead term, its node and its mask (rest, whole)."""
    return [(node, (rest, whole)) for node, rest, whole in trie.lead_nodes]


def trie_probabilities(
    trie: PromptTrie,
    logp: np.ndarray,
    log_boundary: np.ndarray,
    boundary: np.ndarray,
    n_options: int,
    log_w: float = 0.0,
) -> np.ndarray:
    """Option probabilities from per-node scores, divided by W = exp(log_w); the last entry is
    ⊥ = 1 - sum. When W is 0 the prompt as written has no continuation at all: all ⊥."""
    probs = np.zeros(n_options + 1)
    if log_w == -np.inf:
        probs[n_options] = 1.0
        return probs
    cum = np.empty(len(trie.tokens))
    for n, p in enumerate(trie.parent):  # parents come before children
        cum[n] = logp[n] + (cum[p] if p >= 0 else 0.0)
    for node, k in trie.terminal.items():
        b = math.exp(log_boundary[node])
        # boundary children that continue to a longer option are that option, not this one
        for tok, child in trie.children[node].items():
            if boundary[tok]:
                b -= math.exp(logp[child])
        probs[k] += math.exp(cum[node] - log_w) * max(b, 0.0)
    total = probs[:n_options].sum()
    if not np.isfinite(total):
        raise NumericalError("non-finite option probabilities (NaN/inf logits?)")
    probs[n_options] = max(0.0, 1.0 - total)
    if total > 1.0:  # only float rounding can do this; renormalise so the row sums to 1
        probs[:n_options] /= total
    return probs


@dataclass
class ScoreStats:
    prompts: int = 0
    options: int = 0
    tokens_forwarded: int = 0  # context + trie tokens actually run, padding excluded
    padded_tokens: int = 0  # including padding
    trie_nodes: int = 0
    context_tokens: int = 0
    seconds: float = 0.0
    lead_mass: list[float] = field(default_factory=list)  # W(c) per prompt, in input order (debug)

    def add(self, other: "ScoreStats") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def plan_batches(sizes: Sequence[int], batch_tokens: int, row_tokens: int) -> list[list[list[int]]]:
    """Batches of rows of prompt indices: each row holds one or more prompts' segments end to end.

    For a number of rows R, prompts go longest first to the least-filled row; a row of several
    prompts holds at most ``max(longest prompt, row_tokens)`` tokens, and at most
    ``batch_tokens``. Rows sorted by length are grouped into batches of at most ``batch_tokens``
    padded tokens (at least one row per batch). R is chosen for the fewest padded tokens (the
    most rows, so the shortest rows, on ties): packing removes padding, and ``row_tokens``
    bounds the dense attention a row pays for.

    >>> plan_batches([5, 3, 2, 9], batch_tokens=20, row_tokens=8)
    [[[0], [1, 2]], [[3]]]
    >>> plan_batches([5, 3, 2], batch_tokens=1, row_tokens=8)
    [[[2]], [[1]], [[0]]]
    """
    import heapq

    if not sizes:
        return []
    n, longest = len(sizes), max(sizes)
    multi = min(max(longest, row_tokens), batch_tokens)  # most tokens in a row of several prompts
    order = sorted(range(n), key=lambda k: (-sizes[k], k))
    r0 = max(1, -(-sum(sizes) // max(multi, longest)))
    best: tuple[int, int, list[list[list[int]]]] | None = None
    for R in sorted({*range(r0, min(n, r0 + 64) + 1), n}):
        heap = [(0, r) for r in range(R)]
        rows: list[list[int]] = [[] for _ in range(R)]
        fill = [0] * R
        for i in order:
            f, r = heapq.heappop(heap)
            rows[r].append(i)
            fill[r] = f + sizes[i]
            heapq.heappush(heap, (fill[r], r))
        if any(len(rows[r]) > 1 and fill[r] > multi for r in range(R)):
            continue
        plan = _group_rows([sorted(r) for r in rows if r], [f for f in fill if f], batch_tokens)
        padded = sum(max(sum(sizes[i] for i in r) for r in rows_) * len(rows_) for rows_ in plan)
        if best is None or (padded, -R) < (best[0], -best[1]):
            best = (padded, R, plan)
    assert best is not None  # R = n, one prompt per row, is always feasible
    return best[2]


def _group_rows(rows: list[list[int]], fill: list[int], batch_tokens: int) -> list[list[list[int]]]:
    order = sorted(range(len(rows)), key=lambda r: (fill[r], rows[r]))
    batches: list[list[list[int]]] = []
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and fill[order[j]] * (j - i + 1) <= batch_tokens:
            j += 1
        batches.append([rows[r] for r in order[i:j]])
        i = j
    return batches


def default_row_tokens(backend: TrieScorer) -> int:
    """Row capacity for packing: short rows on CPU, where a row pays dense attention over its
    whole length, long ones on CUDA, where attention is cheap next to the weights' matmuls."""
    return 1024 if str(getattr(backend, "device", "cpu")).startswith("cuda") else 256


def score_exact(
    backend: TrieScorer,
    prompts: Sequence[str],
    task: Task,
    batch_tokens: int = 4096,
    padding_side: str = "right",
    stats: ScoreStats | None = None,
    row_tokens: int | None = None,
    decoding: Decoding = DEFAULT,
) -> list[np.ndarray]:
    """Exact distributions (K options, then ⊥) for each prompt text, in input order, under one
    decoding setting (default: T = 1, no truncation); see ``score_exact_each``."""
    return score_exact_each(backend, prompts, task, [decoding], batch_tokens, padding_side, stats, row_tokens)[0]


def score_exact_each(
    backend: TrieScorer,
    prompts: Sequence[str],
    task: Task,
    decodings: Sequence[Decoding],
    batch_tokens: int = 4096,
    padding_side: str = "right",
    stats: ScoreStats | None = None,
    row_tokens: int | None = None,
) -> list[list[np.ndarray]]:
    """Exact distributions per decoding setting (outer list) and prompt (inner, input order).

    Prompts are packed into rows (several short prompts per row, see ``plan_batches``) and the
    rows into batches of at most ``batch_tokens`` padded tokens; each batch is one forward pass,
    and every decoding is read from it (only the per-node softmaxes repeat). At every trie node
    the next-token distribution is the processed one (models/decoding.py): a path through a
    token its truncation removes has probability 0, and that mass is ⊥, not any option's.
    ``stats.lead_mass`` receives each prompt's W(c) under the first decoding.
    """
    t0 = time.perf_counter()
    for d in decodings:
        d.validate()
    tries = [build_trie(backend, p, task) for p in prompts]
    boundary = backend.boundary_mask()
    size = [len(t.context) + len(t.tokens) for t in tries]
    out: list[list[np.ndarray | None]] = [[None] * len(tries) for _ in decodings]
    lead_w = [1.0] * len(tries)
    st = ScoreStats()
    for rows in plan_batches(size, batch_tokens, row_tokens or default_row_tokens(backend)):
        batch = [b for r in rows for b in r]
        local = {b: k for k, b in enumerate(batch)}
        items = [TrieItem(t.context, t.tokens, t.parent, lead_requests(t)) for t in (tries[b] for b in batch)]
        scores = backend.score_tries(
            items, padding_side=padding_side, rows=[[local[b] for b in r] for r in rows], decodings=list(decodings)
        )
        for b, per in zip(batch, scores):
            for j, sc in enumerate(per):
                _check_finite(sc, prompts[b], backend)
                log_w = lead_log_mass(tries[b], sc.logp, sc.log_lead)
                if j == 0:
                    lead_w[b] = math.exp(log_w)
                out[j][b] = trie_probabilities(tries[b], sc.logp, sc.log_boundary, boundary, len(task.options), log_w)
        st.padded_tokens += max(sum(size[b] for b in r) for r in rows) * len(rows)
    st.prompts = len(tries)
    st.options = len(tries) * len(task.options)
    st.tokens_forwarded = sum(size)
    st.trie_nodes = sum(len(t.tokens) for t in tries)
    st.context_tokens = sum(len(t.context) for t in tries)
    st.seconds = time.perf_counter() - t0
    st.lead_mass = lead_w
    if stats is not None:
        stats.add(st)
    return out  # type: ignore[return-value]


def _check_finite(sc: TrieScores, prompt: str, backend: TrieScorer) -> None:
    """Refuse NaN or +inf scores. A -inf is a probability of 0 (a token truncation removed, or
    no token of a kind), never an error."""
    if not all(np.all(~np.isnan(x) & (x != np.inf)) for x in (sc.logp, sc.log_boundary, sc.log_lead)):
        dtype = getattr(backend, "info", {}).get("dtype", "?")
        hint = "the weights themselves hold NaN/inf?" if dtype == "float32" else "overflow? try --dtype float32"
        raise NumericalError(
            f"NaN or inf logits for prompt {prompt[:60]!r} (model dtype {dtype}: {hint}); nothing was written for it"
        )
