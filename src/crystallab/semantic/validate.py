"""Does clustering recover the options? Validation on a closed task (issue 15, item 3).

A closed task's prompts are sampled as if the task were open (free-form completions, cut at the
first line), and the completions clustered **without the option list**. The task's own parser
then labels the same completions; the adjusted Rand index (ARI) between the clusters and the
parser's labels, over the completions the parser reads as an option, says how well semantic
options stand in for real ones (1: the same partition). The same prompts are also scored exactly,
and the order parameters from the clusters are set beside the exact scorer's.

    python -m crystallab.semantic.validate --model builtin:gemma-3-270m --task color --samples 40 \\
        --out runs/open-validate

writes ``OUT/open`` (the sampled, clustered folder), ``OUT/exact`` (the exact one) and
``OUT/validate.json``, and prints the ARI and the two sets of order parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from crystallab.suite import Task, load_task

PARAMS = ("spread", "phi", "n_basins", "h", "valid_mass")


def as_open(task: Task, max_tokens: int = 8) -> Task:
    """The closed task's prompts as an open task, with no option list. Its boundary is the one the
    closed task's answers have: the first word when every surface form is one word (a colour, an
    animal), else the first phrase (up to a comma or sentence mark).

    >>> as_open(load_task("color")).stop_at, as_open(load_task("us_state")).stop_at
    ('word', 'phrase')
    """
    one_word = all(len(f.split()) == 1 and "-" not in f for o in task.options for f in o.forms)
    return replace(
        task, id=f"{task.id}_open", kind="open", options=(), stop_at="word" if one_word else "phrase",
        max_tokens=max_tokens,
    )  # fmt: skip


def ari_against_parser(completions: list[str], clusters: list[int | None], task: Task) -> dict[str, Any]:
    """ARI of the cluster labels against the parser's, over the completions the parser reads as
    an option (a cluster label None, ⊥, counts as one more label), with how many that is.

    >>> from crystallab.suite import load_task
    >>> t = load_task("color")
    >>> ari_against_parser(["red", "Red.", "blue", "magenta"], [0, 0, 1, 2], t)["ari"]
    1.0
    """
    from sklearn.metrics import adjusted_rand_score

    from crystallab.scoring.sample import parse_answer

    parsed = [parse_answer(" " + c, task) for c in completions]
    keep = [i for i, k in enumerate(parsed) if k is not None]
    if len(keep) < 2:
        return {"ari": None, "parsed": len(keep), "completions": len(completions)}
    ari = adjusted_rand_score([parsed[i] for i in keep], [-1 if clusters[i] is None else clusters[i] for i in keep])
    return {"ari": round(float(ari), 4), "parsed": len(keep), "completions": len(completions)}


def _params(an: Any, task: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in an.states:
        if s.task == task and s.split is None:
            row: dict[str, Any] = {"state": s.state, "n_valid": s.n_valid}
            for k in PARAMS:
                est = s.params.get(k)
                row[k] = None if est is None or est.value is None else round(float(est.value), 4)
            out[s.ensemble] = row
    return out


def validate(model: str, task_id: str, samples: int, out: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Sample, cluster and score ``task_id`` on ``model`` (see the module docstring)."""
    from crystallab.analysis import analyze_dir
    from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
    from crystallab.models.load import load_model
    from crystallab.semantic.cluster import cluster_texts
    from crystallab.semantic.embed import load_embedder
    from crystallab.semantic.folder import read_completions

    out = Path(out)
    closed = load_task(task_id)
    opened = as_open(closed)
    t0 = time.perf_counter()
    backend = load_model(model)
    loaded = time.perf_counter() - t0
    cfg = MeasureConfig(
        model=model, tasks=[opened.id], out=str(out / "open"), label="base", stage="base", progress=False,
        settings=MeasureSettings(method="sample", samples=samples, limit=limit),
    )  # fmt: skip
    t1 = time.perf_counter()
    run_measure(cfg, backend=backend, tasks=[opened])
    sampled = time.perf_counter() - t1
    t2 = time.perf_counter()
    exact = replace(cfg, tasks=[closed.id], out=str(out / "exact"), settings=MeasureSettings(limit=limit))
    run_measure(exact, backend=backend, tasks=[closed])
    scored = time.perf_counter() - t2
    rows = read_completions(out / "open").to_pylist()
    texts = [r["completion"] for r in rows]
    embedder = load_embedder()
    c = cluster_texts(texts, embedder)  # the clustering cluster_folder wrote (same pool, same order)
    result = {
        "model": model,
        "task": task_id,
        "samples_per_prompt": samples,
        "prompts": len({r["prompt_id"] for r in rows}),
        "clusters": len(c.options),
        "degenerate": c.degenerate,
        "top_clusters": [
            {"option": o, "size": n, "exemplars": ex} for o, n, ex in list(zip(c.options, c.sizes, c.exemplars))[:8]
        ],
        **ari_against_parser(texts, c.labels, closed),
        # the threshold's sensitivity: the same pool cut lower and higher
        "ari_by_threshold": {
            th: ari_against_parser(texts, cluster_texts(texts, embedder, th).labels, closed)["ari"]
            for th in (0.1, 0.15, 0.2, 0.25, 0.3)
        },
        "stop_at": opened.stop_at,
        "order_parameters": {
            "clusters": _params(analyze_dir(str(out / "open")), opened.id),
            "exact": _params(analyze_dir(str(out / "exact")), closed.id),
        },
        "seconds": {"load": round(loaded, 1), "sample_and_cluster": round(sampled, 1), "exact": round(scored, 1)},
        "embedder": embedder.to_json(),
    }  # fmt: skip
    (out / "validate.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin:gemma-3-270m")
    p.add_argument("--task", default="color")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--limit", type=int, default=None, help="N prompts of each kind")
    p.add_argument("--out", default="runs/open-validate")
    a = p.parse_args(argv)
    r = validate(a.model, a.task, a.samples, a.out, a.limit)
    print(
        f"ARI {r['ari']} over {r['parsed']} of {r['completions']} completions the parser reads; "
        f"{r['clusters']} clusters"
    )
    for kind, per in r["order_parameters"].items():
        for ens, row in per.items():
            print(f"  {kind:8} {ens:5} " + " ".join(f"{k} {row[k]}" for k in ("state", *PARAMS)))
    for t in r["top_clusters"]:
        print(f"  {t['option']:4} {t['size']:5}  " + " · ".join(t["exemplars"]))
    print(f"  ARI by threshold: {r['ari_by_threshold']}")
    print(f"  took {r['seconds']}; wrote {Path(a.out) / 'validate.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
