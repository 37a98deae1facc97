"""Transition tests: is a change during training, or along a control parameter, sharp? (SCIENCE.md v2)

Two questions, two parts of this module.

**Dynamics during training** ("Dynamics during training"). One coordinate (``d_k*(t)`` after SFT,
``q(S)`` after RL, ...) is measured at common steps ``t`` in ``R`` replicas. Each replica is fitted
with a constant, an exponential relaxation ``a + b·exp(-(t - t_first)/τ)`` and a logistic
``a + b·expit((t - t0)/w)`` (:func:`fit_constant`, :func:`fit_exponential`, :func:`fit_logistic`)
and the three are compared by BIC, ``n·log(rss/n) + k·log(n)`` with ``k`` the number of curve
parameters (the noise variance is common to all three and cancels). :func:`transition_test` then
reads the verdict. Where SCIENCE.md leaves the rule open, this module reads it as follows:

- **sharp**: ``BIC_exp - BIC_logistic > dbic`` (10) in at least ``share`` (80 %) of the replicas;
  the median over replicas of the logistic midpoint ``t0`` inside the window; and the total
  change, ``|fitted end - fitted start|`` of the logistic fit (median over replicas), larger than
  ``n_sd`` (3) replica standard deviations.
- **inside the window** means at least two observed steps on each side of ``t0``: ``t_(2) < t0 <
  t_(T-1)`` over the distinct steps (``t0_window``). The fit lets ``t0`` lie up to one window
  length outside the window, so that "outside" can be seen at all. The strict reading ``t_first <
  t0 < t_last`` is not enough: when only the onset of a logistic is in the window (midpoint at 600
  or 700, window ending at 500), the logistic still beats the exponential (no relaxation
  accelerates), and its fitted midpoint, poorly pinned by the onset alone, landed between the last
  two steps often enough that the strict reading called 7/25 and 14/25 such series sharp (3
  replicas, noise SD 0.005); with two steps required on each side, 0/25. A midpoint with a single
  step after it rests on one point for its far level, which cannot tell a transition from an onset.
- **replica standard deviation**: with ``R >= 2``, the across-replica SD of the coordinate pooled
  over steps, ``sqrt(mean_t var_r(y_r(t)))`` (``ddof=1``): what a replica's run-to-run scatter is.
  With ``R = 1`` there is no replica scatter, and the residual SD ``sqrt(rss/(n - k))`` of that
  replica's lowest-BIC fit stands in for it.
- **gradual / none**: a replica *changes* when its better non-constant model (exponential or
  logistic, lower BIC) beats the constant by more than the same margin ``dbic``; its *winner* is
  that model, otherwise ``constant``. Not sharp and a strict majority of replicas changing gives
  ``gradual``, otherwise ``none``. The margin is not in SCIENCE.md's words; it is needed because
  "lowest BIC wins" alone picks a non-constant model on pure noise in about 14 % of replicas
  (measured: 165 of 1,200 on the 15-step schedule of the tests; the exponential's free ``τ`` and
  the logistic's free ``t0`` buy more than their ``log n`` penalties), so a single-replica noise
  series would read "gradual" 14 % of the time and a 3-replica one (majority) 4 % (17/400), at the
  edge of a 5 % false-alarm rate. With the margin: 0/400. ``ΔBIC > 10`` is Kass & Raftery's
  "very strong" evidence, the same bar SCIENCE.md sets for the logistic over the exponential.
  "gradual" also covers change that is not shown to be sharp (a logistic whose midpoint lies
  outside the window, or one that wins by less than ``dbic``): it means "changed, not shown to be
  sharp"; ``winners`` says which model each replica preferred.
- **undefined**: no replica has the 5 finite points a 4-parameter fit needs.
- ``t0`` and ``w`` are the medians over replicas of the logistic fit's parameters, whatever the
  verdict (they mean a transition time and width only when it is sharp); their intervals are the
  ``level`` percentiles of the replica values (the replica-to-replica spread, deterministic; NaN
  with one replica).

:func:`susceptibility` is the across-replica variance at each step; the across-prompt variance is
``prompt_variance`` and lives with the order parameters, not here.

**Sharpness against a control parameter** ("Sharpness against a control parameter"). A mixture
sweep measures the end state ``m(λ)`` (:func:`mixture_m`) on a grid of ``λ`` in ``R`` replicas and
compares it with the fitting null ``m_lin(λ)`` (:func:`fitting_null`). :func:`sweep_sharpness`
gives ``Σ = max|dm/dλ| / max|dm_lin/dλ|`` and the steepest ``λ_c`` with bootstrap intervals over
replicas; :func:`dip_test` (bimodality at one ``λ`` near ``λ_c``) and :func:`hysteresis_test` (end
states continued at ``λ_c`` from A- and from B-trained checkpoints) give the p-values that
:func:`sweep_verdict` needs beside ``Σ``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

from crystallab.metrics import _js_rows

MIN_POINTS = 5  # a 4-parameter logistic needs at least one residual degree of freedom
# Profile grids in scaled time u = (t - t_first) / span, so that u runs over [0, 1].
_TAU_GRID = np.logspace(-4, 1, 61)
_W_GRID = np.logspace(-4, 1, 26)
_U0_BOUNDS = (-1.0, 2.0)  # t0 may lie one window-length outside the window: "outside" must be representable


def _plain(x: Any) -> Any:
    """Plain JSON-able value: floats, ints, bools, strings, lists, dicts; None for NaN."""
    if isinstance(x, (Fit, TransitionTest, SweepSharpness)):
        return x.to_json()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


# --------------------------------------------------------------------------- fits of one series


@dataclass(frozen=True)
class Fit:
    """One least-squares fit of a series: ``model``, its ``params``, ``rss``, ``n_params`` (curve
    parameters), ``n`` (points used), ``bic`` and ``fitted`` (at the input steps; NaN where a point
    was not used). ``note`` says why a fit is NaN or degenerate."""

    model: str
    params: dict[str, float]
    rss: float
    n_params: int
    n: int
    bic: float
    fitted: tuple[float, ...]
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (None for NaN).

        >>> fit_constant([0, 1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0, 1.0]).to_json()["params"]
        {'a': 1.0}
        """
        return {
            "model": self.model,
            "params": _plain(self.params),
            "rss": _plain(self.rss),
            "n_params": self.n_params,
            "n": self.n,
            "bic": _plain(self.bic),
            "fitted": _plain(self.fitted),
            "note": self.note,
        }


