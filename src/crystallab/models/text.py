"""What every local backend (transformers, vLLM) does with text: chat prompts through the
checkpoint's own template, tokenization with or without special tokens, and the prompt's split
into a context and the trailing blanks the answer is conditioned on. No torch here."""

from __future__ import annotations

import math
from typing import AbstractSet as Set
from typing import Any, Sequence

import numpy as np

from crystallab.errors import UserError

PLAIN_CHAT_TEMPLATE = "User: {instruction}\nAssistant:"
BLANKS = " \t"
MAX_DRAWS = 64  # a sampler conditioning on the prompt's blanks draws at most MAX_DRAWS * N completions


def split_blank_tail(text: str) -> tuple[str, str]:
    """The prompt's split (SCIENCE.md, exact outcome probability): the context ``c̄`` and its
    trailing spaces and tabs ``w``, which the answer's tokens may absorb. Newlines stay in the
    context: the model sees them, and common tokenizers do not merge a newline into the next word.
    The one split behind the exact scorer, the samplers and the API's top-k walk.

    >>> split_blank_tail("A: "), split_blank_tail("Q: x\\nA:\\n"), split_blank_tail("A:\\n \\t")
    (('A:', ' '), ('Q: x\\nA:\\n', ''), ('A:\\n', ' \\t'))
    """
    c = text.rstrip(BLANKS)
    return c, text[len(c) :]


def strip_lead(text: str, lead: str) -> str | None:
    """A completion of ``c̄`` as a completion of the prompt as written: without the lead ``w``,
    or None when it does not start with ``w`` (not an answer to the prompt as written).

    >>> strip_lead(" 7, 3", " "), strip_lead("\\n7", " "), strip_lead("7", "")
    ('7, 3', None, '7')
    """
    return text[len(lead) :] if text.startswith(lead) else None


def next_draws(need: int, kept: int, drawn: int, budget: int) -> int:
    """How many completions to draw next so that ``need`` more are expected to be kept, at the
    acceptance rate seen so far (assumed at least 1/16), within ``budget`` draws.

    >>> next_draws(10, 0, 0, 640), next_draws(5, 45, 50, 590), next_draws(10, 0, 50, 590), next_draws(3, 7, 7, 2)
    (10, 6, 160, 2)
    """
    if drawn == 0:
        return max(0, min(need, budget))
    rate = max(kept / drawn, 1 / 16)
    return max(0, min(budget, math.ceil(need / rate)))


class TokenTexts:
    """A vocabulary's token texts and the masks that condition an answer on the lead ``w``.

    A token *starts* ``rest`` when its text starts with ``rest``; it is a *prefix* of ``rest``
    when its text is a non-empty proper prefix of it (then the answer needs more tokens to cover
    ``w``). Special tokens (EOS included) and ids without text do neither: they write no text.

    >>> tt = TokenTexts(["a", " ", "  ", " a", "\\t", "<s>"], special={5}, vocab_size=7)
    >>> tt.starts_with("  ").astype(int).tolist(), tt.starts_with("  ", whole=True).astype(int).tolist()
    ([0, 0, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0])
    >>> tt.prefixes("  "), tt.covers([1, 3], "  "), tt.covers([1, 0], "  "), tt.covers([1], "  ")
    ([(1, ' ')], True, False, False)
    """

    def __init__(self, texts: Sequence[str], special: set[int], vocab_size: int):
        self.texts = list(texts)
        self.special = {int(i) for i in special}
        self.vocab_size = vocab_size
        self._masks: dict[tuple[str, bool], np.ndarray] = {}
        self._prefixes: dict[str, list[tuple[int, str]]] = {}

    def _writes(self, i: int) -> bool:
        return i < len(self.texts) and i not in self.special

    def starts_with(self, rest: str, whole: bool = False) -> np.ndarray:
        """Mask over the output vocabulary: tokens that start ``rest`` (``whole``: or are a
        prefix of it, counted in full). Cached: there are few distinct leads."""
        key = (rest, whole)
        if key not in self._masks:
            m = np.zeros(self.vocab_size, dtype=bool)
            for i, t in enumerate(self.texts[: self.vocab_size]):
                m[i] = self._writes(i) and (t.startswith(rest) or whole and _proper_prefix(t, rest))
            self._masks[key] = m
        return self._masks[key]

    def prefixes(self, rest: str) -> list[tuple[int, str]]:
        """(token, what of ``rest`` is left after it) for the tokens that are a prefix of ``rest``."""
        if rest not in self._prefixes:
            texts = enumerate(self.texts[: self.vocab_size])
            pre = [(i, rest[len(t) :]) for i, t in texts if self._writes(i) and _proper_prefix(t, rest)]
            self._prefixes[rest] = pre
        return self._prefixes[rest]

    def covers(self, seq: Sequence[int], lead: str) -> bool:
        """Whether the tokens write ``lead`` first: prefix tokens, then one that starts the rest.
        The sampler's acceptance test, the event whose probability is the exact scorer's W."""
        rest = lead
        for t in seq:
            if not rest:
                return True
            if not self._writes(int(t)):
                return False
            text = self.texts[int(t)]
            if text.startswith(rest):
                return True
            if not _proper_prefix(text, rest):
                return False
            rest = rest[len(text) :]
        return not rest


