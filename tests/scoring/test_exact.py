"""The exact scorer against a brute-force reference, on the tokenizer kinds tests/tiny.py makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystallab.scoring.exact import ScoreStats, build_trie, score_exact, split_answers
from crystallab.suite import load_task, task_from_dict

TOL = 1e-5
ENDINGS = [" ", "\t", "\n", "\n ", "", "  "]  # space, tab, newline, newline + space, nothing, two spaces
BASE = "Random numbers between 1 and 10: 3, 8,"


def reference_paths(tok, prompt: str, strings: list[str]) -> tuple[list[int], list[list[int]], str]:
    """The split rule of docs/scoring.md, written out independently of the scorer: the
    prompt's trailing spaces and tabs w move into the answers when the tokens of c̄ are a prefix
    of every c̄ + w + answer; else the context keeps w if that is prefix-consistent; else lm-eval's
    fallback (the answer tokenized alone). Returns the context, the paths and the lead the
    answers are conditioned on ("" when w is empty or the context kept it)."""

    def enc(text, add):
        return tok(text, add_special_tokens=add).input_ids

    def attempt(ctx_text, conts):
        add = not (tok.bos_token and ctx_text.startswith(tok.bos_token))
        ctx = enc(ctx_text, add)
        wholes = [enc(ctx_text + c, add) for c in conts]
        good = [w[: len(ctx)] == ctx and len(w) > len(ctx) for w in wholes]
        return ctx, [w[len(ctx) :] if g else enc(c, False) for w, c, g in zip(wholes, conts, good)], all(good)

    cbar = prompt.rstrip(" \t")
    w = prompt[len(cbar) :]
    ctx, paths, ok = attempt(cbar, [w + s for s in strings])
    if not ok and w:
        ctx2, paths2, ok2 = attempt(prompt, strings)
        if ok2:
            return ctx2, paths2, ""
    return ctx, paths, w


def full_logp(be, ids: list[int], decoding=None) -> torch.Tensor:
    """log-softmax rows of one full forward pass, in float64; with ``decoding``, of the logits
    after transformers' own logits warpers for it (the ground truth of a decoding setting)."""
    with torch.no_grad():
        logits = be.model(torch.tensor([ids])).logits[0].double()
    if decoding is not None:
        logits = warpers(decoding)(torch.tensor([ids]), logits)
    return torch.log_softmax(logits, -1)


