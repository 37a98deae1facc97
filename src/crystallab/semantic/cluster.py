"""Semantic options: clusters of completions by sentence embedding.

The algorithm, and its one threshold:

1. Each completion is **normalised** (:func:`normalise`): the chat preambles the closed tasks'
   parser strips ("Sure!", "I pick", "My answer is", ...), markdown and quotes, surrounding
   punctuation, and case. Completions with the same normal form are one answer.
2. Empty and **degenerate** completions (no letter or digit, or one character repeated) are
   ``⊥``, as out-of-set answers are on a closed task.
3. The distinct normal forms are embedded (unit vectors) and clustered by **average-linkage
   agglomerative clustering on cosine distance**, cut at ``threshold``
   (:data:`DEFAULT_THRESHOLD`). Average linkage merges two groups only when their members are
   close *on average*, so a chain of near neighbours does not glue distinct answers together
   (single linkage would), and it needs no number of clusters. Each distinct form counts once,
   so a frequent answer does not pull its neighbours in by sheer weight.

The threshold is set from data (``benchmarks/open_threshold.py`` prints both numbers): with the
default embedder, paraphrases of one answer ("Why did the chicken cross the road? To get to the
other side." against "...? Because it wanted to reach the other side.", "gray" against "grey",
"red" against "Red.") lie at cosine distance 0.02 to 0.16, and the closest *distinct* answers of
the closed tasks (one colour against another: "red" and "blue" 0.27, "red" and "green" 0.30)
from 0.27 up. 0.2 sits between the paraphrase floor and the nearest distinct pair.

>>> import numpy as np
>>> texts = ["red", "Red.", "I pick red", "blue", "Blue!", "", "!!!"]
>>> emb = {"red": [1.0, 0.0], "blue": [0.0, 1.0]}
>>> c = cluster_texts(texts, lambda xs: np.array([emb[x] for x in xs]))
>>> c.labels, c.options
([0, 0, 0, 1, 1, None, None], ['c0', 'c1'])
>>> c.exemplars[0][0], c.sizes
('red', [3, 2])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from crystallab.semantic.text import EDGE, strip_preambles

DEFAULT_THRESHOLD = 0.2  # cosine distance; see the module docstring for the data behind it
EXEMPLARS = 3  # the medoid and two more

Embed = Callable[[Sequence[str]], np.ndarray]


def normalise(text: str) -> str:
    """The answer's normal form: preambles, markdown, quotes, edge punctuation and case removed.

    >>> [normalise(s) for s in ["Sure! **Red**.", "I pick red", '"Zorblax the Wise"', "  ...  "]]
    ['red', 'red', 'zorblax the wise', '']
    """
    return re.sub(r"\s+", " ", strip_preambles(text.casefold()).strip(EDGE))


def degenerate(text: str) -> bool:
    """An answer that is no answer: empty, no letter or digit, or one character repeated.

    >>> [degenerate(s) for s in ["", "...", "aaaaaa", "a", "Zorblax", "42"]]
    [True, True, True, False, False, False]
    """
    s = normalise(text)
    if not any(ch.isalnum() for ch in s):
        return True
    return len(s) > 2 and len(set(s.replace(" ", ""))) == 1


@dataclass(frozen=True)
class Clustering:
    """Clusters of a pool of completions: ``labels[i]`` is completion i's cluster (None: ⊥)."""

    labels: list[int | None]
    options: list[str]  # the cluster ids, c0, c1, ... by decreasing size
    sizes: list[int]  # completions per cluster
    exemplars: list[list[str]]  # per cluster: the medoid's text first, then up to two more
    threshold: float
    n_forms: int  # distinct normal forms clustered
    degenerate: int  # completions counted as ⊥
    extra: dict[str, object] = field(default_factory=dict)


def cluster_texts(texts: Sequence[str], embed: Embed, threshold: float = DEFAULT_THRESHOLD) -> Clustering:
    """Cluster ``texts`` (see the module docstring); ``embed`` maps strings to vectors (made unit
    length here). Clusters are numbered by decreasing size (ties: first seen), so that ``c0`` is
    the most common answer of the pool."""
    if not 0 < threshold < 2:
        raise ValueError(f"the threshold is a cosine distance in (0, 2), got {threshold}")
    forms = [None if degenerate(t) else normalise(t) for t in texts]
    distinct = list(dict.fromkeys(f for f in forms if f is not None))
    if not distinct:
        return Clustering([None] * len(texts), [], [], [], threshold, 0, len(texts))
    vecs = np.asarray(embed(distinct), dtype=float)
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    if len(distinct) == 1:
        raw = np.zeros(1, dtype=int)
    else:
        from sklearn.cluster import AgglomerativeClustering

        raw = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
        ).fit_predict(vecs)
    of_form = dict(zip(distinct, raw.tolist()))
    counts = Counter(of_form[f] for f in forms if f is not None)
    first = {c: i for i, c in reversed(list(enumerate(of_form[f] for f in forms if f is not None)))}
    order = sorted(counts, key=lambda c: (-counts[c], first[c]))
    rank = {c: i for i, c in enumerate(order)}
    labels = [None if f is None else rank[of_form[f]] for f in forms]
    exemplars = []
    for c in order:
        idx = [i for i, f in enumerate(distinct) if of_form[f] == c]
        # weight each form by how often it was written: the medoid is the most central completion
        w = np.array([sum(1 for f in forms if f == distinct[i]) for i in idx], dtype=float)
        sim = vecs[idx] @ vecs[idx].T
        central = (sim * w[None, :]).sum(axis=1) / w.sum()
        best = [idx[j] for j in np.argsort(-central, kind="stable")[:EXEMPLARS]]
        exemplars.append([_shown(texts, forms, distinct[i]) for i in best])
    return Clustering(
        labels=labels,
        options=[f"c{i}" for i in range(len(order))],
        sizes=[counts[c] for c in order],
        exemplars=exemplars,
        threshold=threshold,
        n_forms=len(distinct),
        degenerate=sum(f is None for f in forms),
    )


def _shown(texts: Sequence[str], forms: Sequence[str | None], form: str) -> str:
    """The completion as most often written with this normal form (what an exemplar quotes)."""
    written = Counter(t.strip() for t, f in zip(texts, forms) if f == form)
    return written.most_common(1)[0][0]