def _proper_prefix(t: str, rest: str) -> bool:
    return 0 < len(t) < len(rest) and rest.startswith(t)


def _anchor(tokenizer: Any) -> int | None:
    a = tokenizer.convert_tokens_to_ids("a") if "a" in tokenizer.get_vocab() else None
    return None if a is None or a == getattr(tokenizer, "unk_token_id", None) else int(a)


def decode_continuations(tokenizer: Any, seqs: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
    """Texts of token sequences that continue a context. Each is decoded after an anchor token
    whose text is then stripped, because some SentencePiece decoders drop the leading space of a
    sequence's first token, and that space is part of the answer."""
    opts = {"skip_special_tokens": skip_special_tokens, "clean_up_tokenization_spaces": False}
    plain = tokenizer.batch_decode([list(s) for s in seqs], **opts)
    anchor = _anchor(tokenizer)
    if anchor is None:
        return plain
    head = tokenizer.decode([anchor], clean_up_tokenization_spaces=False)
    joined = tokenizer.batch_decode([[anchor, *s] for s in seqs], **opts)
    return [j[len(head) :] if j.startswith(head) else p for j, p in zip(joined, plain)]


def special_ids(tokenizer: Any, eos_ids: Set[int] = frozenset()) -> set[int]:
    """Ids of the special tokens (and the model's EOS ids): they end an answer and write no text."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            special.add(int(i))
    return {int(i) for i in special | set(eos_ids)}


def is_boundary_text(t: str) -> bool:
    """A token text that closes an answer: empty (EOS decoded away), or starting with a
    character that is not a letter or digit (space, punctuation, ``<eos>``-style names). The
    one rule behind the local boundary mask and the API's top-k walk.

    >>> [is_boundary_text(x) for x in ("", " a", ",", "7", "x")]
    [True, True, True, False, False]
    """
    return not t or not t[0].isalnum()


class TokenizerText:
    """Mixin for a backend with ``tokenizer``, ``info``, ``allow_plain_chat``, ``vocab_size``
    and ``eos_ids()``."""

    tokenizer: Any
    info: dict[str, Any]
    allow_plain_chat: bool
    _token_texts: TokenTexts | None = None  # decoded once, on first use (a 262k vocabulary takes seconds)

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def eos_ids(self) -> set[int]:
        raise NotImplementedError

    def token_texts(self) -> TokenTexts:
        """The output vocabulary's token texts (decoded after an anchor) and their lead masks."""
        if self._token_texts is None:
            n = min(len(self.tokenizer), self.vocab_size)
            texts = decode_continuations(self.tokenizer, [[i] for i in range(n)], skip_special_tokens=False)
            self._token_texts = TokenTexts(texts, special_ids(self.tokenizer, self.eos_ids()), self.vocab_size)
        return self._token_texts

    @property
    def name(self) -> str:
        return self.info["model"]

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, instruction: str) -> tuple[str, str]:
        """The instruction as a chat prompt with the generation prompt, and the template used
        (``tokenizer`` or ``plain``). Templates render in transformers' jinja2 sandbox
        (ImmutableSandboxedEnvironment): a template cannot run code, and one that tries is
        refused with one line."""
        if self.has_chat_template:
            import jinja2

            try:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
                )
            except jinja2.exceptions.SecurityError as exc:
                raise UserError(
                    f"the chat template of {self.name} tried an unsafe operation, refused by the jinja2 sandbox ({exc})"
                ) from exc
            except jinja2.exceptions.TemplateError as exc:
                raise UserError(
                    f"the chat template of {self.name} does not render: {type(exc).__name__}: {exc}"
                ) from exc
            return text, "tokenizer"
        if not self.allow_plain_chat:
            raise UserError(
                f"model {self.name} has no chat template and --no-plain-chat was given; "
                f"drop that flag to use the plain 'User:/Assistant:' template, or measure --prompts raw"
            )
        return PLAIN_CHAT_TEMPLATE.format(instruction=instruction), "plain"

    def wants_special_tokens(self, text: str) -> bool:
        """Special tokens (BOS) are added unless the text already has them (a rendered chat
        template starts with its BOS string)."""
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def encode(self, text: str) -> list[int]:
        return self.encode_many([text], self.wants_special_tokens(text))[0]

    def encode_many(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
