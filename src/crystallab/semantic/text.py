"""Where an open task's completion ends: its stop rule, applied to the decoded text."""

from __future__ import annotations

import re

from crystallab.suite import DEFAULT_PREAMBLES

# a sentence ends at . ! or ? (runs of them, and a closing quote or bracket) before a space or the end
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


EDGE = " \t\r\n\"'`*_~()[]{}<>#.,;:!?-–—“”‘’"  # what may surround an answer: blanks, markdown, quotes
_PREAMBLES = tuple(sorted((p.casefold() for p in DEFAULT_PREAMBLES), key=len, reverse=True))


def strip_preambles(text: str) -> str:
    """The text after the chat preambles the closed tasks' parser strips ("Sure!", "I pick", ...)
    and the markdown, quotes and punctuation around the answer (case kept).

    >>> strip_preambles("Sure! I pick **Red**."), strip_preambles("Surely not")
    ('Red', 'Surely not')
    """
    s = text.strip()
    for _ in range(6):
        s = s.strip(EDGE)
        low = s.casefold()
        for p in _PREAMBLES:
            if low.startswith(p) and (not p[-1].isalnum() or len(s) == len(p) or not s[len(p)].isalnum()):
                s = s[len(p) :]
                break
        else:
            break
    return s


_PHRASE_END = re.compile(r"[,;:.!?]")
_WORD = re.compile(r"[\w'’-]+")


def cut(text: str, stop_at: str) -> str:
    """The answer a completion gives under the stop rule: up to the first newline (``line``), up
    to and including the first sentence end (``sentence``; a newline ends it too), up to the first
    comma, colon, semicolon or sentence mark (``phrase``), or its first word (``word``, for tasks
    whose answers are one word); stripped. A completion that starts with newlines is read from
    its first non-blank line.

    >>> cut(" Why did the chicken cross the road?\\nTo get", "line")
    'Why did the chicken cross the road?'
    >>> cut(" It was a dark night. The rain fell.", "sentence")
    'It was a dark night.'
    >>> cut('\\n\\n She whispered "Run!" and ran.', "sentence")
    'She whispered "Run!"'
    >>> cut(" Red with black, or blue", "phrase"), cut(" Sure! **Red** with black", "word")
    ('Red with black', 'Red')
    >>> cut("", "line")
    ''
    """
    s = text.lstrip("\n\r \t")
    s = s.split("\n", 1)[0]
    if stop_at == "sentence":
        m = _SENTENCE_END.search(s)
        if m:
            s = s[: m.end()]
    elif stop_at == "phrase":
        s = _PHRASE_END.split(s, maxsplit=1)[0]
    elif stop_at == "word":
        m = _WORD.search(strip_preambles(s))
        s = m.group(0) if m else ""
    elif stop_at != "line":
        raise ValueError(f"unknown stop rule {stop_at!r}")
    return s.strip()
