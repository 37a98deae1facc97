"""The exact scorer against a brute-force reference, on two kinds of real tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystallab.scoring.exact import build_trie, score_exact
from crystallab.tasks import load_task, task_from_dict

TOL = 1e-5


def reference_paths(tok, prompt: str, strings: list[str]) -> tuple[list[int], list[list[int]]]:
    """The split rule of docs/scoring.md, written out independently of the scorer: lm-eval's
    (trailing whitespace moves into the answer) when the context's tokens are a prefix of every
    context+answer; else keep the whitespace in the context if that is prefix-consistent;
    else lm-eval's fallback (the answer tokenized alone)."""

    def enc(text, add):
        return tok(text, add_special_tokens=add).input_ids

    def attempt(ctx_text, conts):
        add = not (tok.bos_token and ctx_text.startswith(tok.bos_token))
        ctx = enc(ctx_text, add)
        wholes = [enc(ctx_text + c, add) for c in conts]
        good = [w[: len(ctx)] == ctx and len(w) > len(ctx) for w in wholes]
        return ctx, [w[len(ctx) :] if g else enc(c, False) for w, c, g in zip(wholes, conts, good)], all(good)

    stripped = prompt.rstrip()
    ws = prompt[len(stripped) :]
    ctx, paths, ok = attempt(stripped, [ws + s for s in strings])
    if not ok and ws:
        ctx2, paths2, ok2 = attempt(prompt, strings)
        if ok2:
            return ctx2, paths2
    return ctx, paths


def brute_force(backend, prompt: str, task) -> np.ndarray:
    """SCIENCE.md's definition written out directly: every surface form (with and without a
    leading space) as its own full sequence, no cache, no trie, a full softmax in float64."""
    model = backend.model
    strings, owner = [], []
    for k, opt in enumerate(task.options):
        for form in opt.forms:
            for s in ([form, " " + form] if task.leading_space == "both" else [form]):
                strings.append(s)
                owner.append(k)
    ctx, paths = reference_paths(backend.tokenizer, prompt, strings)
    boundary = torch.from_numpy(backend.boundary_mask())
    probs = np.zeros(len(task.options) + 1)
    seen = set()
    for k, path in zip(owner, paths):
        if (k, tuple(path)) in seen:  # distinct token paths only
            continue
        seen.add((k, tuple(path)))
        probs[k] += brute_force_path(backend, ctx, path)
    probs[-1] = 1 - probs[:-1].sum()
    return probs


def _prompts(task, backend, n_raw=6, n_chat=3):
    return [c.text for c in task.contexts[:n_raw]] + [backend.render_chat(i)[0] for i in task.instructions[:n_chat]]


@pytest.mark.parametrize("arch,tok,chat", [("llama", "digits", False), ("gpt2", "bpe", False), ("llama", "bpe", True), ("llama", "llama3", True)])
def test_exact_matches_brute_force(tiny_ckpt, backend_of, arch, tok, chat):
    be = backend_of(tiny_ckpt(arch, tok, chat_template=chat))
    task = load_task("number_1_10")
    prompts = _prompts(task, be)
    exact = score_exact(be, prompts, task)
    diffs = [np.abs(e - brute_force(be, p, task)).max() for p, e in zip(prompts, exact)]
    assert max(diffs) <= TOL, diffs
    for e in exact:
        assert abs(e.sum() - 1) < 1e-9 and (e >= 0).all()
    assert max(e[:-1].sum() for e in exact) > 1e-3  # the check is not vacuous: options carry mass


def test_merged_newline_keeps_whitespace_in_context(tiny_ckpt, backend_of):
    """Under Llama 3's regex ')\n' is one token: moving the newline into the answer would score
    ')' + '\n' + '7', a path the model never produces. The scorer keeps it in the context."""
    be = backend_of(tiny_ckpt("llama", "llama3", chat_template=True))
    task = load_task("number_1_10")
    prompt = ">>> import random\n>>> random.randint(1, 10)\n"
    assert be.tokenizer.convert_ids_to_tokens(be.encode(prompt))[-1] == ")Ċ"
    trie = build_trie(be, prompt, task)
    assert trie.split == "kept-whitespace" and trie.context == be.encode(prompt)
    assert np.abs(score_exact(be, [prompt], task)[0] - brute_force(be, prompt, task)).max() <= TOL


def test_tokenizers_differ_as_intended(tiny_ckpt, backend_of):
    digits = backend_of(tiny_ckpt("llama", "digits")).tokenizer
    bpe = backend_of(tiny_ckpt("gpt2", "bpe")).tokenizer
    assert len(digits(" 10", add_special_tokens=False).input_ids) == 3  # space, 1, 0
    assert len(bpe(" 10", add_special_tokens=False).input_ids) == 1  # one multi-digit token


def test_one_and_ten_are_disjoint(tiny_ckpt, backend_of):
    """'1' followed by '0' is the answer 10, never the answer 1: the boundary factor."""
    be = backend_of(tiny_ckpt("llama", "digits"))
    task = task_from_dict({
        "id": "n", "version": 1, "leading_space": "never", "options": [str(i) for i in range(1, 11)],
        "instructions": ["Pick."], "contexts": [{"family": "list", "text": "x"}],
    })
    prompt = "Random numbers between 1 and 10: 3, 8, "  # the trailing space moves into the answer
    p = score_exact(be, [prompt], task)[0]
    ctx = be.encode(prompt.rstrip())
    space, one, zero = be.tokenizer(" 10", add_special_tokens=False).input_ids
    assert not be.boundary_mask()[zero] and be.boundary_mask()[space]
    assert p[0] == pytest.approx(brute_force_path(be, ctx, [space, one]), abs=1e-7)
    assert p[9] == pytest.approx(brute_force_path(be, ctx, [space, one, zero]), abs=1e-7)
    prefix = brute_force_path(be, ctx, [space, one], boundary=False)
    assert p[0] + p[9] <= prefix + 1e-9  # two disjoint events inside the mass of " 1..."
    assert p[0] < prefix  # the boundary factor removed the '0' (and other) continuations


def brute_force_path(be, ctx, path, boundary=True):
    """P(path | ctx) * B from one full forward pass of ctx + path and a full float64 softmax."""
    with torch.no_grad():
        logp = torch.log_softmax(be.model(torch.tensor([ctx + path])).logits[0].double(), -1)
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
    task = task_from_dict({
        "id": "t", "version": 1, "options": ["red", "red wine", "blue"], "instructions": ["Pick one."],
        "contexts": [{"family": "qa", "text": "Q: pick a colour\nA:"}],
    })
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
