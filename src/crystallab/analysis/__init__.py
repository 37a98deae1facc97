"""From a distribution table to states, transitions, verdicts and dynamics (SCIENCE.md v2).

Nothing here reads a stage name. The root of a ladder is its checkpoint without a parent (the
first one when none has a parent: then each checkpoint's parent is the one measured before
it), and every relation is a parent → child edge. Nucleation is read on the root's first
child, settling from that child to its last descendant.

>>> from crystallab.analysis import Thresholds
>>> Thresholds().eps, Thresholds().v_min
(0.05, 0.2)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from crystallab import __version__
from crystallab import metrics as M
from crystallab.analysis import table as T
from crystallab.analysis.dynamics import dynamics
from crystallab.analysis.relations import transition
from crystallab.analysis.states import Valid, ensemble_state
from crystallab.analysis.sweeps import order_parameter, sweep
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import (
    ANALYSIS_VERSION,
    Analysis,
    Checkpoint,
    Dynamics,
    EnsembleState,
    Estimate,
    Family,
    SeedP,
    Sweep,
    Transition,
    Verdict,
)
from crystallab.analysis.verdicts import liquid, nucleation, settling
from crystallab.errors import UserError
from crystallab.models.decoding import COLUMNS as DECODING_COLUMNS
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.results import Results
from crystallab.store import ResultStore, atomic_write_bytes, read_table
from crystallab.yamlconf import kind_of, load_json

__all__ = [
    "ANALYSIS_VERSION",
    "Analysis",
    "Checkpoint",
    "Dynamics",
    "EnsembleState",
    "Estimate",
    "Family",
    "SeedP",
    "Sweep",
    "Thresholds",
    "Transition",
    "Verdict",
    "analyze",
    "analyze_dir",
    "load_analysis",
    "order_parameter",
    "parent_graph",
    "summary_text",
    "sweep",
]


def parent_graph(checkpoints: list[dict[str, Any]], parents: dict[str, str | None] | None) -> dict[str, str | None]:
    """Each checkpoint's parent: as given, or (when no checkpoint has one) the one before it.

    >>> parent_graph([{"label": "a"}, {"label": "b"}], None)
    {'a': None, 'b': 'a'}
    >>> parent_graph([{"label": "x"}, {"label": "y"}, {"label": "z"}], {"y": "x", "z": "x"})
    {'x': None, 'y': 'x', 'z': 'x'}
    """
    labels = [c["label"] for c in checkpoints]
    given = {k: v for k, v in (parents or {}).items() if v is not None and k in labels and v in labels}
    if not given:
        return {lab: (labels[i - 1] if i else None) for i, lab in enumerate(labels)}
    return {lab: given.get(lab) for lab in labels}


def _descendants(graph: dict[str, str | None], label: str) -> list[str]:
    out, frontier = [], [label]
    while frontier:
        kids = [c for c, p in graph.items() if p in frontier and c not in out]
        out += kids
        frontier = kids
    return out


def _select(table: Any, method: str | None) -> tuple[Any, str]:
    rows, method = _select_method(table, method)
    return only_decoding(rows, None), method


def _select_method(table: Any, method: str | None) -> tuple[Any, str]:
    import pyarrow.compute as pc

    methods = set(table.column("method").to_pylist()) if table.num_rows else set()
    if not methods:
        raise UserError("the results table is empty: measure something first")
    method = method or ("exact" if "exact" in methods else sorted(methods)[0])
    if method not in methods:
        raise UserError(f"no rows measured with method '{method}' (found: {', '.join(sorted(methods))})")
    return table.filter(pc.equal(table.column("method"), method)), method


def decodings_in(table: Any) -> list[Decoding]:
    """The decoding settings a table's rows are under (a table without the columns: the default)."""
    if not all(c in table.column_names for c in DECODING_COLUMNS):
        return [DEFAULT]
    cols = table.select(list(DECODING_COLUMNS)).to_pydict()
    found = dict.fromkeys(Decoding.of(dict(zip(cols, v))) for v in zip(*cols.values()))
    return sorted(found, key=lambda d: (d.top_k, d.top_p, d.min_p, d.temperature))


