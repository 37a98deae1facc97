"""Ordered checkpoint ladders: a YAML file (or a shipped preset) of label, stage, model spec and
optional revision, measured one checkpoint at a time into one resumable results folder.

>>> lad = load_ladder(preset="olmo2-1b")
>>> [(c.label, c.stage) for c in lad.checkpoints]
[('base', 'base'), ('sft', 'sft'), ('dpo', 'dpo'), ('instruct', 'rl')]
>>> lad.checkpoints[0].model
'allenai/OLMo-2-0425-1B'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from crystallab.errors import UserError
from crystallab.store import STAGES

PRESET_DIR = Path(str(resources.files("crystallab.ladders")))
_TOP = ("name", "checkpoints", "description")
_CKPT = ("label", "stage", "model", "revision")


@dataclass(frozen=True)
class Checkpoint:
    label: str
    stage: str
    model: str
    revision: str | None = None


@dataclass(frozen=True)
class Ladder:
    name: str
    checkpoints: tuple[Checkpoint, ...]
    source: str = ""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _unknown(src: str, where: str, key: Any, allowed: tuple[str, ...]) -> UserError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return UserError(f"{src}: field '{where}{key}': unknown key" + (f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(allowed)})"))


def ladder_from_dict(data: Any, src: str = "<ladder>") -> Ladder:
    if not isinstance(data, dict):
        raise UserError(f"{src}: expected a mapping with 'checkpoints', got {type(data).__name__}")
    for k in data:
        if k not in _TOP:
            raise _unknown(src, "", k, _TOP)
    items = data.get("checkpoints")
    if not isinstance(items, list) or not items:
        raise UserError(f"{src}: field 'checkpoints': expected a non-empty list")
    out: list[Checkpoint] = []
    for i, c in enumerate(items):
        where = f"checkpoints[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"{src}: field '{where}': expected a mapping with label, stage, model")
        for k in c:
            if k not in _CKPT:
                raise _unknown(src, f"{where}.", k, _CKPT)
        for k in ("label", "stage", "model"):
            if not isinstance(c.get(k), str) or not c[k].strip():
                raise UserError(f"{src}: field '{where}.{k}': expected a non-empty string")
        if c["stage"] not in STAGES:
            raise UserError(f"{src}: field '{where}.stage': '{c['stage']}' is not one of {', '.join(STAGES)}")
        rev = c.get("revision")
        if rev is not None and not isinstance(rev, (str, int)):
            raise UserError(f"{src}: field '{where}.revision': expected a string")
        if c["label"] in (x.label for x in out):
            raise UserError(f"{src}: field '{where}.label': duplicate label '{c['label']}' (each checkpoint needs its own)")
        out.append(Checkpoint(c["label"], c["stage"], c["model"], None if rev is None else str(rev)))
    name = data.get("name", Path(src).stem)
    if not isinstance(name, str):
        raise UserError(f"{src}: field 'name': expected a string")
    return Ladder(name, tuple(out), src)


def load_ladder(path: str | Path | None = None, preset: str | None = None) -> Ladder:
    import yaml

    if (path is None) == (preset is None):
        raise UserError("give a ladder file or --preset NAME (one of them)")
    if preset is not None:
        if preset not in preset_names():
            close = difflib.get_close_matches(preset, preset_names(), n=1)
            raise UserError(f"unknown ladder preset '{preset}'" + (f"; did you mean '{close[0]}'?" if close else f"; presets: {', '.join(preset_names())}"))
        path = PRESET_DIR / f"{preset}.yaml"
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise UserError(f"cannot read ladder file {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: malformed YAML ({str(exc).splitlines()[0]})") from exc
    return ladder_from_dict(data, str(p))