_PARAM_NAMES = {"constant": ("a",), "exponential": ("a", "b", "tau"), "logistic": ("a", "b", "t0", "w")}


def _bic(rss: float, n: int, k: int, scale: float) -> float:
    # A perfect fit has rss = 0 and log(0) = -inf; below this floor (residual RMS 1e-9 of the data's
    # scale) differences in rss are rounding, not evidence, so every perfect fit is scored alike.
    floor = n * (1e-9 * scale) ** 2
    return float(n * math.log(max(rss, floor, np.finfo(float).tiny) / n) + k * math.log(n))


class _Series:
    """The finite points of one series, with scaled time ``u`` in [0, 1]."""

    def __init__(self, t: ArrayLike, y: ArrayLike):
        t_all = np.asarray(t, dtype=float).ravel()
        y_all = np.asarray(y, dtype=float).ravel()
        if t_all.shape != y_all.shape:
            raise ValueError(f"t has {t_all.size} values, y has {y_all.size}")
        self.size = t_all.size
        self.used = np.isfinite(t_all) & np.isfinite(y_all)
        self.t, self.y = t_all[self.used], y_all[self.used]
        self.n = int(self.t.size)
        notes = []
        if self.n < self.size:
            notes.append(f"{self.size - self.n} non-finite points left out")
        self.t_first = float(self.t.min()) if self.n else math.nan
        span = float(self.t.max() - self.t.min()) if self.n else 0.0
        if self.n and span == 0.0:
            notes.append("steps do not vary")
        self.span = span or 1.0
        self.u = (self.t - self.t_first) / self.span
        self.scale = float(np.abs(self.y).max()) if self.n else 1.0
        self.scale = self.scale or 1.0
        self.flat = self.n >= MIN_POINTS and float(np.ptp(self.y)) == 0.0
        if self.flat:
            notes.append("flat series")
        self.notes = notes

    def fit(self, model: str, params: dict[str, float], fitted_used: np.ndarray, extra: str = "") -> Fit:
        k = len(_PARAM_NAMES[model])
        rss = float(((fitted_used - self.y) ** 2).sum())
        fitted = np.full(self.size, math.nan)
        fitted[self.used] = fitted_used
        note = "; ".join(filter(None, [*self.notes, extra]))
        return Fit(model, params, rss, k, self.n, _bic(rss, self.n, k, self.scale), tuple(fitted.tolist()), note)

    def flat_fit(self, model: str) -> Fit:
        """The constant, exactly: without change the time parameters are undefined (NaN)."""
        params = {name: math.nan for name in _PARAM_NAMES[model]}
        params.update(a=float(self.y[0]), **({} if model == "constant" else {"b": 0.0}))
        return self.fit(model, params, np.full(self.n, float(self.y[0])), "no change: time parameters undefined")

    def short(self, model: str) -> Fit | None:
        if self.n >= MIN_POINTS:
            return None
        note = "; ".join([*self.notes, f"need at least {MIN_POINTS} finite points, got {self.n}"])
        params = {name: math.nan for name in _PARAM_NAMES[model]}
        k = len(params)
        return Fit(model, params, math.nan, k, self.n, math.nan, (math.nan,) * self.size, note)