def only_decoding(table: Any, decoding: Decoding | None) -> Any:
    """The rows under one decoding setting: ``decoding``, or (None) the only one present, or the
    default (T = 1, no truncation) among several. Several without the default is a UserError: an
    analysis never mixes distributions under different settings (``crystallab melt`` reads them
    all, one temperature at a time)."""
    import pyarrow.compute as pc

    have = decodings_in(table)
    if decoding is None:
        if len(have) == 1:
            return table
        if DEFAULT not in have:
            raise UserError(
                f"the rows are under {len(have)} decoding settings ({', '.join(d.label for d in have)}) and none is "
                "the default T=1; `crystallab melt DIR` reads them one temperature at a time"
            )
        decoding = DEFAULT
    if decoding not in have:
        raise UserError(f"no rows under {decoding.label} (found: {', '.join(d.label for d in have)})")
    if have == [decoding]:
        return table
    mask = None
    for c, v in decoding.columns().items():
        m = pc.equal(table.column(c), v)
        mask = m if mask is None else pc.and_(mask, m)
    return table.filter(mask)


def _verdict_split(ens: T.Ensemble) -> str | None:
    return "heldout" if "heldout" in ens.splits else None


def analyze(
    source: Any,
    thresholds: Thresholds | str | Path | None = None,
    method: str | None = None,
    *,
    parents: dict[str, str | None] | None = None,
    train_answers: dict[str, dict[str, dict[str, float]]] | None = None,
) -> Analysis:
    """The whole analysis of one method's rows: of a ``Results``, a results folder (read only:
    ``analyze_dir`` also writes ``analysis.json``) or a distribution table (a pyarrow Table).

    ``parents`` maps checkpoint labels to their parents (default: a Results' or folder's
    manifest, else the order measured); ``train_answers[checkpoint][task]`` is the answer
    distribution a checkpoint was trained on, where its data held answers to the task (it
    enables the attraction index). The Analysis keeps the rows it read (``.table``, for the
    report's heatmaps; never written to analysis.json).
    """
    if isinstance(source, (str, Path)):
        source = Results.load(source)
    if isinstance(source, Results):
        links, answers = _manifest_links(source.manifest)
        parents = parents if parents is not None else links
        train_answers = train_answers if train_answers is not None else answers
        source = source.to_arrow()
    th = Thresholds.from_file(thresholds) if isinstance(thresholds, (str, Path)) else (thresholds or Thresholds())
    return _analyze_table(source, th, method, parents, train_answers)


