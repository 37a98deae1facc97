"""``compare.html``: the cross-model distance matrix, a basin map and each model's place in every
root's basins (analysis/compare.py). One self-contained page, like report.html."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from crystallab.reporting.html import CSS, e
from crystallab.store import atomic_write_bytes


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _matrix(c: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    D = np.array(c["distance"]["js"], dtype=float)
    labels = c["distance"]["labels"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(labels), 1.0 + 0.6 * len(labels)))
    im = ax.imshow(D, cmap="viridis", vmin=0, vmax=max(0.8, float(D.max())))
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{D[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if D[i, j] < 0.4 else "k")
    fig.colorbar(im, ax=ax, label="JS distance of the chat aggregates")
    return _png(fig)


def mds(D: np.ndarray) -> np.ndarray:
    """Classical multidimensional scaling to 2 dimensions.

    >>> X = mds(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))
    >>> round(float(np.linalg.norm(X[0] - X[2])), 3)
    2.0
    """
    n = D.shape[0]
    J = np.eye(n) - np.ones((n, n)) / n
    B = -0.5 * J @ (D**2) @ J
    w, V = np.linalg.eigh(B)
    top = np.argsort(w)[::-1][:2]
    return V[:, top] * np.sqrt(np.maximum(w[top], 0))


def _basin_map(c: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crystallab import metrics as M

    points, kinds = [], []
    roots = c["root_families"]
    if c["share_seed"]["through"] == "one shared root":  # one base: draw its families once
        roots = dict(list(roots.items())[:1])
    for folder, fams in roots.items():
        for fam, mean in fams.items():
            points.append(np.array(mean))
            kinds.append(("family", f"{fam} ({folder})" if len(roots) > 1 else fam))
    for m in c["models"]:
        points.append(np.array(m["aggregate"]))
        kinds.append(("model", f"{m['folder']}/{m['checkpoint']}"))
    D = np.array([[M.js_distance(a, b) for b in points] for a in points])
    X = mds(D)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    for (kind, name), (x, y) in zip(kinds, X):
        if kind == "family":
            ax.plot(x, y, "o", color="0.6", ms=9, alpha=0.7)
            ax.annotate(name, (x, y), fontsize=7, color="0.35", xytext=(4, 4), textcoords="offset points")
        else:
            ax.plot(x, y, "*", color="#D55E00", ms=12)
            ax.annotate(name, (x, y), fontsize=8, color="#D55E00", xytext=(4, -10), textcoords="offset points")
    ax.set_title("basin map: root family means (grey) and chat aggregates (stars), classical MDS of JS", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def _bars(c: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opts = c["options"]
    n = len(c["models"])
    fig, axes = plt.subplots(n, 1, figsize=(max(4.0, 0.35 * len(opts)), 1.2 * n + 0.4), squeeze=False, sharex=True)
    for ax, m in zip(axes[:, 0], c["models"]):
        ax.bar(range(len(opts)), m["aggregate"], color="#0072B2")
        ax.set_ylabel(f"{m['folder']}/{m['checkpoint']}", fontsize=7, rotation=0, ha="right")
        ax.set_ylim(0, 1)
    axes[-1, 0].set_xticks(range(len(opts)), opts, rotation=90, fontsize=7)
    return _png(fig)


def render(c: dict[str, Any]) -> str:
    s = c["share_seed"]
    rows = []
    for m in c["mapping"]:
        cells = []
        for f in c["folders"]:
            r = m["roots"][f["name"]]
            z = r["z"][0] if r["z"] else None
            p = r["seed_p"]
            cells.append(
                f"<td>{e(r['k_star'])} (z {e('n/a' if z is None else f'{z:.2f}')}, "
                f"seed p {e('n/a' if p is None else f'{p:.3g}')})</td>"
            )
        rows.append(f"<tr><td>{e(m['folder'])}/{e(m['checkpoint'])}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>in {e(f['name'])}'s root ({e(f['root'])})</th>" for f in c["folders"])
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>crystallab compare · {e(c['task'])}</title><style>{CSS}</style></head><body><main>",
            f"<h1>crystallab compare: {e(c['task'])}</h1>",
            f'<p id="verdict"><b>Shared seed: {e(s["verdict"])}</b>. k* of each model in its own root: '
            f"{e(', '.join(str(k) for k in s['k_star_in_own_root']))}; {s['agreeing_pairs']} of {s['pairs']} pairs "
            f"agree; permutation p = {s['p']:.3g} ({'exact' if s['exact'] else 'Monte Carlo'}; null: {e(s['null'])}; "
            f"compared through {e(s['through'])}).</p>",
            '<h2 id="mapping">Each model in each root\'s basins</h2>',
            f'<table class="small"><tr><th>model</th>{head}</tr>{"".join(rows)}</table>',
            '<h2 id="matrix">Distance matrix</h2>',
            f'<figure><img src="data:image/png;base64,{_matrix(c)}" alt="distance matrix"><figcaption>JS distance '
            f"between the chat aggregates ({int(c['distance']['level'] * 100)} % bootstrap intervals over prompts in "
            "compare.json).</figcaption></figure>",
            '<h2 id="map">Basin map</h2>',
            f'<figure><img src="data:image/png;base64,{_basin_map(c)}" alt="basin map"></figure>',
            '<h2 id="models">The models\' answers</h2>',
            f'<figure><img src="data:image/png;base64,{_bars(c)}" alt="chat aggregates"></figure>',
            "<footer>Definitions: SCIENCE.md version 2 (docs/science.md); this page: docs/analysis.md "
            "(Comparing models).</footer></main></body></html>",
        ]
    )


def write_compare(c: dict[str, Any], out: str | Path) -> Path:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "compare.json", json.dumps(c, indent=1, default=str).encode())
    atomic_write_bytes(out / "compare.html", render(c).encode("utf-8"))
    return out / "compare.html"
