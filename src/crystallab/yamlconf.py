"""Reading the files a user hands crystallab (tasks, ladders, thresholds, lab configs, JSON
records) with one clear line for every way they can be broken: missing, binary, truncated, in
the wrong encoding, malformed, or of the wrong shape.

>>> read_settings("/no/such.yaml", ["tau"], "thresholds")
Traceback (most recent call last):
crystallab.errors.UserError: cannot read thresholds file /no/such.yaml: No such file or directory
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Union

from crystallab.errors import UserError

_UTF16_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def kind_of(value: Any) -> str:
    """How a parsed YAML/JSON value reads in a message.

    >>> kind_of(None), kind_of(True), kind_of(3), kind_of("x"), kind_of([1]), kind_of({})
    ('null', 'a boolean', 'a number', 'a string', 'a list', 'a mapping')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def decode_text(data: bytes, path: str | Path, what: str, error: type[UserError] = UserError) -> str:
    """``data`` (the bytes of ``path``) as UTF-8 text; binary data, UTF-16/32 or another encoding
    is one line naming the file (a UTF-8 byte-order mark is dropped).

    >>> decode_text("é".encode("latin-1"), "t.yaml", "task")
    Traceback (most recent call last):
    crystallab.errors.UserError: t.yaml: not UTF-8 text (byte 0xe9 at line 1, column 1: latin-1 or Windows-1252?); \
save the task file as UTF-8
    """
    if data.startswith(_UTF16_BOMS):
        raise error(f"{path}: the {what} file is encoded as UTF-16 or UTF-32; save it as UTF-8")
    if b"\x00" in data:
        raise error(
            f"{path}: not a text file (it holds NUL bytes: binary data, or UTF-16 text); "
            f"the {what} file must be UTF-8 text"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        guess = ": latin-1 or Windows-1252?" if byte >= 0x80 else ""
        raise error(
            f"{path}: not UTF-8 text (byte 0x{byte:02x} at line {line}, column {col}{guess}); "
            f"save the {what} file as UTF-8"
        ) from None


def read_text_file(path: str | Path, what: str, error: type[UserError] = UserError) -> str:
    """The UTF-8 text of ``path``; a missing or unreadable file, binary data or another
    encoding is one line (``error``) naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} file {p}: {exc.strerror or exc}") from None
    return decode_text(data, p, what, error)


def parse_yaml(text: str, path: str | Path, error: type[UserError] = UserError) -> Any:
    """``text`` parsed as YAML (safe types only); malformed YAML is one line with its position.

    >>> parse_yaml("a: [1, 2", "x.yaml")
    Traceback (most recent call last):
    crystallab.errors.UserError: x.yaml: malformed YAML at line 1, column 9: expected ',' or ']', but got '<stream end>'
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise error(f"{path}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: malformed YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp such as 2001-02-30
        raise error(f"{path}: malformed YAML: {str(exc) or type(exc).__name__}") from None


def load_yaml(path: str | Path, what: str, error: type[UserError] = UserError) -> Any:
    """The parsed YAML of ``path`` (any shape: the caller validates it)."""
    return parse_yaml(read_text_file(path, what, error), path, error)


def load_yaml_mapping(path: str | Path, what: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (an empty file is an empty mapping); anything else is
    one line naming the file."""
    data = load_yaml(path, what, error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of {what} settings, got {kind_of(data)}")
    return data


def load_json(path: str | Path, what: str, error: type[UserError] = UserError) -> Any:
    """The parsed JSON of ``path`` (any shape); an unreadable, binary, non-UTF-8, truncated or
    malformed file is one line naming the file."""
    text = read_text_file(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = " (truncated?)" if exc.pos >= len(text.rstrip()) else ""
        raise error(f"{path}: malformed {what} JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{cut}") from None
    except RecursionError:
        raise error(f"{path}: malformed {what} JSON: nested too deeply") from None
    except ValueError as exc:
        raise error(f"{path}: malformed {what} JSON: {exc}") from None


def read_settings(
    path: str | Path, known: list[str] | tuple[str, ...], what: str, schema: type | None = None
) -> dict[str, Any]:
    """The mapping in ``path``; a missing, binary or non-UTF-8 file, malformed YAML, a
    non-mapping or an unknown key (with the closest valid one) is a UserError naming the file.
    With ``schema`` (a dataclass), each value must also match its field's type hint
    (:func:`check_fields`); a list given for a tuple field comes back as a tuple."""
    data = load_yaml_mapping(path, what)
    for k in data:
        if k not in known:
            close = difflib.get_close_matches(str(k), [str(x) for x in known], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(known)})"
            raise UserError(f"{path}: unknown {what} setting '{k}'{hint}")
    if schema is not None:
        data = check_fields(data, schema, f"{path}: {what} setting")
    return data


def check_fields(data: dict[str, Any], schema: type, where: str) -> dict[str, Any]:
    """``data`` checked against the type hints of dataclass ``schema`` (str, int, float, bool,
    Path, Literal, ``X | None``, ``tuple[X, ...]``, ``list[X]``, ``dict``, ``Any``); a mismatch is one line
    ``{where} 'key': expected ..., got ...``.

    >>> @dataclasses.dataclass
    ... class C:
    ...     n: int = 1
    ...     tags: tuple[str, ...] = ()
    >>> check_fields({"n": 2, "tags": ["a"]}, C, "c.yaml: setting")
    {'n': 2, 'tags': ('a',)}
    >>> check_fields({"n": "2"}, C, "c.yaml: setting")
    Traceback (most recent call last):
    crystallab.errors.UserError: c.yaml: setting 'n': expected a whole number, got a string ('2')
    """
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    out = dict(data)
    for k, v in data.items():
        if k in names:
            out[k] = _check_value(v, hints[k], f"{where} '{k}'")
    return out


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it matches ``hint`` (a sequence for a tuple hint becomes a tuple)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, a, where)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if errors else UserError(f"{where}: expected null, got {kind_of(value)}")
    if origin is typing.Literal:
        if not any(type(value) is type(a) and value == a for a in typing.get_args(hint)):
            shown = ", ".join(repr(a) for a in typing.get_args(hint))
            raise UserError(f"{where}: expected one of {shown}, got {_shown(value)}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise UserError(f"{where}: expected a path, got {_shown(value)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {_shown(value)}")
        item = next((a for a in typing.get_args(hint) if a is not Ellipsis), Any)
        checked = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {_shown(value)}")
        return value
    expected = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(hint)
    if expected is None:
        return value  # a hint this checker does not know: the caller validates
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{where}: expected {expected}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """``a string ('x')``: the kind of a value, and the value itself when it is short."""
    text = repr(value)
    return f"{kind_of(value)} ({text})" if len(text) <= 40 and not isinstance(value, (list, dict)) else kind_of(value)
