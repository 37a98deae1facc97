"""`crystallab compare DIR [DIR...]`: do different models nucleate onto the same seed?"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="map several folders' post-trained models into each root's basins: do they share a seed?",
        description="Read several results folders (ladders or single checkpoints beside a base), map every "
        "post-trained checkpoint's chat aggregate into the raw basins of each folder's root (k*, z, margin, "
        "seed_p), measure the distances between the models, and test whether they share a seed (a permutation "
        "test of their k*, by family name). Writes OUT/compare.json and OUT/compare.html.",
    )
    p.add_argument("dirs", metavar="DIR", nargs="+", help="results folders")
    p.add_argument("--task", default=None, help="the task to compare (default: the first one of the first folder)")
    p.add_argument("--out", default="compare", help="folder for compare.json and compare.html (default: ./compare)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of the intervals")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from crystallab.analysis.compare import compare
    from crystallab.analysis.thresholds import Thresholds
    from crystallab.errors import UserError
    from crystallab.reporting.compare import write_compare

    if args.n_boot < 1:
        raise UserError("--n-boot must be positive")
    c = compare(args.dirs, args.task, Thresholds(n_boot=args.n_boot))
    s = c["share_seed"]
    for m in c["mapping"]:
        home = m["roots"][m["folder"]]
        print(f"{m['folder']}/{m['checkpoint']}: k* {home['k_star']} in its own root (z {home['z'][0]:.2f})")
    print(
        f"shared seed: {s['verdict']} (k* {', '.join(str(k) for k in s['k_star_in_own_root'])}; "
        f"{s['agreeing_pairs']}/{s['pairs']} pairs agree, permutation p {s['p']:.3g})"
    )
    html = write_compare(c, args.out)
    print(f"wrote {html} and {html.parent / 'compare.json'}", file=sys.stderr)
    return 0
