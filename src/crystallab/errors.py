"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    r"""A problem with the user's input (file, flag, model spec), not a bug in crystallab.

    The message is always one line: line breaks that come from the input itself (a YAML key
    with a newline, a server's multi-line error) are shown escaped.

    >>> str(UserError("field 'a\nb': unknown key"))
    "field 'a\\nb': unknown key"
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(str(message).strip().replace("\r", "\\r").replace("\n", "\\n"))


class TaskError(UserError):
    """A task file that does not validate. The message names the file and the field."""


class MissingDependency(UserError):
    """An optional dependency is not installed; the message says what to `pip install`."""


def require(module: str, extra: str | None = None) -> Any:
    """Import an optional dependency, or raise one line that says what to ``pip install``.

    ``extra`` names the crystallab extra that brings it (``hf``, ``lab``, ``ray``, ``vllm``);
    without one the message names the module's own package.

    >>> require("json").__name__
    'json'
    >>> require("crystallab_no_such_module", "hf")
    Traceback (most recent call last):
    ...
    crystallab.errors.MissingDependency: crystallab_no_such_module is not installed: pip install 'crystallab[hf]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"crystallab[{extra}]" if extra else module.split(".")[0]
        missing = getattr(exc, "name", None) or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            why = "is not installed"  # the module itself (or its top package) is absent
        elif missing:
            why = f"needs {missing}, which is not installed"
        else:  # installed but broken: keep the first line of the reason, never a multi-line dump
            first = (str(exc).strip().splitlines() or ["ImportError"])[0]
            why = f"failed to import ({first[:200]})"
        raise MissingDependency(f"{module} {why}: pip install '{what}'") from exc


class NumericalError(UserError):
    """NaN or inf in a model's logits (e.g. fp16 overflow): reported, never passed to the metrics."""
