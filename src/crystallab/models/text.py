"""What every local backend (transformers, vLLM) does with text: chat prompts through the
checkpoint's own template, and tokenization with or without special tokens. No torch here."""

from __future__ import annotations

from typing import Any, Sequence

from crystallab.errors import UserError

PLAIN_CHAT_TEMPLATE = "User: {instruction}\nAssistant:"


def is_boundary_text(t: str) -> bool:
    """A token text that closes an answer: empty (EOS decoded away), or starting with a
    character that is not a letter or digit (space, punctuation, ``<eos>``-style names). The
    one rule behind the local boundary mask and the API's top-k walk.

    >>> [is_boundary_text(x) for x in ("", " a", ",", "7", "x")]
    [True, True, True, False, False]
    """
    return not t or not t[0].isalnum()


class TokenizerText:
    """Mixin for a backend with ``tokenizer``, ``info`` and ``allow_plain_chat``."""

    tokenizer: Any
    info: dict[str, Any]
    allow_plain_chat: bool

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
                text = self.tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True)
            except jinja2.exceptions.SecurityError as exc:
                raise UserError(f"the chat template of {self.name} tried an unsafe operation, refused by the jinja2 sandbox ({exc})") from exc
            except jinja2.exceptions.TemplateError as exc:
                raise UserError(f"the chat template of {self.name} does not render: {type(exc).__name__}: {exc}") from exc
            return text, "tokenizer"
        if not self.allow_plain_chat:
            raise UserError(f"model {self.name} has no chat template and --no-plain-chat was given; drop that flag to use the plain 'User:/Assistant:' template, or measure --prompts raw")
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