def warpers(d):
    """transformers' LogitsWarpers for a decoding setting, in generate()'s order."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    ps = []
    if d.temperature != 1.0:
        ps.append(TemperatureLogitsWarper(d.temperature))
    if d.top_k:
        ps.append(TopKLogitsWarper(d.top_k))
    if d.top_p < 1.0:
        ps.append(TopPLogitsWarper(d.top_p))
    if d.min_p > 0.0:
        ps.append(MinPLogitsWarper(d.min_p))
    return LogitsProcessorList(ps)


def token_texts_by_hand(be) -> list[str]:
    """Each token's text, decoded after the token 'a' (written out here, not the library's)."""
    tok = be.tokenizer
    a = tok.convert_tokens_to_ids("a")
    head = tok.decode([a])
    return [tok.decode([a, i])[len(head) :] for i in range(len(tok))]


def brute_force_lead(be, ctx: list[int], rest: str, texts: list[str], special: set[int], decoding=None) -> float:
    """W: the probability that the text after ctx starts with ``rest``, by recursion over the
    tokens whose text is a proper prefix of it, one full forward pass per level."""
    p = full_logp(be, ctx, decoding)[-1].exp()
    total = 0.0
    for i, t in enumerate(texts):
        if i in special or not t:
            continue
        if t.startswith(rest):
            total += float(p[i])
        elif len(t) < len(rest) and rest.startswith(t):
            total += float(p[i]) * brute_force_lead(be, ctx + [i], rest[len(t) :], texts, special, decoding)
    return total


def brute_force(backend, prompt: str, task, decoding=None) -> np.ndarray:
    """SCIENCE.md's definition written out directly: every surface form (with and without a
    leading space) as its own full sequence, no cache, no trie, a full softmax in float64, and
    W(c) by its own forward passes."""
    strings, owner = [], []
    for k, opt in enumerate(task.options):
        for form in opt.forms:
            for s in [form, " " + form] if task.leading_space == "both" else [form]:
                strings.append(s)
                owner.append(k)
    ctx, paths, lead = reference_paths(backend.tokenizer, prompt, strings)
    probs = np.zeros(len(task.options) + 1)
    seen = set()
    for k, path in zip(owner, paths):
        if (k, tuple(path)) in seen:  # distinct token paths only
            continue
        seen.add((k, tuple(path)))
        probs[k] += brute_force_path(backend, ctx, path, decoding=decoding)
    if lead:
        special = set(backend.tokenizer.all_special_ids) | backend.eos_ids()
        probs[:-1] /= brute_force_lead(backend, ctx, lead, token_texts_by_hand(backend), special, decoding)
    probs[-1] = 1 - probs[:-1].sum()
    return probs


def _prompts(task, backend, n_raw=6):
    endings = [BASE + e for e in ENDINGS]
    chat = backend.render_chat("Pick a random number between 1 and 10.")[0]
    return [c.text for c in task.contexts[:n_raw]] + endings + [chat]


@pytest.mark.parametrize(
    "arch,tok,chat",
    [("llama", "digits", False), ("gpt2", "bpe", False), ("llama", "bpe", True), ("llama", "llama3", True)],
)
def test_exact_matches_brute_force(tiny_ckpt, backend_of, arch, tok, chat):
    """Prompts ending with a space, a tab, a newline, a newline and a space, nothing, and two
    spaces (a lone-space token is a proper prefix of w there), on every tokenizer kind."""
    be = backend_of(tiny_ckpt(arch, tok, chat_template=chat))
    task = load_task("number_1_10")
    prompts = _prompts(task, be)
    st = ScoreStats()
    exact = score_exact(be, prompts, task, stats=st)
    diffs = [np.abs(e - brute_force(be, p, task)).max() for p, e in zip(prompts, exact)]
    assert max(diffs) <= TOL, diffs
    for e in exact:
        assert abs(e.sum() - 1) < 1e-9 and (e >= 0).all() and e[:-1].sum() <= 1
    assert all(0 < w <= 1 + 1e-9 for w in st.lead_mass), st.lead_mass
    assert max(e[:-1].sum() for e in exact) > 1e-3  # the check is not vacuous: options carry mass
    blank = [w for p, w in zip(prompts, st.lead_mass) if p.endswith((" ", "\t"))]
    assert min(blank) < 1 - 1e-3  # and W is not trivially 1 on the prompts that end with blanks


def test_merged_newline_stays_in_context(tiny_ckpt, backend_of):
    """Under Llama 3's regex ')\\n' is one token. The newline stays in the context (v1 moved it
    into the answer and needed a fallback), so the split is lm-eval's tail and no W is needed."""
    be = backend_of(tiny_ckpt("llama", "llama3", chat_template=True))
    task = load_task("number_1_10")
    prompt = ">>> import random\n>>> random.randint(1, 10)\n"
    assert be.tokenizer.convert_ids_to_tokens(be.encode(prompt))[-1] == ")Ċ"
    trie = build_trie(be, prompt, task)
    assert (trie.split, trie.lead, trie.context) == ("moved", "", be.encode(prompt))
    assert np.abs(score_exact(be, [prompt], task)[0] - brute_force(be, prompt, task)).max() <= TOL


def test_newline_space_falls_back_and_keeps_w(tiny_ckpt, backend_of):
    """The digit tokenizer merges newline + space ('ĊĠ') before a digit but not before a word, so
    after '\\n ' neither the moved nor the kept split is prefix-consistent for every answer: the
    fallback scores the digits from c̄ with w + answer tokenized alone, still divided by W."""
    be = backend_of(tiny_ckpt("llama", "digits"))
    task = load_task("number_1_10")
    prompt = BASE + "\n "
    assert be.tokenizer.convert_ids_to_tokens(be.encode(prompt))[-1] == "ĊĠ"
    trie = build_trie(be, prompt, task)
    assert (trie.split, trie.lead, trie.context) == ("fallback", " ", be.encode(BASE + "\n"))
    assert np.abs(score_exact(be, [prompt], task)[0] - brute_force(be, prompt, task)).max() <= TOL


def test_split_rule_on_a_stub_tokenizer():
    """The three splits, on a character tokenizer that merges ': ' into one token."""

    class Stub:
        def token_texts(self):
            raise AssertionError("no lead expected")

        def wants_special_tokens(self, text):
            return False

        def encode(self, text):
            return self.encode_many([text], False)[0]

        def encode_many(self, texts, add_special_tokens):
            return [[1000 if p == ": " else ord(p[0]) for p in _pieces(t)] for t in texts]

    def _pieces(t):
        out, i = [], 0
        while i < len(t):
            n = 2 if t[i : i + 2] == ": " else 1
            out.append(t[i : i + n])
            i += n
        return out

    task = task_from_dict(
        {
            "id": "s",
            "version": 1,
            "leading_space": "never",
            "options": ["x", "y"],
            "instructions": ["Pick."],
            "contexts": [{"family": "f", "text": "A"}],
        }
    )
    ctx, _, paths, mode, lead = split_answers(Stub(), "A: ", task)  # ': ' merges: the context keeps the space
    assert (ctx, paths, mode, lead) == ([ord("A"), 1000], [[ord("x")], [ord("y")]], "kept-whitespace", "")
    ctx, _, paths, mode, lead = split_answers(Stub(), "A:\n", task)  # a newline stays in the context
    assert (ctx, paths, mode, lead) == ([ord("A"), ord(":"), ord("\n")], [[ord("x")], [ord("y")]], "moved", "")


