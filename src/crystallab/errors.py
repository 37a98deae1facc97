"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations


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


def require(module: str, extra: str | None = None):
    """Import an optional dependency or raise one clear line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"crystallab[{extra}]" if extra else module.split(".")[0]
        raise MissingDependency(f"{module} is not installed: pip install '{what}' ({exc})") from exc


class NumericalError(UserError):
    """NaN or inf in a model's logits (e.g. fp16 overflow): reported, never passed to the metrics."""
