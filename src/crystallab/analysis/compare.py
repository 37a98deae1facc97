"""Do different models nucleate onto the same seed? (``crystallab compare``, issue 15).

Several results folders (ladders, or single checkpoints beside a base) are read side by side.
Every post-trained checkpoint's chat aggregate is mapped into the raw basins of **each**
folder's root (the checkpoint with no parent: its base model), with the same figures an edge of
the analysis has (SCIENCE.md v2: ``k*``, ``z``, margin, ``seed_p``; analysis/relations.py), so a
model trained from one base can be read against another base too. Family names are shared by
the task, so when the roots differ, "X sits in the qa basin of its base, Y in the qa basin of
its base" is a comparable statement: the agreement test reads each model's ``k*`` **in its own
root**, by family name.

The permutation test of "these models share a seed": the statistic is the number of pairs of
models whose ``k*`` (in their own roots) is the same family. Under the null each model's ``k*``
is an independent draw, uniform over its own root's families (a model that ends in a basin at
random). The p-value is the null's probability of as many agreeing pairs or more: exact by
enumeration up to 200,000 assignments, otherwise 20,000 Monte Carlo draws (seeded).

>>> share_seed_test(["qa", "qa", "qa"], [["qa", "list", "code"]] * 3).p
0.1111
>>> share_seed_test(["qa", "list", "code"], [["qa", "list", "code"]] * 3).p
1.0
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crystallab import metrics as M
from crystallab.analysis import table as T
from crystallab.analysis.relations import transition
from crystallab.analysis.states import Valid
from crystallab.analysis.thresholds import Thresholds
from crystallab.errors import UserError

MAX_EXACT = 200_000
N_MONTE_CARLO = 20_000


@dataclass(frozen=True)
class SeedTest:
    statistic: int  # agreeing pairs
    p: float
    exact: bool
    null: str = "each model's k* uniform over its own root's families, independently"


def agreeing_pairs(k: list[str]) -> int:
    """Pairs of models with the same ``k*``.

    >>> agreeing_pairs(["qa", "qa", "list", "qa"])
    3
    """
    return sum(a == b for a, b in itertools.combinations(k, 2))


def share_seed_test(k_stars: list[str], families: list[list[str]], seed: int = 0) -> SeedTest:
    """The permutation test of a shared seed (see the module docstring); ``families[i]`` are the
    families model i's ``k*`` could have been."""
    obs = agreeing_pairs(k_stars)
    sizes = [len(f) for f in families]
    total = math.prod(sizes)
    if total <= MAX_EXACT:
        hits = sum(agreeing_pairs(list(draw)) >= obs for draw in itertools.product(*families))
        return SeedTest(obs, round(hits / total, 4), True)
    rng = np.random.default_rng(seed)
    draws = [[f[int(rng.integers(len(f)))] for f in families] for _ in range(N_MONTE_CARLO)]
    hits = sum(agreeing_pairs(d) >= obs for d in draws)
    return SeedTest(obs, round((hits + 1) / (N_MONTE_CARLO + 1), 4), False)


@dataclass
class Model:
    """One post-trained checkpoint of one folder."""

    folder: str
    label: str
    root: str
    chat: Valid
    aggregate: np.ndarray


@dataclass
class Folder:
    path: str
    name: str
    task: str
    options: list[str]
    root: str
    root_raw: Valid
    families: list[str]
    models: list[Model] = field(default_factory=list)


def _folder(path: str, task: str | None, th: Thresholds) -> Folder:
    from crystallab.analysis import _manifest_links, _select, parent_graph
    from crystallab.results import Results

    p = Path(path)
    if not p.is_dir() or not ((p / "distributions.parquet").is_file() or (p / "shards").is_dir()):
        raise UserError(f"{path}: not a results folder (no distribution table)")
    res = Results.load(p)
    links, _ = _manifest_links(res.manifest)
    rows, _ = _select(res.to_arrow(), None)
    tab = T.read(rows)
    tasks = [t for t in sorted(tab.options) if len(tab.options[t]) >= 2]
    if task is None:
        if not tasks:
            raise UserError(f"{path}: no task with 2 or more options")
        task = tasks[0]
    elif task not in tasks:
        raise UserError(f"{path}: no rows of task '{task}'; it has {', '.join(tasks) or 'none'}")
    graph = parent_graph(tab.checkpoints, links)
    root = next((lab for lab, par in graph.items() if par is None), None)
    by_label = {c["label"]: c for c in tab.checkpoints}
    if root is None:
        raise UserError(f"{path}: no root checkpoint (every checkpoint has a parent)")

    def ens(label: str, kind: str) -> Any:
        c = by_label[label]
        steps = tab.steps(c["index"], task)
        return tab.get(c["index"], steps[-1], task, kind) if steps else None

    raw = ens(root, "raw")
    if raw is None:
        raise UserError(f"{path}: the root '{root}' has no raw prompts of {task}: no basins to compare with")
    root_raw = Valid.of(raw, th.v_min)[0]
    if len(root_raw.ids) < 2:
        raise UserError(f"{path}: the root '{root}' has fewer than 2 valid raw prompts of {task}")
    fams = list(dict.fromkeys(root_raw.families)) if not root_raw.by_prompt else root_raw.ids
    name = p.resolve().name
    if name == "results":  # the lab's RUN/results: the run's own folder names it
        name = p.resolve().parent.name
    f = Folder(path, name, task, list(tab.options[task]), root, root_raw, fams)
    for c in tab.checkpoints:
        if c["label"] == root:
            continue
        e = ens(c["label"], "chat")
        if e is None:
            continue
        split = "heldout" if "heldout" in e.splits else None
        v = Valid.of(e.split(split), th.v_min)[0]
        if len(v.ids) == 0:
            continue  # an assistant that does not answer in-set has no aggregate
        f.models.append(Model(f.name, c["label"], root, v, v.P.mean(axis=0)))
    return f