def test_two_spaces_follow_the_lone_space_token(tiny_ckpt, backend_of):
    """w = two spaces, and the vocabulary has a lone-space token but none for two spaces: the
    answers' paths start with ' ', ' '. W follows the lone space one level deeper (one more trie
    node, the same forward pass); counting only tokens that start with '  ' would divide by
    less than the answers' own mass and give probabilities above 1."""
    be = backend_of(tiny_ckpt("gpt2", "bpe"))
    task = load_task("number_1_10")
    prompt = BASE + "  "
    texts = be.token_texts().texts
    space = texts.index(" ")
    trie = build_trie(be, prompt, task)
    assert trie.lead == "  "
    assert [(n, r) for n, r, _ in trie.lead_nodes] == [(-1, "  "), (trie.root_children[space], " ")]
    st = ScoreStats()
    p = score_exact(be, [prompt], task, stats=st)[0]
    (w,) = st.lead_mass
    logp = full_logp(be, trie.context)[-1]
    naive = float(logp.exp()[torch.from_numpy(be.token_texts().starts_with("  "))].sum())
    assert naive < p[:-1].sum() * w  # the answers' mass: naive division would exceed 1
    assert 0 < w <= 1 and p[:-1].sum() <= 1 and np.abs(p - brute_force(be, prompt, task)).max() <= TOL


def test_lead_budget_gives_lower_bounds(tiny_ckpt, backend_of, monkeypatch):
    """Past the node budget a lead term counts its prefix tokens in full: W is an upper bound,
    so every option probability is a lower bound and the row still sums to at most 1."""
    import crystallab.scoring.exact as exact_mod

    be = backend_of(tiny_ckpt("llama", "digits"))
    task = load_task("number_1_10")
    prompt = BASE + "  "
    full = score_exact(be, [prompt], task)[0]
    monkeypatch.setattr(exact_mod, "LEAD_NODES", 0)
    assert build_trie(be, prompt, task).lead_nodes == [(-1, "  ", True)]
    capped = score_exact(be, [prompt], task)[0]
    assert np.all(capped[:-1] <= full[:-1] + 1e-12) and capped[:-1].sum() < full[:-1].sum() and capped[:-1].sum() <= 1


@pytest.mark.parametrize("arch,tok", [("llama", "digits"), ("gpt2", "bpe")])
def test_trailing_space_gives_the_conditional_distribution(tiny_ckpt, backend_of, arch, tok):
    """P(o | 'X: ') is the distribution after 'X:' restricted to the paths that write the
    space, renormalised by W: scoring 'X:' with every form written after a space, divided by W."""
    be = backend_of(tiny_ckpt(arch, tok))
    spec = {
        "id": "t",
        "version": 1,
        "options": [str(i) for i in range(1, 11)],
        "instructions": ["Pick."],
        "contexts": [{"family": "list", "text": "x"}],
    }
    after_space = task_from_dict({**spec, "leading_space": "never"})
    space_first = task_from_dict({**spec, "leading_space": "always"})
    st = ScoreStats()
    p = score_exact(be, [BASE + " "], after_space, stats=st)[0]
    q = score_exact(be, [BASE], space_first)[0]
    (w,) = st.lead_mass
    assert 0 < w < 1 and q[:-1].sum() <= w  # the space-initial answers are part of W's event
    np.testing.assert_allclose(p[:-1] * w, q[:-1], rtol=1e-9, atol=1e-12)
    special = set(be.tokenizer.all_special_ids) | be.eos_ids()
    assert w == pytest.approx(brute_force_lead(be, be.encode(BASE), " ", token_texts_by_hand(be), special), abs=1e-6)


@pytest.mark.parametrize("tok", ["digits", "bpe"])
def test_vllm_backend_scores_the_lead_like_transformers(tiny_ckpt, backend_of, tok):
    """The vLLM backend reads W from its full next-token distributions; it matches the
    transformers backend's tree-masked pass on every ending."""
    from types import SimpleNamespace

    from fakes import FakeLLM

    from crystallab.models.vllm import VLLMBackend

    hf = backend_of(tiny_ckpt("llama", tok))
    params = lambda **kw: SimpleNamespace(**kw)  # noqa: E731  (vllm.SamplingParams' stand-in)
    vb = VLLMBackend(FakeLLM(hf), hf.tokenizer, {"model": "vllm:fake"}, params, vocab_size=hf.vocab_size)
    task = load_task("number_1_10")
    prompts = [BASE + e for e in ENDINGS]
    want, got = score_exact(hf, prompts, task), score_exact(vb, prompts, task)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-6)