def _analyze_table(
    table: Any,
    th: Thresholds,
    method: str | None,
    parents: dict[str, str | None] | None,
    train_answers: dict[str, dict[str, dict[str, float]]] | None,
) -> Analysis:
    th.validate()
    rows, method = _select(table, method)
    tab = T.read(rows)
    graph = parent_graph(tab.checkpoints, parents)
    by_label = {c["label"]: c for c in tab.checkpoints}
    root = next((lab for lab, p in graph.items() if p is None), None)
    cks = [Checkpoint(c["label"], c["index"], graph[c["label"]], c["model"] or "") for c in tab.checkpoints]
    tasks = [t for t in sorted(tab.options) if len(tab.options[t]) >= 2]
    warnings = [
        f"task '{t}' has {len(tab.options[t])} option(s) in the table; a random task needs at least 2, "
        "so it was left out"
        for t in sorted(tab.options)
        if t not in tasks
    ]
    states: list[EnsembleState] = []
    transitions: list[Transition] = []
    dyn: list[Dynamics] = []
    pending: dict[str, dict[str, Any]] = {}
    for task in tasks:
        opts = tab.options[task]
        final: dict[tuple[str, str, str | None], EnsembleState] = {}
        valid: dict[tuple[str, str], Valid] = {}
        for c in tab.checkpoints:
            steps = tab.steps(c["index"], task)
            if not steps:
                continue
            for kind in ("raw", "chat"):
                ens = tab.get(c["index"], steps[-1], task, kind)
                if ens is None:
                    continue
                splits = [None] + [s for s in ("train", "heldout") if s in ens.splits]
                for sp in splits:
                    sub = ens.split(sp)
                    st = ensemble_state(sub, th, checkpoint=c["label"], task=task, kind=kind, step=steps[-1], split=sp)
                    states.append(st)
                    final[(c["label"], kind, sp)] = st
                    if sp is None and st.invalid_prompts:
                        ids = st.invalid_prompts
                        warnings.append(
                            f"{c['label']}/{task}/{kind}: {len(ids)} of {st.n_prompts} prompt(s) have valid mass "
                            f"below {th.v_min} and were left out: {', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}"
                        )
                # held-out prompts guard against memorising training data; the root is never trained, so
                # its basins come from every prompt (one held-out prompt per family cannot show a basin)
                vs = None if c["label"] == root else _verdict_split(ens)
                valid[(c["label"], kind)] = Valid.of(ens.split(vs), th.v_min)[0]
                final[(c["label"], kind, "verdict")] = final[(c["label"], kind, vs)]

        def defined(label: str, kind: str) -> bool:
            st = final.get((label, kind, "verdict"))
            return st is not None and st.state != "undefined"

        def t_answers(label: str) -> np.ndarray | None:
            ans = ((train_answers or {}).get(label) or {}).get(task)
            if not ans:
                return None
            v = np.array([float(ans.get(o, 0.0)) for o in opts])
            return v / v.sum() if v.sum() > 0 else None

        edges: dict[tuple[str, str], Transition] = {}

        def edge(parent: str, child: str) -> Transition | None:
            if (parent, child) in edges:
                return edges[(parent, child)]
            # the root's own chat may be undefined (a base model that does not answer chat prompts
            # in-set): nucleation compares the child with the root's raw basins, not with it
            parent_ok = defined(parent, "chat") or parent == root
            if root is None or not (defined(root, "raw") and parent_ok and defined(child, "chat")):
                return None
            t = transition(
                task,
                parent=parent,
                child=child,
                root=root,
                root_raw=valid[(root, "raw")],
                root_chat=valid[(root, "chat")] if defined(root, "chat") else None,
                parent_chat=valid[(parent, "chat")] if defined(parent, "chat") else None,
                child_chat=valid[(child, "chat")],
                options=opts,
                train_answers=t_answers(child),
                th=th,
            )
            edges[(parent, child)] = t
            return t

        for c in tab.checkpoints:
            p = graph[c["label"]]
            if p is not None and (c["label"], "chat", "verdict") in final:
                t = edge(p, c["label"])
                if t is not None:
                    transitions.append(t)
        # dynamics of every tracked run (>= 4 measured steps)
        for c in tab.checkpoints:
            tracked = [int(s) for s in tab.steps(c["index"], task) if s is not None]
            if len(tracked) < 4 or root is None or not defined(root, "raw") or c["label"] == root:
                continue
            parent = graph[c["label"]]
            t = edges.get((parent, c["label"])) if parent else None
            k = None
            support = None
            names = (
                list(dict.fromkeys(valid[(root, "raw")].families))
                if not valid[(root, "raw")].by_prompt
                else valid[(root, "raw")].ids
            )
            if parent == root and t is not None and t.k_star is not None:
                k = names.index(t.k_star)
            elif t is not None:
                support = np.array([opts.index(o) for o in t.support])
            else:
                continue
            dyn.append(
                dynamics(
                    c["label"],
                    task,
                    tracked,
                    [tab.get(c["index"], s, task, "chat") for s in tracked],
                    [tab.get(c["index"], s, task, "raw") for s in tracked],
                    root_raw=valid[(root, "raw")],
                    k_star=k,
                    support=support,
                    train_answers=t_answers(c["label"]),
                    th=th,
                )
            )
        # the claims' ingredients; the verdicts wait for the Holm correction across tasks
        kids = sorted(
            [lab for lab, p in graph.items() if p == root and (lab, "chat", "verdict") in final],
            key=lambda lab: by_label[lab]["index"],
        )
        first = kids[0] if kids else None
        desc = [d for d in _descendants(graph, first) if (d, "chat", "verdict") in final] if first else []
        last = max(desc, key=lambda lab: by_label[lab]["index"]) if desc else None
        pending[task] = {
            "root_raw": final.get((root, "raw", None)) if root else None,
            "first": first,
            "first_chat": final.get((first, "chat", "verdict")) if first else None,
            "t_nuc": edge(root, first) if first and root else None,
            "last": last,
            "last_chat": final.get((last, "chat", "verdict")) if last else None,
            "t_set": edge(first, last) if first and last else None,
        }
    p_raw = [
        (pending[t]["t_nuc"].seed_p.p if pending[t]["t_nuc"] and pending[t]["t_nuc"].seed_p else None) for t in tasks
    ]
    p_holm = M.holm(p_raw)
    verdicts: dict[str, dict[str, Verdict]] = {}
    for task, ph in zip(tasks, p_holm):
        d = pending[task]
        miss_n = "" if d["first"] else "the ladder has no child of the root for this task"
        if d["first"] and not d["t_nuc"] and d["first_chat"] is not None and d["first_chat"].state != "undefined":
            miss_n = "the root's raw ensemble is undefined: there are no basins to nucleate into"
        miss_s = "" if d["last"] else "the ladder has no descendant of the root's first child"
        verdicts[task] = {
            "liquid": liquid(d["root_raw"]),
            "nucleation": nucleation(d["first_chat"], d["t_nuc"], ph, th, miss_n),
            "settling": settling(d["first_chat"], d["last_chat"], d["t_set"], th, miss_s),
        }
    return Analysis(
        crystallab_version=__version__,
        method=method,
        thresholds=dict(th.__dict__),
        checkpoints=cks,
        root=root,
        tasks=tasks,
        options={t: tab.options[t] for t in tasks},
        states=states,
        transitions=transitions,
        verdicts=verdicts,
        dynamics=dyn,
        warnings=warnings,
        table=rows,
    )