def _profile(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``y ≈ a + b·x`` for every row ``x`` of ``X``: (a, b, rss) per row.

    Closed form on centred sums; a row with no variance gets b = 0 (the constant fit)."""
    xc = X - X.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    sxx = (xc**2).sum(axis=1)
    sxy = xc @ yc
    ok = sxx > 1e-14 * X.shape[1]
    b = np.where(ok, sxy / np.where(ok, sxx, 1.0), 0.0)
    a = y.mean() - b * X.mean(axis=1)
    rss = np.maximum((yc**2).sum() - b * sxy, 0.0)
    return a, b, rss


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """:func:`_profile` for one ``x`` (it runs inside the optimisers' loops: plain 1-d arithmetic)."""
    xm = float(x.mean())
    xc = x - xm
    sxx = float(xc @ xc)
    b = float(xc @ y) / sxx if sxx > 1e-14 * x.size else 0.0
    return float(y.mean()) - b * xm, b


def fit_constant(t: ArrayLike, y: ArrayLike) -> Fit:
    """Constant ``y = a`` (the mean of the finite points; 1 parameter).

    Fewer than 5 finite points give NaNs and a note, as for the other two fits, so that all three
    are compared on the same series.

    >>> f = fit_constant([0, 1, 2, 4, 8], [1.0, 2.0, 3.0, 2.0, 2.0])
    >>> f.params, round(f.rss, 3), f.n_params
    ({'a': 2.0}, 2.0, 1)
    """
    s = _Series(t, y)
    short = s.short("constant")
    if short is not None:
        return short
    a = float(s.y.mean())
    return s.fit("constant", {"a": a}, np.full(s.n, a))


def fit_exponential(t: ArrayLike, y: ArrayLike) -> Fit:
    """Exponential relaxation ``y = a + b·exp(-(t - t_first)/τ)``, ``τ > 0`` (3 parameters).

    For fixed ``τ`` the model is linear in ``a, b``, so the residual is profiled exactly over a
    log grid of ``τ`` from ``1e-4`` to ``10`` window lengths and the best grid point refined by a
    bounded scalar search: no starting guess, no failed fit. ``b = 0`` is the constant, so the fit
    never does worse than :func:`fit_constant`; a flat series gets ``b = 0`` and a NaN ``τ``.
    ``t_first`` is the first finite step.

    >>> t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300, 400, 500.0])
    >>> f = fit_exponential(t, 0.2 + 0.6 * np.exp(-t / 50))
    >>> {k: round(v, 3) for k, v in f.params.items()}
    {'a': 0.2, 'b': 0.6, 'tau': 50.0}
    """
    s = _Series(t, y)
    short = s.short("exponential")
    if short is not None:
        return short
    if s.flat:
        return s.flat_fit("exponential")
    _, _, rss = _profile(np.exp(-s.u[None, :] / _TAU_GRID[:, None]), s.y)
    i = int(np.argmin(rss))
    lo, hi = math.log(_TAU_GRID[max(i - 1, 0)]), math.log(_TAU_GRID[min(i + 1, _TAU_GRID.size - 1)])

    def profile_rss(log_tau: float) -> float:
        x = np.exp(-s.u / math.exp(log_tau))
        a, b = _line(x, s.y)
        r = a + b * x - s.y
        return float(r @ r)

    log_tau = math.log(_TAU_GRID[i])
    if hi > lo:
        res = optimize.minimize_scalar(profile_rss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
        if res.success and res.fun <= rss[i]:
            log_tau = float(res.x)
    x = np.exp(-s.u / math.exp(log_tau))
    a, b = _line(x, s.y)
    return s.fit("exponential", {"a": a, "b": b, "tau": math.exp(log_tau) * s.span}, a + b * x)


def fit_logistic(t: ArrayLike, y: ArrayLike) -> Fit:
    """Logistic ``y = a + b·expit((t - t0)/w)``, ``w > 0`` (4 parameters).

    ``t0`` is bounded to one window length either side of the observed window (so a midpoint
    outside the window can be reported as such) and ``w`` to ``1e-4 .. 10`` window lengths.
    Robust: the residual is profiled exactly in ``a, b`` over a grid of ``(t0, w)`` (``t0`` on
    every observed step, every midpoint between steps and an even grid; this finds step-like
    fits too), then a bounded least-squares search over ``(t0, log w)`` with ``a, b`` solved
    exactly at every step (variable projection) refines the best grid point; a failed refinement
    keeps the grid fit. ``b = 0`` is the constant, so the fit never does worse than
    :func:`fit_constant`; a flat series gets ``b = 0`` and NaN ``t0``, ``w``.

    >>> t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300, 400, 500.0])
    >>> f = fit_logistic(t, 0.8 - 0.6 * special.expit((t - 150) / 20))
    >>> {k: round(v, 3) for k, v in f.params.items()}
    {'a': 0.8, 'b': -0.6, 't0': 150.0, 'w': 20.0}
    """
    s = _Series(t, y)
    short = s.short("logistic")
    if short is not None:
        return short
    if s.flat:
        return s.flat_fit("logistic")
    us = np.unique(s.u)
    u0_grid = np.unique(np.concatenate([np.linspace(*_U0_BOUNDS, 31), us, (us[1:] + us[:-1]) / 2]))
    U0, W = (g.ravel() for g in np.meshgrid(u0_grid, _W_GRID, indexing="ij"))
    X = special.expit((s.u[None, :] - U0[:, None]) / W[:, None])
    _, _, rss = _profile(X, s.y)
    i = int(np.argmin(rss))

    def residuals(p: np.ndarray) -> np.ndarray:  # variable projection: a, b solved exactly for (u0, log w)
        x = special.expit((s.u - p[0]) / math.exp(p[1]))
        a, b = _line(x, s.y)
        return a + b * x - s.y

    best = (float(rss[i]), np.array([U0[i], math.log(W[i])]))
    note = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bounds = ([_U0_BOUNDS[0], math.log(_W_GRID[0])], [_U0_BOUNDS[1], math.log(_W_GRID[-1])])
            res = optimize.least_squares(residuals, best[1], bounds=bounds, x_scale=[0.05, 0.3], max_nfev=200)
            r = float((res.fun**2).sum())
            if np.isfinite(r) and r < best[0]:
                best = (r, res.x)
        except (ValueError, np.linalg.LinAlgError) as exc:  # the grid fit stands
            note = f"refinement failed ({type(exc).__name__}); grid fit kept"
    u0, w = float(best[1][0]), math.exp(float(best[1][1]))
    x = special.expit((s.u - u0) / w)
    a0, b0 = _line(x, s.y)
    params = {"a": a0, "b": b0, "t0": s.t_first + u0 * s.span, "w": w * s.span}
    return s.fit("logistic", params, a0 + b0 * x, note)


# --------------------------------------------------------------------------- transition test


@dataclass(frozen=True)
class TransitionTest:
    """Verdict of :func:`transition_test` with its numbers (see the module docstring for the rule).

    Per replica: ``winners`` (``constant``, ``exponential`` or ``logistic``), ``dbic_exp_logistic``
    (``BIC_exp - BIC_logistic``; > 0 favours the logistic), ``dbic_change`` (``BIC_constant`` minus
    the better non-constant BIC) and ``fits`` (constant, exponential, logistic). ``share_logistic``
    is the fraction of replicas with ``dbic_exp_logistic > dbic``, ``share_change`` the fraction
    that change; ``window`` is the observed ``(t_first, t_last)``, ``t0_window`` the open interval
    that ``t0`` must lie in (two steps on each side); ``t0``, ``w`` and ``total_change`` are
    medians over replicas of the logistic fits, intervals the ``level`` percentiles over replicas
    (NaN with one replica); ``replica_sd`` comes from ``sd_source`` (``replicas`` or
    ``residual``)."""

    verdict: str
    n_replicas: int
    window: tuple[float, float]
    t0_window: tuple[float, float]
    winners: tuple[str, ...]
    dbic_exp_logistic: tuple[float, ...]
    dbic_change: tuple[float, ...]
    share_logistic: float
    share_change: float
    t0: float
    t0_interval: tuple[float, float]
    t0_inside: bool
    w: float
    w_interval: tuple[float, float]
    total_change: float
    replica_sd: float
    sd_source: str
    dbic: float
    share: float
    n_sd: float
    level: float
    fits: tuple[tuple[Fit, Fit, Fit], ...] = field(repr=False)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (None for NaN; fits as lists of dicts).

        >>> t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100.0])
        >>> transition_test(t, np.zeros((2, t.size))).to_json()["verdict"]
        'none'
        """
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}


def _interval(x: np.ndarray, level: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def transition_test(
    t: ArrayLike, Y: ArrayLike, *, dbic: float = 10.0, share: float = 0.8, n_sd: float = 3.0, level: float = 0.95
) -> TransitionTest:
    """Sharp, gradual or no transition of one coordinate ``Y`` (replicas × steps) along steps ``t``.

    ``Y`` has shape ``(R, T)`` (a 1-d ``Y`` is one replica). Each replica is fitted with
    :func:`fit_constant`, :func:`fit_exponential` and :func:`fit_logistic`; the verdict follows
    SCIENCE.md with the readings in the module docstring: ``sharp`` (the logistic beats the
    exponential by ``ΔBIC > dbic`` in at least ``share`` of the replicas, median ``t0`` inside the
    window with two observed steps on each side, total change above ``n_sd`` replica SDs), else
    ``gradual`` (a strict majority of replicas has a non-constant model beating the constant by
    more than ``dbic``), else ``none``; ``undefined`` when no replica has 5 finite points. Replicas too short to fit
    are left out of the shares and named in ``note``.

    >>> t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300, 400, 500.0])
    >>> rng = np.random.default_rng(0)
    >>> Y = 0.8 - 0.6 * special.expit((t - 150) / 15) + rng.normal(0, 0.02, (3, t.size))
    >>> res = transition_test(t, Y)
    >>> res.verdict, res.winners, round(res.t0, -1)
    ('sharp', ('logistic', 'logistic', 'logistic'), 150.0)
    >>> transition_test(t, 0.2 + 0.6 * np.exp(-t / 40) + rng.normal(0, 0.02, (3, t.size))).verdict
    'gradual'
    """
    t_arr = np.asarray(t, dtype=float).ravel()
    Y_arr = np.asarray(Y, dtype=float)
    if Y_arr.ndim == 1:
        Y_arr = Y_arr[None, :]
    if Y_arr.ndim != 2 or Y_arr.shape[1] != t_arr.size:
        raise ValueError(f"Y must have shape (replicas, {t_arr.size}), got {np.shape(Y)}")
    R = Y_arr.shape[0]
    fits = tuple((fit_constant(t_arr, y), fit_exponential(t_arr, y), fit_logistic(t_arr, y)) for y in Y_arr)
    valid = np.array([math.isfinite(f[0].bic) for f in fits])
    steps = np.unique(t_arr[np.isfinite(t_arr)])
    window = (float(steps[0]), float(steps[-1])) if steps.size else (math.nan, math.nan)
    # "inside the window": at least two observed steps on each side of t0 (module docstring)
    t0_window = (float(steps[1]), float(steps[-2])) if steps.size >= 4 else (math.nan, math.nan)
    d_el = np.array([f[1].bic - f[2].bic for f in fits])
    d_change = np.array([f[0].bic - min(f[1].bic, f[2].bic) for f in fits])
    winners = tuple(
        "undefined" if not ok else ("exponential" if f[1].bic <= f[2].bic else "logistic") if dc > dbic else "constant"
        for f, ok, dc in zip(fits, valid, d_change)
    )
    n_valid = int(valid.sum())
    notes = [] if n_valid == R else [f"{R - n_valid} of {R} replicas too short to fit"]
    t0s = np.array([f[2].params["t0"] for f in fits])
    ws = np.array([f[2].params["w"] for f in fits])
    changes = np.array([_change(f[2], t_arr) for f in fits])
    replica_sd, sd_source = _replica_sd(Y_arr, fits, valid)
    t0 = _nanmedian(t0s)
    inside = bool(math.isfinite(t0) and t0_window[0] < t0 < t0_window[1])
    total = _nanmedian(changes)
    if n_valid == 0:
        verdict, share_log, share_change = "undefined", math.nan, math.nan
        notes.append(f"no replica has {MIN_POINTS} finite points")
    else:
        share_log = float((d_el[valid] > dbic).sum() / n_valid)
        share_change = float((d_change[valid] > dbic).sum() / n_valid)
        # 1e-12: share * R is computed in floating point (0.8 * 5 = 4.000000000000001)
        sharp = share_log >= share - 1e-12 and inside and total > n_sd * replica_sd
        verdict = "sharp" if sharp else "gradual" if share_change > 0.5 else "none"
    return TransitionTest(
        verdict=verdict,
        n_replicas=R,
        window=window,
        t0_window=t0_window,
        winners=winners,
        dbic_exp_logistic=tuple(d_el.tolist()),
        dbic_change=tuple(d_change.tolist()),
        share_logistic=share_log,
        share_change=share_change,
        t0=t0,
        t0_interval=_interval(t0s, level),
        t0_inside=inside,
        w=_nanmedian(ws),
        w_interval=_interval(ws, level),
        total_change=total,
        replica_sd=replica_sd,
        sd_source=sd_source,
        dbic=dbic,
        share=share,
        n_sd=n_sd,
        level=level,
        fits=fits,
        note="; ".join(notes),
    )


def _change(f: Fit, t: np.ndarray) -> float:
    """``|fitted value at the latest step - fitted value at the earliest|`` (steps need not be sorted)."""
    fitted = np.asarray(f.fitted)
    ok = np.isfinite(fitted) & np.isfinite(t)
    if not ok.any():
        return math.nan
    return float(abs(fitted[ok][np.argmax(t[ok])] - fitted[ok][np.argmin(t[ok])]))


def _replica_sd(Y: np.ndarray, fits: tuple[tuple[Fit, Fit, Fit], ...], valid: np.ndarray) -> tuple[float, str]:
    if Y.shape[0] >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # steps with < 2 finite replicas give NaN
            var = np.nanvar(Y, axis=0, ddof=1)
        var = var[np.isfinite(var)]
        return (float(np.sqrt(var.mean())) if var.size else math.nan), "replicas"
    if not valid[0]:
        return math.nan, "residual"
    best = min(fits[0], key=lambda f: f.bic)
    return float(math.sqrt(best.rss / (best.n - best.n_params))), "residual"


def susceptibility(Y: ArrayLike) -> np.ndarray:
    """``χ(t)``: the variance of the coordinate across replicas at each step (``ddof=1``).

    ``Y`` has shape ``(R, T)``; NaN everywhere when ``R < 3`` (SCIENCE.md: χ needs at least 3
    replicas), and NaN at a step where a replica is NaN (numpy's rule: a missing replica is not
    silently dropped from a variance of three).

    >>> susceptibility([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    array([1., 0.])
    >>> susceptibility([[0.0, 1.0], [1.0, 1.0]])
    array([nan, nan])
    """
    A = np.asarray(Y, dtype=float)
    if A.ndim != 2:
        raise ValueError(f"Y must have shape (replicas, steps), got {A.shape}")
    if A.shape[0] < 3:
        return np.full(A.shape[1], math.nan)
    return A.var(axis=0, ddof=1)


# --------------------------------------------------------------------------- sweeps


def mixture_m(d_A: ArrayLike, d_B: ArrayLike, d_AB: ArrayLike) -> np.ndarray | float:
    """Mixture order parameter ``m = (d_A - d_B) / d(f̄_A, f̄_B)``, clipped to ``[-1, 1]``.

    ``d_A``, ``d_B`` are the JS distances of the end state to the base families A and B, ``d_AB``
    the distance between them; ``m = -1`` at A, ``+1`` at B. ``sqrt(JSD)`` is a metric, so the
    triangle inequality gives ``|d_A - d_B| <= d_AB`` and ``m`` is in ``[-1, 1]`` whenever the three
    distances come from the same distributions; a value outside can only come from rounding or
    from distances estimated separately, and clipping puts it back on the scale SCIENCE.md defines
    (it moves no value inside the range). ``d_AB = 0`` (A and B the same) gives NaN. Scalars give a
    float, arrays an array (broadcast).

    >>> round(mixture_m(0.1, 0.3, 0.4), 3)
    -0.5
    >>> mixture_m([0.0, 0.5], [0.4, 0.0], 0.4)
    array([-1.,  1.])
    """
    dA, dB, dAB = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (d_A, d_B, d_AB)))
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(dAB > 0, (dA - dB) / np.where(dAB > 0, dAB, 1.0), math.nan)
    m = np.clip(m, -1.0, 1.0)
    return float(m) if m.ndim == 0 else m


def _distribution(f: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(f, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < 0) or x.sum() <= 0:
        raise ValueError(f"{name} must be a non-negative vector with positive sum")
    return x / x.sum()


def fitting_null(lams: ArrayLike, f_A: ArrayLike, f_B: ArrayLike) -> np.ndarray:
    """Fitting null ``m_lin(λ)``: :func:`mixture_m` of the SFT data mixture ``(1-λ)·f̄_A + λ·f̄_B`` itself.

    What a model that only fits its data would show. Distances are JS distances ``sqrt(JSD)`` in
    nats; ``f_A`` and ``f_B`` are renormalised. ``f_A = f_B`` gives NaN.

    >>> np.round(fitting_null([0.0, 0.5, 1.0], [0.9, 0.1], [0.1, 0.9]), 3)
    array([-1.,  0.,  1.])
    """
    lam = np.asarray(lams, dtype=float).ravel()
    A, B = _distribution(f_A, "f_A"), _distribution(f_B, "f_B")
    if A.size != B.size:
        raise ValueError(f"f_A has {A.size} options, f_B has {B.size}")
    mix = (1 - lam)[:, None] * A[None, :] + lam[:, None] * B[None, :]

    def d(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.sqrt(_js_rows(p, q))

    return np.asarray(mixture_m(d(mix, A), d(mix, B), float(d(A, B))))


def relaxation_null(x: ArrayLike, m_start: float, m_end: float, m_median: ArrayLike) -> np.ndarray:
    """Fitting null of a training-amount control (SFT steps or learning rate, ``x > 0``):
    ``m(x) = m_end + (m_start - m_end)·exp(-c·x)``, the curve of a model that relaxes from where it
    starts (``m_start``, the untrained model) to its data (``m_end``, the data's own ``m``) at a
    constant rate, with the one rate ``c`` that fits the replica-median curve best (least squares
    on a log grid of rates; NaN points skipped). Near an optimum gradient descent is such a linear
    relaxation, and its amount grows as steps × learning rate, so one null serves both controls.

    Against ``log x`` this curve has one fixed shape whatever ``c`` is (``c`` only moves it): its
    steepest slope is ``|m_start - m_end|·ln 10 / e`` per decade. ``Σ`` against it (slopes taken
    in ``log10 x``, see :func:`sweep_sharpness`) therefore measures the shape of the change, not
    its rate: about 1 for a relaxation, large for a jump that a few more steps set off.

    >>> x = np.geomspace(1, 1000, 7)
    >>> truth = 1 - 2 * np.exp(-x / 30)
    >>> np.allclose(relaxation_null(x, -1.0, 1.0, truth), truth, atol=0.02)
    True
    """
    x = np.asarray(x, dtype=float).ravel()
    med = np.asarray(m_median, dtype=float).ravel()
    if x.size != med.size or not np.all(x > 0):
        raise ValueError("need x > 0 and one median value per x")

    def curve(c: np.ndarray) -> np.ndarray:
        return m_end + (m_start - m_end) * np.exp(-np.outer(c, x))

    if not (math.isfinite(m_start) and math.isfinite(m_end)):
        return np.full(x.size, math.nan)
    ok = np.isfinite(med)
    rates = np.geomspace(1e-3 / x.max(), 1e3 / x.min(), 2001)
    if not ok.any():
        return curve(np.array([1.0 / np.sqrt(x.min() * x.max())]))[0]
    sse = ((curve(rates)[:, ok] - med[ok]) ** 2).sum(axis=1)
    return curve(rates[[int(np.argmin(sse))]])[0]


@dataclass(frozen=True)
class SweepSharpness:
    """Sharpness of a sweep (:func:`sweep_sharpness`).

    ``m_median`` is the replica-median curve on ``lambdas``; ``max_slope`` its largest
    ``|Δm/Δλ|``, ``max_slope_null`` the null's; ``sigma = max_slope / max_slope_null``;
    ``lambda_c`` the midpoint of the steepest interval ``steep_interval``; intervals are
    bootstrap percentiles over replicas (NaN with one replica)."""

    lambdas: tuple[float, ...]
    m_median: tuple[float, ...]
    max_slope: float
    max_slope_null: float
    sigma: float
    sigma_interval: tuple[float, float]
    lambda_c: float
    lambda_c_interval: tuple[float, float]
    steep_interval: tuple[float, float]
    n_replicas: int
    n_boot: int
    level: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (None for NaN).

        >>> lam = np.linspace(0, 1, 5)
        >>> sweep_sharpness(lam, [2 * lam - 1], 2 * lam - 1).to_json()["sigma_interval"]
        [None, None]
        """
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}


def _steepest(lam: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``|Δm/Δλ|`` of each curve (rows) and the index of its interval (-1 when undefined)."""
    slopes = np.abs(np.diff(curves, axis=-1) / np.diff(lam))
    finite = np.isfinite(slopes)
    i = np.argmax(np.where(finite, slopes, -np.inf), axis=-1)
    best = np.take_along_axis(slopes, i[..., None], axis=-1)[..., 0]
    has = finite.any(axis=-1)
    return np.where(has, best, math.nan), np.where(has, i, -1)


def sweep_sharpness(
    lams: ArrayLike, M: ArrayLike, m_lin: ArrayLike, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> SweepSharpness:
    """``Σ = max|dm/dλ| / max|dm_lin/dλ|`` and the steepest ``λ_c`` of a sweep, with replica intervals.

    ``lams`` is the λ grid (strictly increasing), ``M`` the end states ``m`` with shape
    ``(R, L)`` (replicas × grid; NaN for a missing run), ``m_lin`` the fitting null on the same
    grid (:func:`fitting_null`). Slopes are finite differences between neighbouring grid points.
    The point estimate uses the **replica-median curve**: the maximum of a noisy curve's slopes is
    biased upwards, and the median across replicas takes out most of the noise (and any one
    outlying run) before the maximum is taken. ``λ_c`` is the midpoint of the steepest interval.
    Intervals: ``n_boot`` resamples of the replicas with replacement (``seed``), each giving a
    median curve, its Σ and λ_c; ``level`` percentile intervals; NaN with one replica.

    >>> lam = np.linspace(0, 1, 11)
    >>> m_lin = 2 * lam - 1
    >>> M = np.where(lam < 0.5, -1.0, 1.0) + np.random.default_rng(0).normal(0, 0.05, (5, 11))
    >>> s = sweep_sharpness(lam, M, m_lin, n_boot=200)
    >>> round(s.sigma), s.lambda_c, s.sigma_interval[0] > 2
    (10, 0.45, True)
    """
    lam = np.asarray(lams, dtype=float).ravel()
    A = np.asarray(M, dtype=float)
    if A.ndim == 1:
        A = A[None, :]
    null = np.asarray(m_lin, dtype=float).ravel()
    if A.ndim != 2 or A.shape[1] != lam.size or null.size != lam.size:
        raise ValueError(f"need M of shape (replicas, {lam.size}) and m_lin of {lam.size} values")
    if lam.size < 2 or not np.all(np.diff(lam) > 0):
        raise ValueError("lams must be strictly increasing with at least 2 points")
    R = A.shape[0]
    notes = []
    null_slope = float(_steepest(lam, null[None, :])[0][0])
    if not null_slope > 0:
        notes.append("the fitting null is flat or undefined: Σ undefined")
    mids = (lam[1:] + lam[:-1]) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN medians
        med = np.nanmedian(A, axis=0)
        slopes, idx = _steepest(lam, med[None, :])
        rng = np.random.default_rng(seed)
        boot = np.nanmedian(A[rng.integers(0, R, size=(n_boot, R))], axis=1)
    slope, i = float(slopes[0]), int(idx[0])
    b_slope, b_i = _steepest(lam, boot)

    def ratio(s: np.ndarray | float) -> np.ndarray | float:
        return s / null_slope if null_slope > 0 else s * math.nan

    if R >= 2:
        sig_iv = _interval(np.asarray(ratio(b_slope), dtype=float), level)
        lc_iv = _interval(np.where(b_i >= 0, mids[np.maximum(b_i, 0)], math.nan), level)
    else:
        sig_iv = lc_iv = (math.nan, math.nan)
        notes.append("one replica: no replica interval")
    return SweepSharpness(
        lambdas=tuple(lam.tolist()),
        m_median=tuple(med.tolist()),
        max_slope=slope,
        max_slope_null=null_slope,
        sigma=float(ratio(slope)),
        sigma_interval=sig_iv,
        lambda_c=float(mids[i]) if i >= 0 else math.nan,
        lambda_c_interval=lc_iv,
        steep_interval=(float(lam[i]), float(lam[i + 1])) if i >= 0 else (math.nan, math.nan),
        n_replicas=R,
        n_boot=n_boot,
        level=level,
        note="; ".join(notes),
    )


def dip_test(x: ArrayLike) -> tuple[float, float]:
    """Hartigan's dip test of unimodality: ``(dip, p)`` for the finite values of ``x``.

    Use it on the replicas' ``m`` at one ``λ`` near ``λ_c`` (pooling both ends of the steepest
    interval would make any steep curve look bimodal). The p-value is the ``diptest`` package's,
    interpolated from its table of the uniform null (the least favourable unimodal law, so the test
    is conservative). Fewer than 4 finite values give NaNs.

    >>> rng = np.random.default_rng(0)
    >>> dip_test(np.concatenate([rng.normal(-1, 0.1, 25), rng.normal(1, 0.1, 25)]))[1] < 0.01
    True
    """
    import diptest  # optional at import time: only sweeps need it

    v = np.asarray(x, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 4:
        return math.nan, math.nan
    dip, p = diptest.diptest(v)
    return float(dip), float(p)


MAX_EXACT_RELABELLINGS = 2000  # as SCIENCE.md's phi_p: enumerate exactly up to this many


def hysteresis_test(end_from_A: ArrayLike, end_from_B: ArrayLike) -> tuple[float, float]:
    """Hysteresis at ``λ_c``: do runs continued from A-trained and from B-trained checkpoints end apart?

    Inputs: the end states ``m`` of the replicas of each arm (NaNs dropped). Returns
    ``(mean_A - mean_B, p)``, two-sided. With at most 2,000 distinct relabellings of the pooled
    values into two arms of the same sizes, ``p`` is the exact permutation p-value of the
    difference of means (every relabelling enumerated, the observed one included, so ``p > 0``):
    with a handful of replicas this is the only test whose size is exact, and it is the rule
    SCIENCE.md uses for ``phi_p``. With more, the Mann–Whitney U test (scipy's exact or asymptotic
    method, as scipy chooses): rank-based, distribution-free, deterministic (no seed), and
    insensitive to a run stuck far out. The statistic is the difference of means in both cases, so
    it reads in units of ``m``. Fewer than 1 value in an arm, or no variation at all, gives NaN p.
    5 replicas per arm give 252 relabellings and a smallest p of 2/252 ≈ 0.008, below 0.01;
    4 per arm cannot reach 0.01 (2/70).

    >>> diff, p = hysteresis_test([-0.9, -0.8, -0.95, -0.85, -0.9], [0.9, 0.8, 0.85, 0.95, 0.9])
    >>> round(diff, 3), round(p, 4)
    (-1.76, 0.0079)
    """
    a = np.asarray(end_from_A, dtype=float).ravel()
    b = np.asarray(end_from_B, dtype=float).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    diff = float(a.mean() - b.mean())
    pooled = np.concatenate([a, b])
    if np.ptp(pooled) == 0:
        return diff, math.nan
    n, na = pooled.size, a.size
    if math.comb(n, na) <= MAX_EXACT_RELABELLINGS:
        total = pooled.sum()
        sums = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(n), na)])
        diffs = sums / na - (total - sums) / (n - na)
        # relative tolerance: relabellings with the same |difference| must count as "as extreme"
        p = float(np.mean(np.abs(diffs) >= abs(diff) - 1e-12 * max(1.0, abs(diff))))
    else:
        p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return diff, p


def sweep_verdict(sharpness: SweepSharpness, dip_p: float, hysteresis_p: float, alpha: float = 0.01) -> str:
    """``sharp`` when Σ's lower bound is above 2 and bimodality or hysteresis is significant, else ``gradual``.

    ``dip_p`` and ``hysteresis_p`` are the p-values of :func:`dip_test` and
    :func:`hysteresis_test`; pass NaN for one that was not measured (NaN is never below ``alpha``).
    An undefined lower bound (one replica, a flat null) gives ``gradual``.

    >>> lam = np.linspace(0, 1, 11)
    >>> M = np.where(lam < 0.5, -1.0, 1.0) + np.random.default_rng(0).normal(0, 0.05, (5, 11))
    >>> s = sweep_sharpness(lam, M, 2 * lam - 1, n_boot=200)
    >>> sweep_verdict(s, math.nan, 0.008), sweep_verdict(s, 0.3, 0.2)
    ('sharp', 'gradual')
    """
    lo = sharpness.sigma_interval[0]
    significant = any(p < alpha for p in (dip_p, hysteresis_p) if math.isfinite(p))
    return "sharp" if math.isfinite(lo) and lo > 2 and significant else "gradual"
