"""The report's figures: small functions that take plain data and return a matplotlib Figure.

matplotlib is imported inside each function (Agg backend), never when crystallab is imported.
:func:`save` writes a figure as PNG (and SVG) and returns the PNG path.

Intervals are ``[point, lo, hi]`` lists as in ``analysis.json``; ``None``/NaN mean missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: One colour per checkpoint, by ladder position (colour-blind friendly, Okabe–Ito order).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OTHER = "⊥"
DPI = 110

CRYSTAL_FILL = "#dbe9f6"
LIQUID_FILL = "#fdebd3"
SEED_COLOR = "#d62728"


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titleweight": "bold",
            "legend.frameon": False,
            "svg.fonttype": "none",
        }
    )
    return plt


def color(index: int) -> str:
    """The colour of the checkpoint at ladder position ``index``."""
    return PALETTE[index % len(PALETTE)]


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _iv(x: Any) -> tuple[float, float, float]:
    """``[pt, lo, hi]`` (or a bare number, or None) → three floats (NaN when missing)."""
    if isinstance(x, (list, tuple)):
        vals = [_f(v) for v in list(x)[:3]] + [math.nan] * 3
        return vals[0], vals[1], vals[2]
    v = _f(x)
    return v, math.nan, math.nan


def _err(pt: float, lo: float, hi: float) -> tuple[float, float]:
    """Asymmetric error-bar half widths, 0 where the bound is missing."""
    below = pt - lo if math.isfinite(lo) else 0.0
    above = hi - pt if math.isfinite(hi) else 0.0
    return max(below, 0.0), max(above, 0.0)


def save(fig, stem: Path, svg: bool = True) -> Path:
    """Write ``stem.png`` (and ``stem.svg``), close the figure, return the PNG path."""
    plt = _mpl()
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=DPI, bbox_inches="tight", facecolor="white")
    if svg:
        fig.savefig(stem.with_suffix(".svg"), bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return png


# --------------------------------------------------------------------------------------------
# phase diagram


def _free_direction(p: tuple[float, float], blockers: list[tuple[float, float]], top: float) -> np.ndarray:
    """Of 8 compass directions, the one farthest (in angle) from every blocker, inside the axes."""
    best, best_score = np.array([1.0, 1.0]) / math.sqrt(2), -1.0
    angles = [math.atan2((q[1] - p[1]) / top, q[0] - p[0]) for q in blockers if (q[0], q[1]) != p]
    for deg in (45, 135, 0, 180, 90, -45, -135, -90):
        t = math.radians(deg)
        d = np.array([math.cos(t), math.sin(t)])
        if (p[1] < 0.1 * top and d[1] < -0.1) or (p[1] > 0.9 * top and d[1] > 0.1):
            continue
        if (p[0] > 0.85 and d[0] > 0.1) or (p[0] < 0.1 and d[0] < -0.1):
            continue
        gap = lambda a: abs((t - a + math.pi) % (2 * math.pi) - math.pi)  # noqa: E731
        score = min(min((gap(a) for a in angles), default=math.pi), min(gap(c * math.pi / 2) for c in range(4)) + 0.6)
        if score > best_score + 1e-6:
            best, best_score = d, score
    return best


def phase_diagram(panels: Sequence[dict[str, Any]], crystal: float = 0.1, liquid: float = 0.25):
    """Diversity vs normalised entropy, one point per checkpoint, one panel per task.

    ``panels``: ``[{"task": str, "set": "chat", "points": [{"label", "index", "state",
    "x": [pt, lo, hi], "y": [pt, lo, hi], "x_raw": [...] | None, "y_raw": [...] | None}]}]``
    with points in ladder order. Filled markers are the ``set`` (chat when measured), hollow
    markers the raw prompt set, arrows follow the ladder.
    """
    plt = _mpl()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = max(1, len(panels))
    ncols = min(n, 4 if n > 6 else 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.6 * ncols + 0.4, 7.8), 3.3 * nrows + 1.1), squeeze=False, sharex=True, sharey=True)
    ys = [
        v
        for p in panels
        for pt in p["points"]
        for key in ("y", "y_raw")
        for v in _iv(pt.get(key))
        if math.isfinite(v)
    ]
    top = min(1.04, max(0.55, (max(ys) if ys else 0.0) * 1.15 + 0.03))
    labels_seen: dict[str, int] = {}
    any_raw = False
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[k]
        ax.axhspan(-0.05, crystal, color=CRYSTAL_FILL, zorder=0, lw=0)
        ax.axhspan(liquid, 1.1, color=LIQUID_FILL, zorder=0, lw=0)
        ax.axhline(crystal, color="#6b8fb3", lw=0.8, ls="--", zorder=1)
        ax.axhline(liquid, color="#c9964f", lw=0.8, ls="--", zorder=1)
        ax.text(0.015, crystal / 2, "crystal", transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, color="#3d6a99", style="italic")
        ax.text(0.015, (liquid + top) / 2, "liquid", transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, color="#a26a1d", style="italic")
        ax.text(0.015, (crystal + liquid) / 2, "mixed", transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, color="0.45", style="italic")
        pts = panel["points"]
        xy = []
        for pt in pts:
            c = color(int(pt.get("index", 0)))
            labels_seen.setdefault(str(pt["label"]), int(pt.get("index", 0)))
            xr, xrl, xrh = _iv(pt.get("x_raw"))
            yr, yrl, yrh = _iv(pt.get("y_raw"))
            if math.isfinite(xr) and math.isfinite(yr):
                any_raw = True
                ax.errorbar(xr, yr, xerr=np.array([_err(xr, xrl, xrh)]).T, yerr=np.array([_err(yr, yrl, yrh)]).T,
                            fmt="o", ms=6, mfc="white", mec=c, mew=1.4, ecolor=c, elinewidth=0.7, alpha=0.85, capsize=0, zorder=3)
            x, xl, xh = _iv(pt.get("x"))
            y, yl, yh = _iv(pt.get("y"))
            if not (math.isfinite(x) and math.isfinite(y)):
                xy.append(None)
                continue
            ax.errorbar(x, y, xerr=np.array([_err(x, xl, xh)]).T, yerr=np.array([_err(y, yl, yh)]).T,
                        fmt="o", ms=8, color=c, mec="white", mew=0.8, ecolor=c, elinewidth=1.2, capsize=2.5, zorder=5)
            xy.append((x, y))
        prev = None
        for p in xy:
            if p is None:
                continue
            if prev is not None and (abs(p[0] - prev[0]) + abs(p[1] - prev[1])) > 1e-3:
                ax.annotate("", xy=p, xytext=prev, zorder=4,
                            arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.1, shrinkA=6, shrinkB=6, mutation_scale=11))
            prev = p
        valid = [p for p in xy if p is not None]
        raw_pts = [(_iv(pt.get("x_raw"))[0], _iv(pt.get("y_raw"))[0]) for pt in pts]
        done: set[int] = set()
        spots: list[tuple[float, float]] = []  # points covered by labels already placed
        unit = 1.06 / (ax.get_position().width * fig.get_figwidth() * 72)  # data units per point (x range 1.06)
        yunit = (top + 0.02) / (ax.get_position().height * fig.get_figheight() * 72)
        for j, (pt, p) in enumerate(zip(pts, xy)):
            if p is None or j in done:
                continue
            # checkpoints on the same spot share one label
            same = [m for m, q in enumerate(xy) if q is not None and m not in done and math.hypot(q[0] - p[0], (q[1] - p[1]) / top) < 0.02]
            done.update(same)
            text = ", ".join(str(pts[m]["label"]) for m in same)
            # put the label where no arrow, neighbour or axis edge is
            k = valid.index(p)
            blockers = [q for q in (valid[k - 1] if k > 0 else None, valid[k + 1] if k + 1 < len(valid) else None) if q is not None]
            blockers += [q for q in valid + raw_pts if q != p and all(map(math.isfinite, q))
                         and math.hypot(q[0] - p[0], (q[1] - p[1]) / top) < 0.25]
            blockers += [q for q in spots if math.hypot(q[0] - p[0], (q[1] - p[1]) / top) < 0.25]
            away = _free_direction(p, blockers, top)
            dx, dy = 11 * away
            width = 4.8 * len(text) * unit
            x0 = p[0] + dx * unit - (width if dx < -2 else width / 2 if abs(dx) <= 2 else 0)
            y0 = p[1] + (dy + (4 if dy > 2 else -4 if dy < -2 else 0)) * yunit
            spots += [(x0 + f * width, y0) for f in (0.0, 0.5, 1.0)]
            ax.annotate(text, p, xytext=(dx, dy), textcoords="offset points", fontsize=8,
                        ha="left" if dx > 2 else "right" if dx < -2 else "center",
                        va="bottom" if dy > 2 else "top" if dy < -2 else "center", color="0.15", zorder=6,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
        ax.set_title(f"{panel['task']}", loc="left")
        ax.set_xlim(-0.02, 1.04)
        ax.set_ylim(-0.02, top)
        ax.grid(True, color="0.92", lw=0.6, zorder=0)
    for ax in axes[-1, :]:
        ax.set_xlabel("entropy_norm")
    for ax in axes[:, 0]:
        ax.set_ylabel("diversity")
    for ax in axes.flat[len(panels):]:  # hidden panels: label the visible ones above them
        above = axes.flat[list(axes.flat).index(ax) - ncols]
        above.xaxis.set_tick_params(labelbottom=True)
        above.set_xlabel("entropy_norm")
    set_name = panels[0].get("set", "chat") if panels else "chat"
    ck_handles = [Line2D([], [], marker="o", ls="", color=color(i), ms=7, label=lab) for lab, i in sorted(labels_seen.items(), key=lambda t: t[1])]
    style = [Line2D([], [], marker="o", ls="", color="0.3", ms=7, label=f"{set_name} prompts (95 % CI)")]
    if any_raw:
        style.append(Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", ms=6, label="raw prompts"))
    style += [Patch(color=LIQUID_FILL, label=f"liquid: diversity ≥ {liquid:g}"), Patch(color=CRYSTAL_FILL, label=f"crystal: diversity < {crystal:g}")]
    h = fig.get_figheight()
    kw = dict(loc="upper center", fontsize=8, handletextpad=0.3, columnspacing=1.4)
    per_row = max(3, int(fig.get_figwidth() / 1.0))
    rows_ck = math.ceil(len(ck_handles) / per_row)
    leg = fig.legend(handles=ck_handles, ncol=min(len(ck_handles), per_row), bbox_to_anchor=(0.5, 1.0), **kw)
    fig.add_artist(leg)
    fig.legend(handles=style, ncol=len(style), bbox_to_anchor=(0.5, 1.0 - (0.22 * rows_ck + 0.02) / h), **kw)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.22 * rows_ck + 0.3) / h))
    return fig


# --------------------------------------------------------------------------------------------
# prompts × options heatmaps


def _tick_step(n: int, most: int) -> int:
    return max(1, math.ceil(n / most))


def prompt_heatmaps(
    task: str,
    options: Sequence[str],
    rows: Sequence[dict[str, Any]],
    panels: Sequence[dict[str, Any]],
    seeds: Sequence[dict[str, Any]] = (),
):
    """One heatmap of prompts × options per checkpoint, side by side.

    ``rows``: ``[{"prompt_id", "kind", "family"}]`` in display order (raw first, then chat).
    ``panels``: ``[{"label", "index", "probs": (n_rows, K) renormalised p̃ (NaN: not measured or
    no valid mass), "other": (n_rows,) raw ⊥ mass (NaN: not measured)}]`` in ladder order.
    ``seeds``: ``[{"prompt_id", "from", "to", "confirmed"}]``: the seed prompt's row is boxed
    (solid in the ``from`` checkpoint, i.e. the base, dashed elsewhere).
    """
    plt = _mpl()
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    K, n, C = len(options), max(1, len(rows)), max(1, len(panels))
    panel_w = min(max(0.2 * (K + 1.6) + 0.5, 2.3), 16.0 / C if C > 1 else 12.0)
    height = min(max(0.19 * n + 1.6, 2.6), 16.0)
    fig, axes = plt.subplots(1, C, figsize=(panel_w * C + 2.4, height), squeeze=False, sharey=True)
    axes = axes[0]
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#eeeeee")
    gcmap = plt.get_cmap("Greys").with_extremes(bad="#eeeeee")
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    im = gim = None
    n_raw = sum(1 for r in rows if r.get("kind") == "raw")
    seed_rows = {s["prompt_id"]: s for s in seeds}
    row_index = {r["prompt_id"]: i for i, r in enumerate(rows)}
    step = _tick_step(K, max(6, int(panel_w * 5)))
    gap, w_o = max(0.35, K / 60), max(1.0, K / 20)  # the ⊥ column: a little apart, visible for large K
    right = K - 0.5 + gap + w_o
    for ax, panel in zip(axes, panels):
        P = np.asarray(panel["probs"], dtype=float).reshape(len(rows), K) if rows else np.full((1, K), np.nan)
        other = np.asarray(panel["other"], dtype=float).reshape(-1, 1) if rows else np.full((1, 1), np.nan)
        im = ax.imshow(np.ma.masked_invalid(P), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                       extent=(-0.5, K - 0.5, n - 0.5, -0.5))
        gim = ax.imshow(np.ma.masked_invalid(other), cmap=gcmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                        extent=(K - 0.5 + gap, right, n - 0.5, -0.5))
        ax.set_xlim(-0.5, right)
        ax.set_ylim(n - 0.5, -0.5)
        ticks = list(range(0, K, step)) + [right - w_o / 2]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(options[i]) for i in range(0, K, step)] + [OTHER], fontsize=7,
                           rotation=90 if (K > 12 or max((len(str(o)) for o in options), default=1) > 3) else 0)
        ax.tick_params(length=2, pad=2)
        for s in ("top", "right", "left", "bottom"):
            ax.spines[s].set_visible(False)
        if 0 < n_raw < len(rows):
            ax.axhline(n_raw - 0.5, color="white", lw=2.5)
            ax.axhline(n_raw - 0.5, color="0.35", lw=0.8, ls=(0, (3, 2)))
        ax.set_title(str(panel["label"]), color=color(int(panel.get("index", 0))), loc="center")
        for pid, s in seed_rows.items():
            if pid not in row_index:
                continue
            i = row_index[pid]
            solid = str(s.get("from")) == str(panel["label"])
            ax.add_patch(Rectangle((-0.5, i - 0.5), right + 0.5, 1.0, fill=False, ec=SEED_COLOR,
                                   lw=2.0 if solid else 1.0, ls="-" if solid else (0, (2, 2)), zorder=5, clip_on=False))
            if solid:
                word = "seed of" if s.get("confirmed", True) else "closest to"
                ax.annotate(f"{word} {s.get('to', '')}" + ("" if s.get("confirmed", True) else "\n(unconfirmed)"), (right, i), xytext=(6, 0), textcoords="offset points",
                            va="center", ha="left", fontsize=7.5, color=SEED_COLOR, fontweight="bold", annotation_clip=False)
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels([f"{r['prompt_id']}  {r.get('family') or ''}".rstrip() for r in rows], fontsize=7)
    for lab in axes[0].get_yticklabels():
        if lab.get_text().split()[0] in seed_rows:
            lab.set_color(SEED_COLOR)
            lab.set_fontweight("bold")
    fig.suptitle(f"{task}: p̃(option | prompt) per checkpoint", x=0.01, ha="left", fontsize=10.5, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if im is not None:
        cax = fig.add_axes((0.945, 0.52, 0.012, 0.36))
        cb = fig.colorbar(im, cax=cax)
        cb.set_ticks([0, 0.05, 0.2, 0.5, 1.0])
        cb.ax.tick_params(labelsize=7)
        cb.set_label("p̃ (renormalised)", fontsize=7.5)
        gax = fig.add_axes((0.945, 0.1, 0.012, 0.3))
        gb = fig.colorbar(gim, cax=gax)
        gb.ax.tick_params(labelsize=7)
        gb.set_label(f"{OTHER} mass (raw p)", fontsize=7.5)
    return fig


# --------------------------------------------------------------------------------------------
# aggregate distributions


def aggregate_bars(task: str, options: Sequence[str], series: Sequence[dict[str, Any]], set_name: str = "chat"):
    """Aggregate p̄ per option for each checkpoint, plus each checkpoint's mean ⊥ mass.

    ``series``: ``[{"label", "index", "aggregate": [K floats] | None, "other_mass": float | None}]``
    in ladder order. Grouped bars up to 30 options, lines above that; ⊥ gets its own panel
    because it is raw mass while p̄ is renormalised over the options.
    """
    plt = _mpl()

    K, C = len(options), max(1, len(series))
    lines = K > 30
    width_main = min(max(0.32 * K * (1 if lines else max(1, C) ** 0.5) + 1.5, 5.0), 15.0)
    fig, (ax, axo) = plt.subplots(1, 2, figsize=(width_main + 1.6, 3.2), gridspec_kw={"width_ratios": [width_main, 1.25]})
    x = np.arange(K)
    w = 0.8 / C
    ymax = 0.0
    for j, s in enumerate(series):
        c = color(int(s.get("index", j)))
        agg = s.get("aggregate")
        if agg is None or len(agg) != K:
            continue
        a = np.array([_f(v) for v in agg])
        ymax = max(ymax, float(np.nanmax(a)) if np.isfinite(a).any() else 0.0)
        if lines:
            ax.plot(x, a, "-", color=c, lw=1.3, label=str(s["label"]), drawstyle="steps-mid")
        else:
            ax.bar(x - 0.4 + w * (j + 0.5), a, width=w * 0.92, color=c, label=str(s["label"]))
    if K:
        ax.axhline(1.0 / K, color="0.4", lw=0.8, ls=":", zorder=0)
        ax.text(K - 0.5, 1.0 / K, "uniform", fontsize=7, color="0.4", ha="right", va="bottom")
    step = _tick_step(K, max(8, int(width_main * 4)))
    ax.set_xticks(range(0, K, step))
    ax.set_xticklabels([str(options[i]) for i in range(0, K, step)], fontsize=7.5,
                       rotation=90 if (K > 12 or max((len(str(o)) for o in options), default=1) > 3) else 0)
    ax.set_xlim(-0.6, K - 0.4)
    ax.set_ylim(0, min(1.0, max(ymax * 1.12, 1.5 / max(K, 1))) if ymax else 1.0)
    ax.set_ylabel(f"p̄ ({set_name} prompts)")
    ax.set_title(f"{task}: aggregate distribution over {set_name} prompts", loc="left")
    ax.grid(True, axis="y", color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, ncol=min(C, 4), loc="upper right")
    for j, s in enumerate(series):
        om = _f(s.get("other_mass"))
        c = color(int(s.get("index", j)))
        if math.isfinite(om):
            axo.bar(j, om, color=c, width=0.7, hatch="///", edgecolor="white", lw=0)
            axo.text(j, om + 0.02, f"{om:.2f}", ha="center", va="bottom", fontsize=7)
    axo.set_xticks(range(len(series)))
    axo.set_xticklabels([str(s["label"]) for s in series], rotation=90 if C > 2 else 0, fontsize=7.5)
    axo.set_ylim(0, 1.08)
    axo.set_title(f"{OTHER} mass", loc="left")
    axo.set_ylabel("mean p(⊥), raw")
    axo.grid(True, axis="y", color="0.92", lw=0.6)
    axo.set_axisbelow(True)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# dynamics during training


def dynamics(entry: dict[str, Any], crystal: float = 0.1, liquid: float = 0.25):
    """Order parameters vs training step with bootstrap bands, the fitted transition step, and
    the susceptibility (across-prompt variance of entropy_norm) on a second panel.

    ``entry`` is one element of ``analysis["dynamics"]``.
    """
    plt = _mpl()

    steps = np.array([_f(s) for s in entry.get("steps") or []])
    series = entry.get("series") or {}
    fig, (ax, axs) = plt.subplots(2, 1, figsize=(7.6, 4.9), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    styles = {"diversity": "#0072B2", "entropy_norm": "#E69F00", "valid_mass": "#009E73"}
    for name, c in styles.items():
        vals = series.get(name)
        if not vals or len(vals) != len(steps):
            continue
        arr = np.array([_iv(v) for v in vals])
        ax.plot(steps, arr[:, 0], "o-", ms=3, lw=1.5, color=c, label=name)
        ok = np.isfinite(arr[:, 1]) & np.isfinite(arr[:, 2])
        if ok.any():
            ax.fill_between(steps, np.where(ok, arr[:, 1], arr[:, 0]), np.where(ok, arr[:, 2], arr[:, 0]), color=c, alpha=0.18, lw=0)
    ax.axhline(crystal, color="#6b8fb3", lw=0.7, ls="--")
    ax.axhline(liquid, color="#c9964f", lw=0.7, ls="--")
    ax.text(1.005, crystal, f"crystal {crystal:g}", transform=ax.get_yaxis_transform(), fontsize=7, color="#3d6a99", va="center")
    ax.text(1.005, liquid, f"liquid {liquid:g}", transform=ax.get_yaxis_transform(), fontsize=7, color="#a26a1d", va="center")
    ax.set_ylim(-0.03, 1.05)
    ax.set_ylabel("order parameter")
    ax.grid(True, color="0.93", lw=0.6)
    t0 = _f(entry.get("transition_step"))
    sus = [_f(v) for v in series.get("susceptibility") or []]
    if len(sus) == len(steps) and len(sus):
        axs.plot(steps, sus, "o-", ms=3, lw=1.4, color="#7f3c8d")
        axs.fill_between(steps, 0, np.nan_to_num(np.array(sus)), color="#7f3c8d", alpha=0.12, lw=0)
    peak = _f(entry.get("susceptibility_peak_step"))
    if math.isfinite(peak):
        axs.axvline(peak, color="#7f3c8d", lw=0.9, ls=":")
        axs.text(1.005, 0.5, f"peak at\nstep {peak:g}", transform=axs.transAxes, fontsize=7, color="#7f3c8d", va="center")
    axs.set_ylabel("susceptibility\n(var of entropy_norm)", fontsize=8)
    axs.set_xlabel("training step")
    axs.grid(True, color="0.93", lw=0.6)
    axs.set_ylim(bottom=0)
    if math.isfinite(t0):
        for a in (ax, axs):
            a.axvline(t0, color=SEED_COLOR, lw=1.2, ls="--")
        method = entry.get("method") or "fit"
        ax.text(t0, 1.02, f" transition step {t0:.4g} ({method})", transform=ax.get_xaxis_transform(), fontsize=7.5, color=SEED_COLOR, va="bottom")
    ax.legend(fontsize=7.5, loc="center right")
    sharp = _f(entry.get("sharpness"))
    sub = f"sharpness {sharp:.3g} / step" if math.isfinite(sharp) else "sharpness n/a"
    fig.suptitle(f"{entry.get('checkpoint', '')} · {entry.get('task', '')} · {entry.get('set', '')} prompts   ({sub})",
                 x=0.01, ha="left", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return fig
