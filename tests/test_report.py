"""`crystallab report DIR`: a synthetic 3-checkpoint ladder (base liquid, sft crystal, rl settled)
rendered to one self-contained HTML page, checked as text and in headless Chromium.

The analysis dict is built here in the docs/analysis.md schema, with the order parameters,
seed match and retention computed by crystallab.metrics from the synthetic table (so the numbers
in the report are the table's); the verdict words are set by hand.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from crystallab import metrics as M

if not os.environ.get("CI"):  # in CI a missing matplotlib is an error, not a skip
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (pip install matplotlib)")

OTHER = "⊥"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LADDER = [("base", "base"), ("sft", "sft"), ("rl", "rl")]
TASKS = {
    "number_1_10": [str(i) for i in range(1, 11)],
    "color": ["red", "blue", "green", "yellow", "purple", "orange"],
}
FAMILIES = ["qa", "list", "narrative", "dialogue", "code", "game", "form", "qa"]
THRESHOLDS = {"tau": 0.1, "alpha": 0.01, "cover": 0.9, "retention_min": 0.9, "crystal_diversity": 0.1,
              "liquid_diversity": 0.25, "liquid_n_distinct": 3, "n_boot": 200, "n_perm": 200, "level": 0.95, "seed": 0}
SEED_RAW = 3  # the base raw prompt the SFT checkpoint nucleates onto


# --------------------------------------------------------------------------------------------
# the synthetic ladder


def _peaked(K: int, weights: dict[int, float], floor: float) -> np.ndarray:
    p = np.full(K, floor)
    for i, w in weights.items():
        p[i % K] += w
    return p / p.sum()


def _ladder_distributions(K: int, rng: np.random.Generator) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """{(checkpoint, kind): (P renormalised (n, K), ⊥ mass (n,))}."""
    seed = _peaked(K, {6: 0.55, 2: 0.3}, 0.015)  # the planted seed: mostly option 7 and 3
    base_raw = [_peaked(K, {i * 3 + 1: 0.8}, 0.02) for i in range(8)]
    base_raw[SEED_RAW] = seed
    base_raw[5] = np.full(K, 1.0 / K)
    base_chat = [_peaked(K, {i * 2: 0.5, i * 2 + 5: 0.3}, 0.04) for i in range(5)]

    def noisy(p: np.ndarray, n: int, scale: float) -> np.ndarray:
        Q = np.clip(p + rng.normal(0, scale, (n, K)) * p, 1e-4, None)
        return Q / Q.sum(axis=1, keepdims=True)

    settled = _peaked(K, {6: 0.8, 2: 0.17}, 0.002)
    return {
        ("base", "raw"): (np.array(base_raw), rng.uniform(0.15, 0.45, 8)),
        ("base", "chat"): (np.array(base_chat), rng.uniform(0.3, 0.6, 5)),
        ("sft", "raw"): (np.vstack([noisy(seed, 4, 0.2), np.array(base_raw[:4]) * 0.5 + seed * 0.5]), rng.uniform(0.05, 0.2, 8)),
        ("sft", "chat"): (noisy(seed, 5, 0.08), rng.uniform(0.02, 0.06, 5)),
        ("rl", "raw"): (noisy(settled, 8, 0.3), rng.uniform(0.02, 0.1, 8)),
        ("rl", "chat"): (noisy(settled, 5, 0.05), rng.uniform(0.0, 0.02, 5)),
    }


def _table_rows(dists: dict[str, dict], rng_seed: int = 0) -> list[dict]:
    rows = []
    for task, per in dists.items():
        options = TASKS[task]
        for ci, (ck, stage) in enumerate(LADDER):
            for kind in ("raw", "chat"):
                P, other = per[(ck, kind)]
                for i, (p, o) in enumerate(zip(P, other)):
                    pid = f"{kind}-{i:02d}"
                    text = (f"<start_of_turn>user\nPick a random {task.replace('_', ' ')} & say it <now>.<end_of_turn>\n<start_of_turn>model\n"
                            if kind == "chat" else f"Context {i} for {task}: the answer is")
                    for opt, prob in list(zip(options, p * (1 - o))) + [(OTHER, o)]:
                        rows.append({
                            "model": f"synthetic/{ck}", "checkpoint": ck, "checkpoint_index": ci, "stage": stage, "step": None,
                            "task": task, "task_version": 1, "prompt_id": pid, "prompt_kind": kind,
                            "prompt_family": FAMILIES[i % len(FAMILIES)] if kind == "raw" else "instruction",
                            "prompt_text": text, "option": opt, "prob": float(prob), "method": "exact", "n_samples": 0, "seed": rng_seed,
                        })
    return rows


def _iv(t) -> list[float]:
    return [float(v) for v in t]


def _set_summary(P: np.ndarray, other: np.ndarray) -> dict:
    b = M.bootstrap_order_parameters(P, valid=1 - other, n_boot=200, seed=0)
    params = {k: _iv(b[k]) for k in ("entropy_norm", "n_eff", "top1", "topk_mass", "collision", "chi2_uniform", "diversity", "n_distinct", "valid_mass")}
    return {"n_prompts": len(P), "n_valid_prompts": len(P), "params": params,
            "aggregate": [float(x) for x in P.mean(axis=0)], "other_mass": float(other.mean())}


def _analysis(dists: dict[str, dict], with_dynamics: bool = True) -> dict:
    states, transitions, verdicts = [], [], {}
    for task, per in dists.items():
        options = TASKS[task]
        sts = []
        for ci, (ck, stage) in enumerate(LADDER):
            (Pr, orr), (Pc, oc) = per[(ck, "raw")], per[(ck, "chat")]
            sets = {"raw": _set_summary(Pr, orr), "chat": _set_summary(Pc, oc),
                    "all": _set_summary(np.vstack([Pr, Pc]), np.concatenate([orr, oc]))}
            state = "liquid" if ci == 0 else "crystal"
            reason = (f"diversity(raw) = {sets['raw']['params']['diversity'][0]:.2f} >= 0.25" if ci == 0 else
                      f"diversity(chat) = {sets['chat']['params']['diversity'][0]:.3f} < 0.1 and entropy below base")
            sts.append({"checkpoint": ck, "checkpoint_index": ci, "stage": stage, "step": None, "task": task, "state": state,
                        "reason": reason, "options": options, "sets": sets})
        base_P = np.vstack([per[("base", "raw")][0], per[("base", "chat")][0]])
        base_ids = [f"raw-{i:02d}" for i in range(len(per[("base", "raw")][0]))] + [f"chat-{i:02d}" for i in range(len(per[("base", "chat")][0]))]
        trs = []
        for a, b in zip(sts, sts[1:]):
            q_a, q_b = np.array(a["sets"]["chat"]["aggregate"]), np.array(b["sets"]["chat"]["aggregate"])
            match = M.seed_match(q_b, base_P, n_perm=200, seed=0)
            pid = base_ids[match.index]
            da, db = a["sets"]["chat"]["params"]["diversity"], b["sets"]["chat"]["params"]["diversity"]
            ea, eb = a["sets"]["chat"]["params"]["entropy_norm"], b["sets"]["chat"]["params"]["entropy_norm"]
            kind = "nucleation" if a["state"] == "liquid" else "settling"
            trs.append({
                "task": task, "from": a["checkpoint"], "to": b["checkpoint"], "from_index": a["checkpoint_index"], "to_index": b["checkpoint_index"],
                "from_state": a["state"], "to_state": b["state"], "kind": kind,
                "seed": {"prompt_id": pid, "prompt_kind": pid.split("-")[0], "prompt_text": f"Context {SEED_RAW} for {task}: the <b>seed</b> answer is",
                         "distance": match.distance, "p_value": match.p_value, "confirmed": M.nucleation_confirmed(match)},
                "collapse": {"diversity": [da, db], "entropy_norm": [ea, eb], "holds": da[1] > db[2] and ea[1] > eb[2]},
                "retention": M.retention(q_a, q_b), "new_mass": M.new_mass(q_a, q_b), "redistribution": M.redistribution(q_a, q_b),
                "support": [options[i] for i in M.support_set(q_a)], "settling_confirmed": M.retention(q_a, q_b) >= 0.9,
            })
        nuc, settle = trs[0], trs[-1]
        verdicts[task] = {
            "liquid": {"value": "holds", "why": "base diversity(raw) >= 0.25",
                       "numbers": {"diversity_raw": sts[0]["sets"]["raw"]["params"]["diversity"], "n_distinct_raw": sts[0]["sets"]["raw"]["params"]["n_distinct"]}},
            "nucleation": {"value": "holds" if task == "number_1_10" else "inconclusive",
                           "why": "collapse with separated intervals and a confirmed seed match",
                           "numbers": {"seed_prompt_id": nuc["seed"]["prompt_id"], "seed_distance": nuc["seed"]["distance"], "seed_p_value": nuc["seed"]["p_value"]}},
            "settling": {"value": "holds" if task == "number_1_10" else "fails", "why": "rl keeps >= 90 % of its mass on the sft support",
                         "numbers": {"retention": settle["retention"], "new_mass": settle["new_mass"], "redistribution": settle["redistribution"]}},
        }
        states += sts
        transitions += trs
    dynamics = []
    if with_dynamics:
        steps = np.arange(0, 121, 10)
        div = 0.05 + 0.4 / (1 + np.exp((steps - 55) / 8))
        ent = 0.35 + 0.5 / (1 + np.exp((steps - 50) / 10))
        sus = 0.002 + 0.03 * np.exp(-((steps - 55) ** 2) / 300)
        stats = M.transition_statistics(steps, div, spread=sus)
        band = lambda y, w: [[float(v), float(v - w), float(v + w)] for v in y]  # noqa: E731
        dynamics.append({
            "checkpoint": "sft-run", "task": "number_1_10", "set": "chat", "steps": [int(s) for s in steps],
            "series": {"diversity": band(div, 0.03), "entropy_norm": band(ent, 0.04), "valid_mass": band(0.6 + 0.35 * steps / 120, 0.02),
                       "susceptibility": [float(s) for s in sus]},
            **{k: stats[k] for k in ("transition_step", "sharpness", "method", "rss_piecewise", "rss_logistic", "susceptibility_peak_step", "note")},
        })
    return {
        "crystallab_version": "0.1.0", "method": "exact", "thresholds": THRESHOLDS,
        "checkpoints": [{"index": i, "label": ck, "stage": st, "model": f"synthetic/{ck}"} for i, (ck, st) in enumerate(LADDER)],
        "tasks": list(dists), "states": states, "transitions": transitions, "verdicts": verdicts, "dynamics": dynamics,
    }


def _write_dir(d: Path, with_dynamics: bool = True) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crystallab.store import SCHEMA

    rng = np.random.default_rng(0)
    dists = {task: _ladder_distributions(len(opts), rng) for task, opts in TASKS.items()}
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(_table_rows(dists), schema=SCHEMA), d / "distributions.parquet")
    analysis = _analysis(dists, with_dynamics)
    (d / "analysis.json").write_text(json.dumps(analysis, indent=1, ensure_ascii=False))
    return analysis


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    from crystallab.cli.main import main

    d = tmp_path_factory.mktemp("report") / "run"
    _write_dir(d)
    assert main(["report", str(d)]) == 0
    return d


# --------------------------------------------------------------------------------------------
# the page as text


def _decode_png(data: bytes) -> np.ndarray:
    from matplotlib import image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


def test_report_is_self_contained_and_complete(report_dir: Path):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 'src="http' not in page and "<link" not in page and "url(http" not in page
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert len(imgs) == 1 + 2 * len(TASKS) + 1  # phase diagram, heatmap + aggregate per task, one dynamics run
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag[:120]
        data = base64.b64decode(m.group(1), validate=True)
        assert data.startswith(PNG_MAGIC)
        arr = _decode_png(data)
        assert arr.ndim == 3 and arr.shape[0] > 100 and arr.shape[1] > 100
        assert float(arr[..., :3].std()) > 0.01  # not a blank canvas
    figs = report_dir / "figures"
    names = {p.name for p in figs.iterdir()}
    for stem in ["phase_diagram", "heatmap_number_1_10", "aggregate_number_1_10", "heatmap_color", "aggregate_color"]:
        assert f"{stem}.png" in names
        assert (stem.startswith("heatmap")) != (f"{stem}.svg" in names)  # heatmaps are rasters: PNG only
        assert (figs / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
    assert any(n.startswith("dynamics_00_sft-run_number_1_10") and n.endswith(".png") for n in names)

    table = re.search(r'<table class="verdicts">.*?</table>', page, re.S).group(0)
    for word in ("holds", "fails", "inconclusive"):
        assert f'class="v {word}"' in table and f">{word}<small>" in table
    for claim in ("liquid", "nucleation", "settling"):
        assert f">{claim}</th>" in table
    # the numbers behind a verdict are in the cell's title (hover) and a short one in its text
    assert re.search(r'title="[^"]*seed_distance = [0-9.e-]+[^"]*">holds<small>d 0\.\d+ · p [0-9.e-]+</small>', table)
    assert re.search(r"ret 0\.\d+", table) and re.search(r"div 0\.\d+", table)
    # text from the analysis is escaped, the seed prompt and the thresholds are printed
    assert "&lt;b&gt;seed&lt;/b&gt;" in page and "<b>seed</b>" not in page and "&gt;= 0.25" in page
    assert "raw-03" in page and "Context 3 for number_1_10: the" in page
    assert "crystal_diversity" in page and "liquid_diversity" in page


def test_report_minimal_analysis(tmp_path: Path):
    """One checkpoint, a task with only raw prompts and no valid mass: renders, nothing to compare."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crystallab.cli.main import main
    from crystallab.store import SCHEMA

    rows = [{"model": "m", "checkpoint": "only", "checkpoint_index": 0, "stage": "base", "step": None, "task": "coin_flip", "task_version": 1,
             "prompt_id": f"raw-{i:02d}", "prompt_kind": "raw", "prompt_family": "qa", "prompt_text": "x", "option": o, "prob": p,
             "method": "exact", "n_samples": 0, "seed": 0}
            for i in range(3) for o, p in (("heads", 0.0), ("tails", 0.0), (OTHER, 1.0))]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "distributions.parquet")
    nan = [None, None, None]
    analysis = {"method": "exact", "thresholds": {}, "checkpoints": [{"index": 0, "label": "only", "stage": "base", "model": "m"}],
                "tasks": ["coin_flip"], "transitions": [], "dynamics": [],
                "states": [{"checkpoint": "only", "checkpoint_index": 0, "stage": "base", "step": None, "task": "coin_flip", "state": "undefined",
                            "reason": "no valid mass", "options": ["heads", "tails"],
                            "sets": {"raw": {"n_prompts": 3, "n_valid_prompts": 0, "params": {"diversity": nan, "entropy_norm": nan},
                                             "aggregate": None, "other_mass": 1.0}}}],
                "verdicts": {"coin_flip": {"liquid": {"value": "inconclusive", "why": "no valid mass", "numbers": {"valid_mass": [0.0, 0.0, 0.0]}}}}}
    (tmp_path / "analysis.json").write_text(json.dumps(analysis))
    assert main(["report", str(tmp_path), "--no-svg"]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "undefined" in page and "inconclusive" in page
    assert not list((tmp_path / "figures").glob("*.svg"))


def test_report_without_analysis_says_what_to_run(tmp_path: Path, capsys):
    from crystallab.cli.main import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "crystallab analyze" in err and err.count("\n") == 1


def test_analyze_then_report_end_to_end(tmp_path: Path):
    phases = pytest.importorskip("crystallab.phases")
    if not hasattr(phases, "analyze"):
        pytest.skip("crystallab.phases.analyze is not there yet")
    import pyarrow.parquet as pq

    from crystallab.cli.main import main

    _write_dir(tmp_path, with_dynamics=False)
    th = phases.Thresholds(n_boot=100, n_perm=100) if hasattr(phases, "Thresholds") else None
    analysis = phases.analyze(pq.read_table(tmp_path / "distributions.parquet"), th)
    (tmp_path / "analysis.json").write_text(json.dumps(analysis, ensure_ascii=False))
    assert main(["report", str(tmp_path), "--no-svg"]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for task in TASKS:
        assert f'id="task-{task}"' in page
    states = {(s["task"], s["checkpoint"]): s["state"] for s in analysis["states"]}
    assert states[("number_1_10", "base")] == "liquid"
    for word in {v["value"] for per in analysis["verdicts"].values() for v in per.values()}:
        assert f'class="v {word}"' in page
    assert (tmp_path / "figures" / "phase_diagram.png").read_bytes().startswith(PNG_MAGIC)


# --------------------------------------------------------------------------------------------
# the page in a real browser


def test_report_in_headless_chromium(report_dir: Path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    ci = bool(os.environ.get("CI"))
    if not (chromium and driver_path):
        if ci:
            pytest.fail("CI is set but chromium/chromedriver are missing: scripts/setup.sh installs them (apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver); CI=1 makes this a failure")
    if ci:
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1360,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get((report_dir / "report.html").resolve().as_uri())
        driver.execute_script("return document.readyState")
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(widths) == 1 + 2 * len(TASKS) + 1
        assert all(c and w > 0 and h > 0 for c, w, h in widths), widths
        errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, errors
        title = driver.execute_script("return document.title")
        assert "crystallab report" in title
        # full-page screenshot: grow the window to the page's height
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1360, min(max(height, 1000), 16000))
        shot = report_dir / "screenshot.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert _decode_png(data).shape[0] >= 1000
    repo_runs = Path(__file__).resolve().parents[1] / "runs"
    repo_runs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, repo_runs / "report-screenshot.png")
