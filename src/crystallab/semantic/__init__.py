"""Open-ended tasks (``kind: open``): free-text completions turned into semantic options.

The data path: :func:`measure.sample_open` draws N completions per prompt and cuts each at the
task's stop rule; :mod:`folder` keeps them in ``DIR/open/completions/`` (every checkpoint's, with
their prompts); :func:`folder.cluster_folder` embeds the pooled completions of **every**
checkpoint of a results folder at once (:mod:`embed`), clusters them (:mod:`cluster`) so that the
options are shared across checkpoints, and writes each prompt's distribution over clusters into
the ordinary results table (option = cluster id, ``⊥`` = empty or degenerate completions), with
the clusters' side table ``DIR/open/clusters.parquet`` (exemplars, sizes, the embedder). Every
order parameter, state and verdict then applies unchanged. See docs/open.md.
"""

from crystallab.semantic.cluster import DEFAULT_THRESHOLD, Clustering, cluster_texts, degenerate
from crystallab.semantic.text import cut

__all__ = ["DEFAULT_THRESHOLD", "Clustering", "cluster_texts", "cut", "degenerate"]
