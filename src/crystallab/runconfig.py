"""The resolved configuration of a run, written into its folder (``RUN/config.yaml``), and the
config files commands read: one precedence rule everywhere, dataclass defaults, then the file,
then the flags the user typed (cli/flags.py).

A written ``config.yaml`` is also a valid ``--config`` for the command that wrote it, so a run
can be repeated from its folder.

>>> from crystallab.measuring import MeasureConfig
>>> data = plain(MeasureConfig(model="m", tasks=["coin_flip"], out="o"))
>>> data["tasks"], data["load"]["dtype"], data["settings"]["method"]
(['coin_flip'], 'auto', 'exact')
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from crystallab import __version__
from crystallab.errors import UserError
from crystallab.models.base import LoadSettings
from crystallab.yamlconf import check_fields, kind_of, load_yaml_mapping

CONFIG_FILE = "config.yaml"


def plain(value: Any) -> Any:
    """``value`` as YAML/JSON-safe data: dataclasses as mappings, tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_config(folder: str | Path, data: Any, command: str, rerun: bool = True, name: str = CONFIG_FILE) -> Path:
    """Write ``data`` (a dataclass or a mapping) to ``folder/name`` atomically, headed by the
    command that resolved it (and, with ``rerun``, how to repeat it from this file)."""
    import yaml

    from crystallab.store import atomic_write_bytes

    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"# the resolved configuration of `crystallab {command}` (crystallab {__version__})\n"
    if rerun:
        head += f"# rerun it with: crystallab {command} --config {path}\n"
    text = head + yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


# ---- measure --config -------------------------------------------------------------------------
def measure_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A measure config file as three layers, ``{"config": ..., "load": ..., "settings": ...}``
    (MeasureConfig, LoadSettings and MeasureSettings fields). The file holds any of those
    fields at the top level, or the load and measure settings in ``load:`` and ``settings:``
    sections (the shape ``DIR/config.yaml`` is written in); an unknown key or a value of the
    wrong type is one line naming the file and the key."""
    from crystallab.measuring import MeasureConfig, MeasureSettings

    data = load_yaml_mapping(path, "measure")
    schemas = {"config": MeasureConfig, "load": LoadSettings, "settings": MeasureSettings}
    names = {
        k: [f.name for f in dataclasses.fields(c) if f.name not in ("load", "settings")] for k, c in schemas.items()
    }
    out: dict[str, dict[str, Any]] = {"config": {}, "load": {}, "settings": {}}
    for key, value in data.items():
        if key in ("load", "settings"):
            if not isinstance(value, dict):
                raise UserError(f"{path}: measure setting '{key}': expected a mapping, got {kind_of(value)}")
            for k, v in value.items():
                if k not in names[key]:
                    raise _unknown(path, f"{key}.{k}", names[key])
                out[key][k] = v
            continue
        layer = next((layer for layer, ns in names.items() if key in ns), None)
        if layer is None:
            raise _unknown(path, key, [n for ns in names.values() for n in ns])
        out[layer][key] = value
    if isinstance(out["config"].get("tasks"), str):  # ``tasks: a,b`` as on the command line
        out["config"]["tasks"] = [t.strip() for t in out["config"]["tasks"].split(",") if t.strip()]
    for layer, schema in schemas.items():
        out[layer] = check_fields(out[layer], schema, f"{path}: measure setting")
    return out


def _unknown(path: str | Path, key: str, known: list[str]) -> UserError:
    import difflib

    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(known)})"
    return UserError(f"{path}: unknown measure setting '{key}'{hint}")
