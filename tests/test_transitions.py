"""crystallab.transitions on planted data: the rates quoted in each test are measured with its fixed seed.

Steps are the tracker's log-spaced schedule (0, 1, 2, 4, ..., 256 plus every 100 up to 500: 15 steps),
3 replicas, Gaussian noise of SD 0.05 on a coordinate of order 1 (a JS distance or a mass).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from scipy import special
from scipy.spatial.distance import jensenshannon

from crystallab import transitions as T

STEPS = np.unique(np.r_[0, 2.0 ** np.arange(9), np.arange(100, 501, 100)])
SIGMA = 0.05


def _verdicts(curve: np.ndarray, n: int, seed: int, sigma: float = SIGMA, R: int = 3) -> Counter[str]:
    rng = np.random.default_rng(seed)
    return Counter(T.transition_test(STEPS, curve + rng.normal(0, sigma, (R, STEPS.size))).verdict for _ in range(n))


# --------------------------------------------------------------------------- single fits


def test_steps_are_the_tracker_schedule() -> None:
    assert STEPS.size == 15 and STEPS[:4].tolist() == [0, 1, 2, 4] and STEPS[-1] == 500


def test_fits_recover_noise_free_parameters() -> None:
    y_exp = 0.3 + 0.5 * np.exp(-(STEPS - 0) / 60)
    f = T.fit_exponential(STEPS, y_exp)
    assert f.params == pytest.approx({"a": 0.3, "b": 0.5, "tau": 60.0}, rel=1e-4)
    y_log = 0.1 + 0.7 * special.expit((STEPS - 220) / 25)
    g = T.fit_logistic(STEPS, y_log)
    assert g.params == pytest.approx({"a": 0.1, "b": 0.7, "t0": 220.0, "w": 25.0}, rel=1e-4)
    # a perfect fit is floored in the BIC (no -inf) and beats the constant by far
    c = T.fit_constant(STEPS, y_log)
    assert math.isfinite(g.bic) and c.bic - g.bic > 100
    assert np.allclose(g.fitted, y_log, atol=1e-6)


def test_bic_is_gaussian_formula() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, STEPS.size)
    for fit in (T.fit_constant(STEPS, y), T.fit_exponential(STEPS, y), T.fit_logistic(STEPS, y)):
        n, k = STEPS.size, fit.n_params
        assert fit.bic == pytest.approx(n * math.log(fit.rss / n) + k * math.log(n))
        assert fit.rss == pytest.approx(float(((np.asarray(fit.fitted) - y) ** 2).sum()))
    # the two non-constant models nest the constant (b = 0), so neither fits worse
    c = T.fit_constant(STEPS, y)
    assert T.fit_exponential(STEPS, y).rss <= c.rss + 1e-12
    assert T.fit_logistic(STEPS, y).rss <= c.rss + 1e-12


@pytest.mark.parametrize("fit", [T.fit_constant, T.fit_exponential, T.fit_logistic])
def test_fits_never_raise_on_degenerate_series(fit: Callable[..., T.Fit]) -> None:
    short = fit([0, 1, 2, 4], [1.0, 0.5, 0.2, 0.1])
    assert math.isnan(short.bic) and all(math.isnan(v) for v in short.params.values()) and "at least 5" in short.note
    flat = fit(STEPS, np.full(STEPS.size, 0.4))
    assert math.isfinite(flat.bic) and flat.rss == pytest.approx(0.0, abs=1e-20) and "flat" in flat.note
    y = 0.5 + 0.1 * np.exp(-STEPS / 30)
    y[3] = math.nan
    holed = fit(STEPS, y)
    assert holed.n == STEPS.size - 1 and math.isnan(holed.fitted[3]) and "non-finite" in holed.note
    same_t = fit(np.zeros(6), np.arange(6.0))
    assert math.isfinite(same_t.bic) and "do not vary" in same_t.note


def test_flat_series_prefers_the_constant() -> None:
    fits = [f(STEPS, np.full(STEPS.size, 0.3)) for f in (T.fit_constant, T.fit_exponential, T.fit_logistic)]
    assert min(fits, key=lambda f: f.bic).model == "constant"
    assert math.isnan(fits[1].params["tau"]) and math.isnan(fits[2].params["t0"])  # no change: undefined


# --------------------------------------------------------------------------- transition test


def test_pure_noise_is_none() -> None:
    # measured: none in 200/200 (the literal "lowest BIC wins" reading: a change in about 4 % of
    # 3-replica noise series and 14 % of single replicas; see the module docstring)
    counts = _verdicts(np.full(STEPS.size, 0.5), 200, seed=1)
    assert counts["none"] >= 190, counts


def test_literal_lowest_bic_rule_is_what_fails_on_noise() -> None:
    # why the margin over the constant: without it one noise replica in ~7 picks a non-constant model
    rng = np.random.default_rng(2)
    picks = Counter()
    for _ in range(100):
        y = 0.5 + rng.normal(0, SIGMA, STEPS.size)
        fits = (T.fit_constant(STEPS, y), T.fit_exponential(STEPS, y), T.fit_logistic(STEPS, y))
        picks[min(fits, key=lambda f: f.bic).model] += 1
    assert picks["constant"] <= 95, picks  # measured: 85/100 constant


def test_exponential_relaxation_is_gradual() -> None:
    # measured: gradual in 60/60 (tau = 40, amplitude 0.6, noise SD 0.05)
    counts = _verdicts(0.2 + 0.6 * np.exp(-STEPS / 40), 60, seed=3)
    assert counts["gradual"] >= 54, counts


def test_logistic_inside_window_is_sharp() -> None:
    # measured: sharp in 58/60 (t0 = 250, w = 20, amplitude 0.6, noise SD 0.05)
    counts = _verdicts(0.8 - 0.6 * special.expit((STEPS - 250) / 20), 60, seed=4)
    assert counts["sharp"] >= 54, counts


def test_sharp_reports_midpoint_and_width_with_intervals() -> None:
    rng = np.random.default_rng(5)
    Y = 0.8 - 0.6 * special.expit((STEPS - 250) / 20) + rng.normal(0, SIGMA, (5, STEPS.size))
    res = T.transition_test(STEPS, Y)
    assert res.verdict == "sharp" and res.winners == ("logistic",) * 5
    assert res.t0_interval[0] <= res.t0 <= res.t0_interval[1] and abs(res.t0 - 250) < 20
    assert res.w_interval[0] <= res.w <= res.w_interval[1]
    assert res.total_change == pytest.approx(0.6, abs=0.1)
    assert res.sd_source == "replicas" and res.replica_sd == pytest.approx(SIGMA, rel=0.25)
    json.dumps(res.to_json(), allow_nan=False)


@pytest.mark.parametrize("t0,w", [(700, 100), (600, 40)])
def test_logistic_midpoint_after_window_is_not_sharp(t0: float, w: float) -> None:
    # The window ends at 500 and only the onset is seen; the logistic beats the exponential
    # (accelerating growth), so it is the midpoint clause that must refuse. Measured: 0/25 sharp in
    # both; the strict reading t_first < t0 < t_last would have called 7/25 and 14/25 sharp.
    rng = np.random.default_rng(6)
    results = [
        T.transition_test(STEPS, 0.2 + 0.6 * special.expit((STEPS - t0) / w) + rng.normal(0, 0.005, (3, STEPS.size)))
        for _ in range(25)
    ]
    assert sum(r.verdict == "sharp" for r in results) == 0
    assert np.mean([r.share_logistic for r in results]) > 0.8  # the clause tested is the midpoint's
    strict = sum(
        r.share_logistic >= 0.8 and r.total_change > 3 * r.replica_sd and r.window[0] < r.t0 < r.window[1]
        for r in results
    )
    assert strict > 0  # the series do test the clause (measured 7/25, 14/25)


def test_logistic_midpoint_before_window_is_not_sharp() -> None:
    # midpoint at -30: the window shows the tail of the drop, an exponential-like relaxation; measured 20/20 gradual
    counts = _verdicts(0.8 - 0.6 * special.expit((STEPS + 30) / 20), 20, seed=7, sigma=0.01)
    assert counts["sharp"] == 0 and counts["gradual"] >= 18, counts


def test_single_replica_uses_residual_sd() -> None:
    rng = np.random.default_rng(8)
    y = 0.8 - 0.6 * special.expit((STEPS - 250) / 20) + rng.normal(0, SIGMA, STEPS.size)
    res = T.transition_test(STEPS, y)
    assert res.n_replicas == 1 and res.sd_source == "residual" and res.verdict == "sharp"
    assert res.replica_sd == pytest.approx(SIGMA, rel=0.5)
    assert all(math.isnan(v) for v in (*res.t0_interval, *res.w_interval))


def test_too_short_is_undefined_and_short_replicas_are_left_out() -> None:
    t = np.array([0, 1, 2, 4.0])
    assert T.transition_test(t, np.ones((3, 4))).verdict == "undefined"
    rng = np.random.default_rng(9)
    Y = 0.2 + 0.6 * np.exp(-STEPS / 40) + rng.normal(0, SIGMA, (4, STEPS.size))
    Y[3, 2:] = math.nan
    res = T.transition_test(STEPS, Y)
    assert res.verdict == "gradual" and res.winners[3] == "undefined" and "1 of 4" in res.note


def test_transition_test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        T.transition_test(STEPS, np.zeros((3, STEPS.size + 1)))


def test_susceptibility_is_replica_variance() -> None:
    rng = np.random.default_rng(10)
    Y = rng.normal(0, 1, (4, 7))
    assert np.allclose(T.susceptibility(Y), np.var(Y, axis=0, ddof=1), rtol=1e-12, atol=0)
    assert np.all(np.isnan(T.susceptibility(Y[:2]))) and T.susceptibility(Y[:2]).shape == (7,)


# --------------------------------------------------------------------------- sweeps

LAMS = np.linspace(0, 1, 11)
F_A = np.array([0.6, 0.2, 0.1, 0.05, 0.05])
F_B = F_A[::-1]


def test_mixture_m_bounds_and_undefined() -> None:
    assert T.mixture_m(0.0, 0.4, 0.4) == -1.0 and T.mixture_m(0.4, 0.0, 0.4) == 1.0
    assert T.mixture_m(0.0, 0.5, 0.4) == -1.0  # overshoot from separately estimated distances is clipped
    assert math.isnan(T.mixture_m(0.1, 0.1, 0.0))
    assert T.mixture_m([0.1, 0.3], [0.3, 0.1], 0.4) == pytest.approx([-0.5, 0.5])


def test_fitting_null_matches_scipy_js_distance() -> None:
    m_lin = T.fitting_null(LAMS, F_A, F_B)
    mix = (1 - LAMS)[:, None] * F_A + LAMS[:, None] * F_B
    d_A = np.array([jensenshannon(q, F_A) for q in mix])
    d_B = np.array([jensenshannon(q, F_B) for q in mix])
    assert np.allclose(m_lin, (d_A - d_B) / jensenshannon(F_A, F_B), atol=1e-7)
    assert m_lin[0] == pytest.approx(-1) and m_lin[-1] == pytest.approx(1) and np.all(np.diff(m_lin) > 0)
    assert np.all(np.isnan(T.fitting_null(LAMS, F_A, F_A)))


def _planted_step(R: int, seed: int) -> np.ndarray:
    """End states of a step at λ ≈ 0.5 (replica critical points jittered by SD 0.03), noise SD 0.05."""
    rng = np.random.default_rng(seed)
    lam_c = 0.5 + rng.normal(0, 0.03, (R, 1))
    return np.where(LAMS < lam_c, -0.9, 0.9) + rng.normal(0, SIGMA, (R, LAMS.size))


def test_step_response_with_hysteresis_is_sharp() -> None:
    m_lin = T.fitting_null(LAMS, F_A, F_B)
    s = T.sweep_sharpness(LAMS, _planted_step(5, seed=11), m_lin)
    assert s.sigma_interval[0] > 2 and 0.4 <= s.lambda_c <= 0.6  # measured: Σ 6.9, interval (6.7, 7.6), λ_c 0.55
    rng = np.random.default_rng(12)  # continued at λ_c, each run stays where it came from
    _, p_h = T.hysteresis_test(rng.normal(-0.8, 0.1, 5), rng.normal(0.8, 0.1, 5))
    assert p_h < 0.01
    assert T.sweep_verdict(s, math.nan, p_h) == "sharp"
    json.dumps(s.to_json(), allow_nan=False)


def test_step_response_with_bimodal_replicas_is_sharp() -> None:
    m_lin = T.fitting_null(LAMS, F_A, F_B)
    M = _planted_step(50, seed=13)
    s = T.sweep_sharpness(LAMS, M, m_lin)
    assert s.sigma_interval[0] > 2  # measured: Σ 7.0, interval (3.8, 7.1)
    j = int(np.argmin(np.abs(LAMS - 0.5)))  # the grid point at the replicas' critical points
    _, p_dip = T.dip_test(M[:, j])
    assert p_dip < 0.01
    assert T.sweep_verdict(s, p_dip, math.nan) == "sharp"


def test_linear_response_is_gradual() -> None:
    m_lin = T.fitting_null(LAMS, F_A, F_B)
    rng = np.random.default_rng(14)
    M = m_lin + rng.normal(0, SIGMA, (5, LAMS.size))
    s = T.sweep_sharpness(LAMS, M, m_lin)
    assert 0.7 < s.sigma < 1.6 and s.sigma_interval[0] < 2  # measured: Σ 1.02, interval (1.02, 1.71)
    p_dip = T.dip_test(M[:, 5])[1]
    _, p_h = T.hysteresis_test(rng.normal(0, 0.1, 5), rng.normal(0, 0.1, 5))
    assert T.sweep_verdict(s, p_dip, p_h) == "gradual"
    # even a significant p cannot make a crossover with Σ ≈ 1 sharp
    assert T.sweep_verdict(s, 1e-6, 1e-6) == "gradual"


def test_sweep_sharpness_one_replica_and_bad_grid() -> None:
    m_lin = T.fitting_null(LAMS, F_A, F_B)
    s = T.sweep_sharpness(LAMS, m_lin, m_lin)
    assert s.sigma == pytest.approx(1.0) and all(math.isnan(v) for v in s.sigma_interval)
    assert T.sweep_verdict(s, 0.0, 0.0) == "gradual"
    with pytest.raises(ValueError):
        T.sweep_sharpness(LAMS[::-1], m_lin[None, :], m_lin)


def test_dip_test_power_and_size() -> None:
    rng = np.random.default_rng(15)
    bimodal = [T.dip_test(np.r_[rng.normal(-3, 1, 25), rng.normal(3, 1, 25)])[1] for _ in range(100)]
    unimodal = [T.dip_test(rng.normal(0, 1, 50))[1] for _ in range(100)]
    assert sum(p < 0.05 for p in bimodal) >= 90  # measured: 100/100 (power 0.94 at ±2.5, 0.52 at ±2)
    assert sum(p < 0.05 for p in unimodal) <= 10  # measured: 0/100 (the table's null is conservative)
    assert all(math.isnan(v) for v in T.dip_test([0.1, 0.2, math.nan]))


def test_hysteresis_exact_and_rank_tests() -> None:
    rng = np.random.default_rng(16)
    diff, p = T.hysteresis_test(rng.normal(-0.8, 0.1, 5), rng.normal(0.8, 0.1, 5))  # 252 relabellings: exact
    assert diff < -1 and p == pytest.approx(2 / 252)
    diff, p = T.hysteresis_test(rng.normal(-0.8, 0.1, 10), rng.normal(0.8, 0.1, 10))  # 184,756: Mann-Whitney
    assert diff < -1 and p < 1e-3  # scipy: normal approximation above 8 per arm
    exact = [T.hysteresis_test(rng.normal(0, 0.1, 5), rng.normal(0, 0.1, 5))[1] for _ in range(200)]
    rank = [T.hysteresis_test(rng.normal(0, 0.1, 10), rng.normal(0, 0.1, 10))[1] for _ in range(200)]
    assert sum(p > 0.05 for p in exact) >= 180 and sum(p > 0.05 for p in rank) >= 180  # measured: 184/200, 191/200
    assert math.isnan(T.hysteresis_test([0.5, 0.5], [0.5, 0.5])[1])
    assert math.isnan(T.hysteresis_test([], [0.5])[1])


def test_transition_width_step_linear_and_size_trend() -> None:
    from crystallab.analysis.sweeps import CANNOT_TELL, NARROWS, WIDE, size_trend, transition_width

    m_lin = T.fitting_null(LAMS, F_A, F_B)
    rng = np.random.default_rng(17)
    step = transition_width(LAMS, _planted_step(5, seed=18), n_boot=300)
    linear = transition_width(LAMS, m_lin + rng.normal(0, SIGMA, (5, LAMS.size)), n_boot=300)
    assert step[0] < 0.2 and step[2] < linear[1]  # measured: step ~0.1 (the grid spacing), linear ~0.6
    assert linear[1] <= linear[0] <= linear[2]
    assert all(math.isnan(v) for v in transition_width(LAMS, m_lin[None, :])[1:])  # one replica: no interval
    assert math.isnan(transition_width(LAMS, np.zeros((3, LAMS.size)))[0])  # flat: no steepest slope
    assert size_trend({32: list(linear), 128: list(step)})[0] == NARROWS
    assert size_trend({32: list(step), 128: list(linear)})[0] == WIDE
    assert size_trend({32: [0.6, 0.4, 0.8], 128: [0.55, 0.45, 0.7]})[0] == CANNOT_TELL
    assert size_trend({32: [None, None, None], 128: [0.5, 0.4, 0.6]})[0] == CANNOT_TELL


AMOUNTS = np.geomspace(5, 300, 11)  # a training-amount control (SFT steps) on a log grid


def test_relaxation_null_is_gradual_and_a_jump_is_sharp() -> None:
    """The steps / learning-rate sweeps' null: a relaxation at a constant rate from the base's m to
    the data's. A planted relaxation (any rate) is gradual against it; a planted jump in log steps
    (every replica snapping from A to B within one grid step, at jittered points) is sharp."""
    rng = np.random.default_rng(21)
    x = np.log10(AMOUNTS)
    for tau in (20.0, 60.0):  # where the relaxation happens must not matter
        truth = 1.0 - 1.9 * np.exp(-AMOUNTS / tau)
        M = truth + rng.normal(0, SIGMA, (5, AMOUNTS.size))
        null = T.relaxation_null(AMOUNTS, -0.9, 1.0, np.nanmedian(M, axis=0))
        assert np.allclose(null, truth, atol=0.05)
        s = T.sweep_sharpness(x, M, null)
        # measured: Σ 1.34 and 1.26, intervals (1.05, 1.56) and (1.14, 1.30)
        assert s.sigma_interval[0] < 2 and T.sweep_verdict(s, 1e-6, math.nan) == "gradual"
    jump_at = np.log10(60) + rng.normal(0, 0.03, (5, 1))
    M = np.where(x < jump_at, -0.9, 0.95) + rng.normal(0, SIGMA, (5, AMOUNTS.size))
    null = T.relaxation_null(AMOUNTS, -0.9, 1.0, np.nanmedian(M, axis=0))
    s = T.sweep_sharpness(x, M, null)
    assert s.sigma_interval[0] > 2 and abs(s.lambda_c - np.log10(60)) < 0.2  # measured: Σ 6.3 (6.2, 6.5)
    # the null's steepest slope per decade is fixed by its amplitude: |Δm|·ln 10 / e, whatever the rate
    fine = np.geomspace(1, 1e4, 2001)
    for tau in (10.0, 300.0):
        curve = T.relaxation_null(fine, -1.0, 1.0, 1.0 - 2.0 * np.exp(-fine / tau))
        slope = np.max(np.abs(np.diff(curve) / np.diff(np.log10(fine))))
        assert slope == pytest.approx(2.0 * math.log(10) / math.e, rel=0.01)


def test_relaxation_null_undefined_and_bad_input() -> None:
    assert np.all(np.isnan(T.relaxation_null(AMOUNTS, math.nan, 1.0, np.zeros(AMOUNTS.size))))
    flat = T.relaxation_null(AMOUNTS, -1.0, 1.0, np.full(AMOUNTS.size, np.nan))  # nothing to fit: a mid-grid rate
    assert np.all(np.isfinite(flat)) and flat[0] < flat[-1]
    with pytest.raises(ValueError):
        T.relaxation_null(-AMOUNTS, -1.0, 1.0, np.zeros(AMOUNTS.size))