def _boot_distance(a: Valid, b: Valid, th: Thresholds, rng: np.random.Generator) -> tuple[float, float, float]:
    """JS distance of two chat aggregates, with a bootstrap interval over each side's prompts."""
    d = M.js_distance(a.P.mean(axis=0), b.P.mean(axis=0))
    boot = [
        M.js_distance(a.P[rng.integers(0, len(a.ids), len(a.ids))].mean(axis=0),
                      b.P[rng.integers(0, len(b.ids), len(b.ids))].mean(axis=0))
        for _ in range(th.n_boot)
    ]  # fmt: skip
    lo, hi = M.percentile_interval(boot, th.level)
    return float(d), float(lo), float(hi)


def compare(paths: list[str], task: str | None = None, th: Thresholds | None = None) -> dict[str, Any]:
    """Everything ``compare.json`` holds (see the module docstring)."""
    th = th or Thresholds()
    if len(paths) < 1:
        raise UserError("compare needs at least one results folder")
    folders = [_folder(p, task, th) for p in paths]
    task = folders[0].task
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        folders = [replace_name(f, f"{f.name}#{i}") for i, f in enumerate(folders)]
    opts = folders[0].options
    for f in folders[1:]:
        if f.options != opts:
            raise UserError(f"{f.path}: the options of {task} differ from {folders[0].path}'s: not comparable")
    models = [m for f in folders for m in f.models]
    if not models:
        raise UserError("no post-trained checkpoint with a defined chat aggregate in these folders")
    cheap = Thresholds(**{**asdict(th), "n_boot": min(th.n_boot, 200)})
    mapping: list[dict[str, Any]] = []
    own: list[str] = []
    for m in models:
        per_root: dict[str, dict[str, Any]] = {}
        for f in folders:
            t = transition(
                task, parent=f.root, child=m.label, root=f.root, root_raw=f.root_raw, root_chat=None,
                parent_chat=None, child_chat=m.chat, options=opts, train_answers=None, th=cheap,
            )  # fmt: skip
            per_root[f.name] = {
                "k_star": t.k_star,
                "z": t.z[t.k_star].to_json() if t.k_star else None,
                "inside": t.inside,
                "margin": t.margin.to_json(),
                "seed_p": None if t.seed_p is None else t.seed_p.p,
                "d": {k: v.to_json() for k, v in t.d.items()},
            }
        home = next(f for f in folders if f.name == m.folder)
        own.append(str(per_root[home.name]["k_star"]))
        mapping.append({"folder": m.folder, "checkpoint": m.label, "own_root": home.root, "roots": per_root})
    rng = np.random.default_rng(th.seed)
    matrix = [[_boot_distance(a.chat, b.chat, cheap, rng) if i != j else (0.0, 0.0, 0.0) for j, b in
               enumerate(models)] for i, a in enumerate(models)]  # fmt: skip
    fam_lists = [next(f for f in folders if f.name == m.folder).families for m in models]
    test = share_seed_test(own, fam_lists, seed=th.seed)
    r0 = folders[0].root_raw.P
    shared_roots = all(f.root_raw.P.shape == r0.shape and np.allclose(f.root_raw.P, r0) for f in folders)
    return {
        "task": task,
        "options": opts,
        "folders": [{"path": f.path, "name": f.name, "root": f.root, "families": f.families} for f in folders],
        "models": [
            {"folder": m.folder, "checkpoint": m.label, "aggregate": [round(float(x), 5) for x in m.aggregate]}
            for m in models
        ],  # fmt: skip
        "mapping": mapping,
        "distance": {
            "labels": [f"{m.folder}/{m.label}" for m in models],
            "js": [[round(c[0], 4) for c in row] for row in matrix],
            "lo": [[round(c[1], 4) for c in row] for row in matrix],
            "hi": [[round(c[2], 4) for c in row] for row in matrix],
            "level": th.level,
        },
        "share_seed": {
            "k_star_in_own_root": own,
            "agreeing_pairs": test.statistic,
            "pairs": len(models) * (len(models) - 1) // 2,
            "p": test.p,
            "exact": test.exact,
            "null": test.null,
            "through": "families (the roots differ)" if not shared_roots else "one shared root",
            "verdict": "shared" if test.p < th.alpha else "not shown",
        },
        "root_families": {
            f.name: {fam: [round(float(x), 5) for x in _family_mean(f, fam)] for fam in f.families} for f in folders
        },
    }


def replace_name(f: Folder, name: str) -> Folder:
    f.name = name
    for m in f.models:
        m.folder = name
    return f


def _family_mean(f: Folder, fam: str) -> np.ndarray:
    if f.root_raw.by_prompt:
        return f.root_raw.P[f.root_raw.ids.index(fam)]
    rows = [i for i, x in enumerate(f.root_raw.families) if x == fam]
    return f.root_raw.P[rows].mean(axis=0)
