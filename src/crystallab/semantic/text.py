"""Where an open task's completion ends: its stop rule, applied to the decoded text."""

from __future__ import annotations

import re

# a sentence ends at . ! or ? (runs of them, and a closing quote or bracket) before a space or the end
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def cut(text: str, stop_at: str) -> str:
    """The answer a completion gives under the stop rule: up to the first newline (``line``), or
    up to and including the first sentence end (``sentence``; a newline ends it too); stripped.
    A completion that starts with newlines is read from its first non-blank line.

    >>> cut(" Why did the chicken cross the road?\\nTo get", "line")
    'Why did the chicken cross the road?'
    >>> cut(" It was a dark night. The rain fell.", "sentence")
    'It was a dark night.'
    >>> cut('\\n\\n She whispered "Run!" and ran.', "sentence")
    'She whispered "Run!"'
    >>> cut("", "line")
    ''
    """
    s = text.lstrip("\n\r \t")
    s = s.split("\n", 1)[0]
    if stop_at == "sentence":
        m = _SENTENCE_END.search(s)
        if m:
            s = s[: m.end()]
    elif stop_at != "line":
        raise ValueError(f"unknown stop rule {stop_at!r}")
    return s.strip()
