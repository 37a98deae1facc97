"""Reading small YAML settings files (thresholds, lab configs) into typed dataclasses, with one
clear line for every mistake a user can make in them."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from crystallab.errors import UserError


def read_settings(path: str | Path, known: list[str] | tuple[str, ...], what: str) -> dict[str, Any]:
    """The mapping in ``path``; a missing file, malformed YAML, a non-mapping or an unknown key
    (with the closest valid one) is a UserError naming the file.

    >>> read_settings("/no/such.yaml", ["tau"], "thresholds")
    Traceback (most recent call last):
    crystallab.errors.UserError: cannot read thresholds file /no/such.yaml: No such file or directory
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise UserError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {what} settings, got {type(data).__name__}")
    for k in data:
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            raise UserError(f"{path}: unknown {what} setting '{k}'" + (f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(known)})"))
    return data