def test_tokenizers_differ_as_intended(tiny_ckpt, backend_of):
    digits = backend_of(tiny_ckpt("llama", "digits")).tokenizer
    bpe = backend_of(tiny_ckpt("gpt2", "bpe")).tokenizer
    assert len(digits(" 10", add_special_tokens=False).input_ids) == 3  # space, 1, 0
    assert len(bpe(" 10", add_special_tokens=False).input_ids) == 1  # one multi-digit token


def test_one_and_ten_are_disjoint(tiny_ckpt, backend_of):
    """'1' followed by '0' is the answer 10, never the answer 1: the boundary factor."""
    be = backend_of(tiny_ckpt("llama", "digits"))
    task = task_from_dict(
        {
            "id": "n",
            "version": 1,
            "leading_space": "never",
            "options": [str(i) for i in range(1, 11)],
            "instructions": ["Pick."],
            "contexts": [{"family": "list", "text": "x"}],
        }
    )
    prompt = "Random numbers between 1 and 10: 3, 8, "  # the trailing space moves into the answer
    st = ScoreStats()
    p = score_exact(be, [prompt], task, stats=st)[0]
    (w,) = st.lead_mass  # the answer is conditional on the space: P(path) * B / W
    ctx = be.encode(prompt.rstrip())
    space, one, zero = be.tokenizer(" 10", add_special_tokens=False).input_ids
    assert not be.boundary_mask()[zero] and be.boundary_mask()[space]
    assert p[0] * w == pytest.approx(brute_force_path(be, ctx, [space, one]), abs=1e-7)
    assert p[9] * w == pytest.approx(brute_force_path(be, ctx, [space, one, zero]), abs=1e-7)
    prefix = brute_force_path(be, ctx, [space, one], boundary=False)
    assert (p[0] + p[9]) * w <= prefix + 1e-9  # two disjoint events inside the mass of " 1..."
    assert p[0] * w < prefix  # the boundary factor removed the '0' (and other) continuations


def brute_force_path(be, ctx, path, boundary=True, decoding=None):
    """P(path | ctx) * B from one full forward pass of ctx + path and a full float64 softmax."""
    logp = full_logp(be, ctx + path, decoding)
    lp = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(path))
    b = float(logp[-1].exp()[torch.from_numpy(be.boundary_mask())].sum()) if boundary else 1.0
    return float(np.exp(lp)) * b


@pytest.mark.parametrize("arch,tok", [("llama", "digits"), ("gpt2", "bpe")])
def test_invariant_to_batch_size_and_padding_side(tiny_ckpt, backend_of, arch, tok):
    be = backend_of(tiny_ckpt(arch, tok))
    task = load_task("number_1_100")
    prompts = [c.text for c in task.contexts[:8]]  # lengths differ, so batches are padded
    ref = score_exact(be, prompts, task, batch_tokens=1)  # one prompt per forward: no padding
    for bt in (2000, 100_000):
        for side in ("left", "right"):
            got = score_exact(be, prompts, task, batch_tokens=bt, padding_side=side)
            assert max(np.abs(a - b).max() for a, b in zip(ref, got)) <= TOL, (bt, side)


def test_prefix_options_stay_disjoint(tiny_ckpt, backend_of):
    """'red' and 'red wine': text 'red wine' is the longer option only; the sum stays <= 1."""
    be = backend_of(tiny_ckpt("llama", "digits"))
    task = task_from_dict(
        {
            "id": "t",
            "version": 1,
            "options": ["red", "red wine", "blue"],
            "instructions": ["Pick one."],
            "contexts": [{"family": "qa", "text": "Q: pick a colour\nA:"}],
        }
    )
    p = score_exact(be, ["Q: pick a colour\nA:"], task)[0]
    assert abs(p.sum() - 1) < 1e-9 and p[-1] >= 0
    trie = build_trie(be, "Q: pick a colour\nA:", task)
    # some terminal node of 'red' has a boundary child on the way to 'red wine'
    assert any(be.boundary_mask()[t] for node, k in trie.terminal.items() if k == 0 for t in trie.children[node])


def test_boundary_mask_on_known_tokens(tiny_ckpt, backend_of):
    be = backend_of(tiny_ckpt("gpt2", "bpe"))
    tok, mask = be.tokenizer, be.boundary_mask()
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    assert mask[tok.eos_token_id] and mask[tok.convert_tokens_to_ids("<|user|>")]
    assert mask[ids(" 7")[0]] and mask[ids(",")[0]] and mask[ids("\n")[0]]
    assert not mask[ids("7")[0]] and not mask[ids("heads")[0]]
