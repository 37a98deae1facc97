"""Command-line flags generated from dataclass fields, so every setting is defined once (its
name, type, choices and help live on the field) and the precedence is one rule everywhere:
the dataclass defaults, then a config file, then the flags the user actually typed.

Every generated flag defaults to ``argparse.SUPPRESS``: a flag the user did not type is absent
from the namespace, so it can never override a config file.

>>> import argparse
>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class S:
...     method: str = field(default="exact", metadata={"help": "how", "choices": ("exact", "sample")})
...     samples: int = 200
...     tags: tuple[str, ...] = ()
...     chat: bool = True
>>> p = argparse.ArgumentParser()
>>> add_dataclass_flags(p, S, names={"chat": "plain-chat"})
['--method', '--samples', '--tags', '--plain-chat']
>>> args = p.parse_args(["--samples", "5", "--tags", "a,b", "--no-plain-chat"])
>>> typed_fields(S, args)
{'samples': 5, 'tags': ('a', 'b'), 'chat': False}
>>> dataclass_from_args(S, args, S(method="sample"))
S(method='sample', samples=5, tags=('a', 'b'), chat=False)

A repeated list flag adds to the list (``--tags a --tags b`` is ``--tags a,b``), as users expect of
``--task x --task y``:

>>> typed_fields(S, p.parse_args(["--tags", "a", "--tags", "b,c"]))
{'tags': ('a', 'b', 'c')}
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar, Union

T = TypeVar("T")


def flag_name(field: str, names: Mapping[str, str] | None = None) -> str:
    """``--field-name`` (or the name ``names`` gives the field)."""
    return "--" + (names or {}).get(field, field).replace("_", "-")


def _split(kind: type) -> Any:
    """A comma-separated argument as a tuple (or list) of ``kind``."""

    def parse(text: str) -> tuple:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())

    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


class _Extend(argparse.Action):
    """Store a comma-separated list; a repeat of the flag extends it instead of replacing it."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        prior = getattr(namespace, self.dest, None) or ()
        setattr(namespace, self.dest, type(values)([*prior, *values]))


def _kind(hint: Any) -> tuple[str, Any]:
    """How a field's type hint reads on the command line: ("bool" | "value" | "list" | "tuple"
    | "skip", the element type)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else ("skip", None)
    if hint is bool:
        return "bool", bool
    if hint in (int, float, str):
        return "value", hint
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis] or [str]
        if args[0] in (int, float, str):
            return ("tuple" if origin is tuple else "list"), args[0]
    return "skip", None


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_dataclass_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    names: Mapping[str, str] | None = None,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    helps: Mapping[str, str] | None = None,
    choices: Mapping[str, Iterable[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """One flag per field of dataclass ``cls`` (``dest`` is the field name; default SUPPRESS).

    ``names`` renames a field's flag, ``only``/``exclude`` pick the fields, ``helps`` and
    ``choices`` replace the field metadata's, ``defaults`` are the values shown as the default
    in the help (the dataclass's otherwise), ``aliases`` add option strings. Bools become
    ``--flag/--no-flag``, tuple and list fields take comma-separated values, fields of other
    types (dicts, nested dataclasses) get no flag; a repeated list flag extends the list. Returns the flags added."""
    hints = typing.get_type_hints(cls)
    keep = set(only) if only is not None else None
    drop = set(exclude)
    added = []
    for f in dataclasses.fields(cls):
        if (keep is not None and f.name not in keep) or f.name in drop:
            continue
        kind, elem = _kind(hints[f.name])
        if kind == "skip":
            continue
        flag = flag_name(f.name, names)
        meta: Mapping[str, Any] = f.metadata or {}
        help_text = (helps or {}).get(f.name, meta.get("help"))
        opts = (choices or {}).get(f.name, meta.get("choices"))
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if help_text is not None and default is not dataclasses.MISSING and "default" not in help_text:
            shown = ("on" if default else "off") if kind == "bool" else _shown(default)
            help_text = f"{help_text} (default: {shown})"
        if help_text is not None:
            help_text = help_text.replace("%", "%%")  # argparse formats help with %
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        strings = [flag, *(aliases or {}).get(f.name, ())]
        if kind == "bool":
            parser.add_argument(*strings, action=argparse.BooleanOptionalAction, **kw)
        else:
            if kind == "value":
                kw["type"] = elem
                if opts is not None:
                    kw["choices"] = list(opts)
            else:
                parse = _split(elem)
                kw["type"] = parse if kind == "tuple" else (lambda s, p=parse: list(p(s)))
                kw["metavar"] = f.name.upper().rstrip("S") + ",..."
                kw["action"] = _Extend
            parser.add_argument(*strings, **kw)
        added.append(flag)
    return added


def typed_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` whose flags the user typed, by field name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def dataclass_from_args(cls: type[T], args: argparse.Namespace, base: T | None = None) -> T:
    """``base`` (the defaults, or what a config file says) with the typed flags over it."""
    typed = typed_fields(cls, args)
    if base is None:
        return cls(**typed)
    return dataclasses.replace(base, **typed)  # type: ignore[type-var]


def flag_dests(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each long option string of ``parser`` and its ``dest`` (for the tests that check every
    flag against a field)."""
    out = {}
    for action in parser._actions:  # noqa: SLF001  (argparse has no public list of its actions)
        for s in action.option_strings:
            if s.startswith("--"):
                out[s] = action.dest
    return out