def _manifest_links(
    manifest: dict[str, Any], src: str = "manifest.json"
) -> tuple[dict[str, str | None], dict[str, dict[str, dict[str, float]]]]:
    """Each checkpoint's parent and training answers, from a manifest that
    :func:`crystallab.store.check_manifest` accepted; a parent or ``train_answers`` of the wrong
    shape is one line naming the field."""
    parents: dict[str, str | None] = {}
    answers: dict[str, dict[str, dict[str, float]]] = {}
    for i, c in enumerate(manifest.get("checkpoints", [])):
        info = c.get("info") if isinstance(c.get("info"), dict) else {}
        where = f"{src}: field 'checkpoints[{i}]"
        parent = c.get("parent") or info.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise UserError(f"{where}.info.parent': expected a checkpoint label, got {kind_of(parent)}")
        parents[c["label"]] = parent
        ans = c.get("train_answers") or info.get("train_answers")
        if ans is None:
            continue
        ok = isinstance(ans, dict) and all(
            isinstance(dist, dict) and all(isinstance(o, str) and _probability(q) for o, q in dist.items())
            for dist in ans.values()
        )
        if not ok:
            raise UserError(f"{where}.info.train_answers': expected a mapping of task to option probabilities")
        answers[c["label"]] = {t: {o: float(q) for o, q in dist.items()} for t, dist in ans.items()}
    return parents, answers


def _probability(q: Any) -> bool:
    return isinstance(q, (int, float)) and not isinstance(q, bool) and 0.0 <= q <= 1e300


def analyze_dir(
    directory: str | Path, thresholds: str | Thresholds | None = None, method: str | None = None
) -> Analysis:
    """Analyse a results folder and write ``DIR/analysis.json``."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"no results folder at {d}")
    store = ResultStore(d)  # refuses a folder written by an incompatible version, or a broken manifest
    th = Thresholds.from_file(thresholds) if isinstance(thresholds, (str, Path)) else (thresholds or Thresholds())
    parents, answers = _manifest_links(store.manifest, str(store.manifest_path))
    result = analyze(read_table(d), th, method, parents=parents, train_answers=answers)
    atomic_write_bytes(
        d / "analysis.json", (json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n").encode()
    )
    return result


def load_analysis(directory: str | Path) -> Analysis:
    """``DIR/analysis.json`` as an :class:`Analysis`; a missing, unreadable or foreign file is one line."""
    f = Path(directory) / "analysis.json"
    if not f.is_file():
        raise UserError(f"no analysis at {f}; run `crystallab analyze {Path(directory)}` first")
    rerun = f"rerun `crystallab analyze {Path(directory)}`"
    try:
        data = load_json(f, "analysis")
    except UserError as exc:
        raise UserError(f"{exc}; {rerun}") from None
    try:
        return Analysis.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise UserError(
            f"cannot read {f} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {rerun}"
        ) from None


def summary_text(an: Analysis) -> str:
    """A short terminal summary: states along the ladder and the three verdicts per task."""
    lines = [
        f"checkpoints: {' → '.join(c.label for c in an.checkpoints)}   (root: {an.root}; method: {an.method}; "
        f"ε = {an.thresholds.get('eps')}, v_min = {an.thresholds.get('v_min')}, α = {an.thresholds.get('alpha')})"
    ]
    for task in an.tasks:
        parts = []
        for c in an.checkpoints:
            r, ch = an.state(c.label, task, "raw"), an.state(c.label, task, "chat")
            if r or ch:
                parts.append(f"{c.label}=raw:{r.state if r else '-'}/chat:{ch.state if ch else '-'}")
        lines.append(f"{task}: " + " → ".join(parts))
        for claim, v in an.verdicts.get(task, {}).items():
            lines.append(f"  {claim:<10} {v.value:<12} {v.why}")
    for w in an.warnings:
        lines.append(f"note: {w}")
    for d in an.dynamics:
        lines.append(
            f"dynamics {d.checkpoint}/{d.task}: {d.coordinate}: {d.test.get('verdict')} "
            f"(t0 {d.test.get('t0')}, share logistic {d.test.get('share_logistic')})"
        )
    return "\n".join(lines)
