"""Regenerate tests/data/small-results: a checked-in results folder (format 2) for the core-install
test (tests/test_core_install.py), made without a model.

A synthetic two-checkpoint ladder (base, then sft with parent base) on two built-in tasks,
number_1_10 and die_d6, with the planted truths of tests/synthetic.py: the base model's raw
context families each carry their own distribution (a liquid), and SFT lands every chat framing
in one seed family (a crystal), so `crystallab analyze` gives defined states and verdicts.

    .venv/bin/python tests/data/make_small_results.py [OUT]   # default: tests/data/small-results
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crystallab.store import ResultStore  # noqa: E402  (after the sys.path line above)
from crystallab.suite import load_task  # noqa: E402

from synthetic import CHAT_FAMILIES, FAMILIES, SEED, family_prompts, rows_for, write  # noqa: E402

DIE = {  # die_d6: one planted distribution per raw family, as FAMILIES is for number_1_10
    "qa": np.array([0.05, 0.1, 0.6, 0.1, 0.1, 0.05]),
    "list": np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]),
    "code": np.array([0.05, 0.05, 0.1, 0.1, 0.2, 0.5]),
    "game": np.full(6, 1 / 6),
    "form": np.array([0.1, 0.4, 0.1, 0.3, 0.05, 0.05]),
}


def task_rows(task: str, fams: dict[str, np.ndarray], rng: np.random.Generator) -> list[dict]:
    """base (a liquid: each raw and chat family its own distribution) and sft (every chat
    framing in the SEED family's distribution) for one task."""
    spec = load_task(task)
    options = list(spec.labels)
    chat_base = {f: list(fams.values())[i % len(fams)] for i, f in enumerate(CHAT_FAMILIES)}
    rows = rows_for(
        "base", 0, task, family_prompts(fams, rng), family_prompts(chat_base, rng, 3, 50), stage="base", options=options
    )
    sft_chat = family_prompts({f: fams[SEED] for f in CHAT_FAMILIES}, rng, 3, 2000)
    rows += rows_for("sft", 1, task, family_prompts(fams, rng), sft_chat, valid=0.95, stage="sft", options=options)
    for r in rows:
        r["task_version"] = spec.version
    return rows


def make(out: Path) -> Path:
    """Write the folder at ``out`` (replacing it) and return it."""
    rng = np.random.default_rng(12)
    rows = task_rows("number_1_10", FAMILIES, rng) + task_rows("die_d6", DIE, rng)
    shutil.rmtree(out, ignore_errors=True)
    write(out, rows)
    store = ResultStore(out)
    for label, parent in (("base", None), ("sft", "base")):
        store.checkpoint(label, f"synthetic/{label}", label, {}, parent=parent)
    store.save_manifest()
    for extra in out.iterdir():  # only what the format needs is checked in (no lock file, no empty folders)
        if extra.name.startswith(".") and extra.is_file():
            extra.unlink()
        elif extra.is_dir() and not any(extra.iterdir()):
            extra.rmdir()
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "small-results"
    print(make(target))
