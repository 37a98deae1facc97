"""`crystallab report DIR` on v2 analyses of synthetic ladders (tests/synthetic.py): the page is
self-contained, has every section, prints the Analysis' own numbers (parsed back from the page
and compared within the 4 significant digits it prints), draws basins on the heatmaps, renders
minimal and dead ladders, and loads in headless Chromium without errors.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from crystallab.analysis import Analysis, Estimate, Thresholds, analyze_dir, load_analysis

from synthetic import CHAT_FAMILIES, FAMILIES, OPTIONS, SEED, family_prompts, ladder, rows_for, write

if not os.environ.get("CI"):  # in CI a missing matplotlib is an error, not a skip
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (pip install matplotlib)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASK = "number_1_10"
TH = Thresholds(n_boot=60)  # the report is under test here, not the intervals
REL = 1e-3  # the page prints 4 significant digits: a relative rounding error below 5e-4


# --------------------------------------------------------------------------------------------
# ladders


def tracked_rows(replicas: int = 3, steps: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)) -> list[dict]:
    """base (liquid) → sft tracked at log-spaced steps, its chat answers switching into the qa
    basin around step 30 (one midpoint per replica) → rl tracked, drifting on the sft support."""
    rng = np.random.default_rng(0)
    chat0 = {f: list(FAMILIES.values())[i % len(FAMILIES)] for i, f in enumerate(CHAT_FAMILIES)}
    rows = rows_for("base", 0, TASK, family_prompts(FAMILIES, rng), family_prompts(chat0, rng, 3, 50))
    rl = np.array([0.01, 0.01, 0.2, 0.01, 0.02, 0.01, 0.72, 0.01, 0.005, 0.005])
    for r in range(replicas):
        for s in steps:
            w = 1 / (1 + np.exp(-(s - 28 - 4 * r) / 4))
            chat = {f: (1 - w) * chat0[f] + w * FAMILIES[SEED] for f in CHAT_FAMILIES}
            rows += rows_for(
                "sft",
                1,
                TASK,
                family_prompts(FAMILIES, rng),
                family_prompts(chat, rng, 3, 2000),
                valid=0.95,
                step=s,
                replica=r,
            )
            u = 1 - np.exp(-s / 30)
            chat = {f: (1 - u) * FAMILIES[SEED] + u * rl for f in CHAT_FAMILIES}
            rows += rows_for(
                "rl",
                2,
                TASK,
                family_prompts(FAMILIES, rng),
                family_prompts(chat, rng, 3, 2000),
                valid=0.99,
                step=s,
                replica=r,
            )
    return rows


def with_invalid(rows: list[dict], checkpoint: str, prompts: set[str], valid: float = 0.1) -> list[dict]:
    """The same rows with ``prompts`` of ``checkpoint`` given valid mass ``valid`` (the rest ⊥)."""
    out = []
    for r in rows:
        r = dict(r)
        if r["checkpoint"] == checkpoint and r["prompt_id"] in prompts:
            r["prob"] = 1 - valid if r["option"] == "⊥" else r["prob"] / (1 - 0.2) * valid
        out.append(r)
    return out


def analysed(d: Path, rows: list[dict], th: Thresholds = TH, train_answers: dict | None = None) -> Analysis:
    write(d, rows)
    if train_answers:
        m = json.loads((d / "manifest.json").read_text())
        for c in m["checkpoints"]:
            c["info"] = {"train_answers": train_answers.get(c["label"])} if c["label"] in train_answers else {}
        (d / "manifest.json").write_text(json.dumps(m))
    return analyze_dir(d, th)


def report(d: Path, an: Analysis, svg: bool = True) -> str:
    from crystallab.reporting import write_report

    out = write_report(d, svg=svg)
    assert out == d / "report.html"
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Analysis, str]:
    d = tmp_path_factory.mktemp("planted") / "run"
    an = analysed(d, with_invalid(ladder("planted"), "base", {"raw-00", "raw-05"}))
    return d, an, report(d, an)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, Analysis, str]:
    d = tmp_path_factory.mktemp("tracked") / "run"
    answers = {"sft": {TASK: dict(zip(OPTIONS, (0.5 * FAMILIES[SEED] + 0.05).tolist()))}}
    an = analysed(d, tracked_rows(), Thresholds(n_boot=30), train_answers=answers)
    return d, an, report(d, an)


# --------------------------------------------------------------------------------------------
# reading the page back


class _Keyed(HTMLParser):
    """Text of every element with a ``data-key`` attribute (nested markup included)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}
        self.open: list[tuple[str | None, int]] = []  # (key or None, depth) per open element

    def handle_starttag(self, tag, attrs):
        if tag in ("img", "br", "meta", "input"):
            return
        key = dict(attrs).get("data-key")
        self.open.append((key, len(self.open)))
        if key is not None:
            self.found[key] = ""

    def handle_endtag(self, tag):
        if self.open and tag not in ("img", "br", "meta", "input"):
            self.open.pop()

    def handle_data(self, data):
        for key, _ in self.open:
            if key is not None:
                self.found[key] += data


def keyed(page: str) -> dict[str, str]:
    p = _Keyed()
    p.feed(page)
    return p.found


NUMBER = re.compile(r"n/a|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers_in(text: str) -> list[float | None]:
    return [None if m == "n/a" else float(m) for m in NUMBER.findall(text)]


def close(got: float | None, want: float | None) -> bool:
    if want is None or (isinstance(want, float) and not math.isfinite(want)):
        return got is None
    return got is not None and abs(got - want) <= REL * abs(want) + 1e-12


def assert_estimate(text: str, est: Estimate | None, where: str) -> None:
    want = (
        [None]
        if est is None or est.value is None
        else [est.value] + ([est.lo, est.hi] if est.lo is not None and est.hi is not None else [])
    )
    got = numbers_in(text)
    ok = len(got) == len(want) and all(close(g, w) for g, w in zip(got, want))
    assert ok, f"{where}: page {text!r}, analysis {est}"


def assert_number(text: str, want, where: str) -> None:
    if isinstance(want, bool):
        assert text.strip() == ("yes" if want else "no"), where
    elif isinstance(want, (int, float)) or want is None:
        assert_estimate(text, Estimate(want), where)
    elif isinstance(want, str):
        assert text.strip() == want, where
    elif isinstance(want, list) and len(want) == 3 and all(v is None or isinstance(v, (int, float)) for v in want):
        assert_estimate(text, Estimate(*want), where)
    elif isinstance(want, dict):
        for k, v in want.items():
            assert f"{k}: {v}" in text, where
    else:  # a list of names, or of groups of names
        for name in (x for v in want for x in (v if isinstance(v, (list, tuple)) else [v])):
            assert str(name) in text, where


def _decode_png(data: bytes) -> np.ndarray:
    from matplotlib import image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


# --------------------------------------------------------------------------------------------
# the page as text


def test_page_is_self_contained(planted):
    d, _, page = planted
    assert page.startswith("<!DOCTYPE html>")
    assert "<link" not in page and "url(" not in page and "@import" not in page
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith("data:image/png;base64,") if attr == "src" else value.startswith("#"), value[:80]
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == len(re.findall(r"<img\b", page)) == 3  # phase diagram, raw and chat heatmaps
    for b64 in imgs:
        data = base64.b64decode(b64, validate=True)
        assert data.startswith(PNG_MAGIC)
        arr = _decode_png(data)
        assert arr.shape[0] > 200 and arr.shape[1] > 400 and float(arr[..., :3].std()) > 0.01  # not blank
    names = {p.name for p in (d / "figures").iterdir()}
    assert {f"phase_{TASK}.png", f"phase_{TASK}.svg", f"heatmap_{TASK}_raw.png", f"heatmap_{TASK}_chat.png"} <= names
    assert f"heatmap_{TASK}_raw.svg" not in names  # a raster either way: PNG only


def test_every_section_present(planted):
    _, an, page = planted
    for anchor in (
        "verdicts",
        "warnings",
        "how-to-read",
        f"task-{TASK}",
        f"phase-{TASK}",
        f"states-{TASK}",
        f"edges-{TASK}",
        f"basins-{TASK}",
        f"dynamics-{TASK}",
    ):
        assert f'id="{anchor}"' in page, anchor
    assert "No tracked training run" in page  # the planted ladder has no steps
    table = re.search(r'<table class="verdicts" data-task="number_1_10">.*?</table>', page, re.DOTALL).group(0)
    for claim, v in an.verdicts[TASK].items():
        assert f'<tr data-claim="{claim}">' in table and f'<span class="v {v.value}">{v.value}</span>' in table
        assert escape(v.why) in table  # every why, escaped
    assert {v.value for v in an.verdicts[TASK].values()} == {"holds"}  # the planted truth
    for cond in (
        "every family of the root&#x27;s raw ensemble sits in one basin",
        "q lies outside every root basin",
        "seed_p (Holm) ≥ α = 0.05",
        "A ≤ 0",
        "ρ &lt; 0.8",
        "redistribution ≤ ε = 0.05",
        "the same k* in fewer than 0.8",
    ):
        assert cond in page.split('id="how-to-read"')[1], cond
    assert "title>crystallab report" in page


def test_numbers_in_the_page_are_the_analysis_numbers(planted):
    _, an, page = planted
    cells = keyed(page)
    th = Thresholds(**an.thresholds)
    for name in Thresholds.names():
        assert_number(cells[f"th/{name}"], getattr(th, name), name)
    for claim, v in an.verdicts[TASK].items():
        key = f"v/{TASK}/{claim}"
        for name, value in v.numbers.items():
            text = cells[f"{key}/{name}"]
            assert text.startswith(name + " ")
            assert_number(text[len(name) + 1 :], value, f"{key}/{name}")
        assert_number(cells[f"{key}/p_value"], v.p_value, key)
        assert_number(cells[f"{key}/p_holm"], v.p_holm, key)
    n = 0
    for s in an.states:
        key = f"s/{TASK}/{s.checkpoint}/{s.ensemble}/{s.split or 'all'}"
        for p in ("n_basins", "phi", "spread", "h", "entropy_norm", "valid_mass"):
            assert_estimate(cells[f"{key}/{p}"], s.params.get(p), f"{key}/{p}")
            n += 1
        assert_number(cells[f"{key}/phi_p"], s.phi_p, key)
        assert cells[f"{key}/n_valid"] == f"{s.n_valid} / {s.n_prompts}"
    assert n == 6 * 6
    assert len(an.transitions) == 2
    for t in an.transitions:
        key = f"t/{TASK}/{t.parent}/{t.child}"
        for name in ("margin", "d_chat0", "retention", "rho", "redistribution"):
            assert_estimate(cells[f"{key}/{name}"], getattr(t, name), f"{key}/{name}")
        assert_estimate(cells[f"{key}/d_k_star"], t.d[t.k_star], key)
        assert_estimate(cells[f"{key}/z_k_star"], t.z[t.k_star], key)
        for fam, est in t.d.items():
            assert_estimate(cells[f"{key}/d/{fam}"].split("z")[0], est, f"{key}/d/{fam}")
        assert_number(cells[f"{key}/seed_p"], t.seed_p.p, key)


def test_heatmaps_group_families_and_mark_basins(planted):
    from crystallab.reporting import data as D
    from crystallab.store import read_table

    d, an, page = planted
    panels = D.heatmap_panels(an, read_table(d), TASK, "raw")
    assert [p.checkpoint for p in panels] == ["base", "sft", "rl"]
    for p in panels:
        s = an.state(p.checkpoint, TASK, "raw")
        assert [g.family for g in p.groups] == [f.name for f in s.families]  # the state's family order
        assert {g.family: g.basin for g in p.groups} == {f.name: f.basin for f in s.families}
        for g in p.groups:  # boxes are contiguous runs of one family that tile the rows
            assert {r.family for r in p.rows[g.start : g.stop]} == {g.family}
        assert sum(g.stop - g.start for g in p.groups) == len(p.rows) == s.n_prompts
    root = panels[0]
    marks = {t.k_star: [] for t in an.transitions}
    for t in an.transitions:
        marks[t.k_star].append(t.child)
    assert {g.family: g.k_star_of for g in root.groups if g.k_star_of} == marks == {"qa": ["sft", "rl"]}
    assert not any(g.k_star_of for p in panels[1:] for g in p.groups)
    # invalid prompts: greyed (no p̃), listed under the heatmap and in the warnings
    s = an.state("base", TASK, "raw")
    assert s.invalid_prompts == ["raw-00", "raw-05"] == root.invalid
    assert [r.prompt for r in root.rows if r.p is None] == s.invalid_prompts
    assert keyed(page)[f"invalid/{TASK}/base/raw"] == "raw-00, raw-05"
    warn = page.split('id="warnings"')[1].split("</ul>")[0]
    assert "raw-00, raw-05" in warn and "below 0.2" in warn
    # p̃ of a valid row is the table's, renormalised over the options
    row = next(r for r in root.rows if r.prompt == "raw-01")
    assert abs(sum(row.p) - 1) < 1e-9 and row.valid_mass == pytest.approx(0.8)


def test_dynamics_figures_and_captions(tracked):
    d, an, page = tracked
    cells = keyed(page)
    assert [(x.checkpoint, x.coordinate.split()[0]) for x in an.dynamics] == [("sft", "d_k*(t)"), ("rl", "q(S)(t)")]
    for i, dyn in enumerate(an.dynamics):
        t = dyn.test
        assert cells[f"dyn/{i}/verdict"] == t["verdict"]
        assert_estimate(cells[f"dyn/{i}/t0"], Estimate(t["t0"], *t["t0_interval"]), "t0")
        assert_estimate(cells[f"dyn/{i}/w"], Estimate(t["w"], *t["w_interval"]), "w")
        png = d / "figures" / f"dynamics_{i:02d}_{dyn.checkpoint}_{TASK}.png"
        assert png.read_bytes().startswith(PNG_MAGIC) and png.with_suffix(".svg").is_file()
        assert len(dyn.replica_series) == 3 and any(v is not None for v in dyn.chi)
    assert an.dynamics[0].test["verdict"] == "sharp"  # the planted switch
    assert len(re.findall(r"<img\b", page)) == 1 + 2 + 2
    # attraction and d_data, known from the manifest's training answers, are in the edges table
    t = next(t for t in an.transitions if t.child == "sft")
    assert t.attraction is not None and t.d_data is not None
    assert_estimate(cells[f"t/{TASK}/base/sft/attraction"], t.attraction, "A")
    assert_estimate(cells[f"t/{TASK}/base/sft/d_data"], t.d_data, "d_data")


def test_minimal_analysis_renders(tmp_path: Path):
    """One checkpoint with raw prompts only: a phase diagram of one point, nothing to compare."""
    rows = rows_for("only", 0, TASK, family_prompts(FAMILIES, np.random.default_rng(1)), {})
    an = analysed(tmp_path, rows)
    page = report(tmp_path, an, svg=False)
    assert [(s.checkpoint, s.ensemble) for s in an.states] == [("only", "raw")]
    assert an.verdicts[TASK]["nucleation"].value == "inconclusive"
    for v in an.verdicts[TASK].values():
        assert escape(v.why) in page
    assert "No parent → child edge" in page and len(re.findall(r"<img\b", page)) == 2
    assert not list((tmp_path / "figures").glob("*.svg"))


def test_dead_ladder_renders_with_the_inconclusive_reasons(tmp_path: Path):
    an = analysed(tmp_path, ladder("dead"))
    page = report(tmp_path, an, svg=False)
    assert all(s.state == "undefined" for s in an.states)
    assert {v.value for v in an.verdicts[TASK].values()} == {"inconclusive"}
    table = re.search(r'<table class="verdicts".*?</table>', page, re.DOTALL).group(0)
    for v in an.verdicts[TASK].values():
        assert escape(v.why) in table
    assert "No defined ensemble to place." in page
    assert "a state needs at least 3" in page and page.count('class="st st-undefined"') == 6
    warn = page.split('id="warnings"')[1].split("</ul>")[0]
    assert warn.count("<li>") >= 6  # every ensemble lost its prompts


def test_one_family_splits_and_a_sweep(tmp_path: Path):
    """Raw prompts of one family (read prompt by prompt), chat families split train/held-out, and
    a sweep added to the Analysis in hand: every one is drawn and its numbers printed."""
    import dataclasses

    from crystallab.analysis import Sweep
    from crystallab.reporting import data as D
    from crystallab.reporting import write_report
    from crystallab.store import read_table

    rng = np.random.default_rng(2)
    raw = {"only": [rng.dirichlet(p * 400) for p in FAMILIES.values()]}
    split = {f: ("heldout" if i % 2 else "train") for i, f in enumerate(CHAT_FAMILIES)}
    chat0 = family_prompts({f: list(FAMILIES.values())[i] for i, f in enumerate(CHAT_FAMILIES)}, rng, 3, 50)
    rows = rows_for("base", 0, TASK, raw, chat0, split=split)
    rows += rows_for(
        "sft", 1, TASK, raw, family_prompts({f: FAMILIES[SEED] for f in CHAT_FAMILIES}, rng, 3, 2000), split=split
    )
    an = analysed(tmp_path, rows, Thresholds(n_boot=30))
    sweep = Sweep(
        "mixture",
        "λ",
        [0.0, 0.5, 1.0],
        [[-1.0, 0.2, 1.0], [-1.0, 0.4, 1.0]],
        [-1.0, 0.0, 1.0],
        Estimate(3.1, 2.2, 4.0),
        Estimate(0.5, 0.45, 0.55),
        0.08,
        0.01,
        0.02,
        "sharp",
    )
    an = dataclasses.replace(an, sweeps=[sweep])
    page = write_report((an, tmp_path), svg=False).read_text(encoding="utf-8")
    root = D.heatmap_panels(an, read_table(tmp_path), TASK, "raw")[0]
    s = an.state("base", TASK, "raw")
    assert s.read_by == root.read_by == "prompts" and len(root.groups) == 1
    t = an.transitions[0]
    assert root.k_star_rows == {t.k_star: ["sft"]} and t.k_star in s.prompt_ids  # a prompt id, not "prompt-i"
    assert {r.prompt: r.basin for r in root.rows} == {s.prompt_ids[i]: f.basin for i, f in enumerate(s.families)}
    chat = D.heatmap_panels(an, read_table(tmp_path), TASK, "chat")[0]
    assert {r.family for r in chat.rows if r.split == "heldout"} == {"game", "person"}
    cells = keyed(page)
    held = an.state("sft", TASK, "chat", "heldout")
    assert_estimate(cells[f"s/{TASK}/sft/chat/heldout/phi"], held.params["phi"], "held-out phi")
    assert an.verdicts[TASK]["nucleation"].numbers["split"] == "heldout"
    assert 'id="sweeps"' in page and "read prompt by prompt" in page
    assert "Σ = 3.1 [2.2, 4]" in page and len(re.findall(r"<img\b", page)) == 4


def test_report_of_an_analysis_in_hand(planted, tmp_path: Path):
    from crystallab.errors import UserError
    from crystallab.reporting import write_report

    d, an, _ = planted
    out = write_report((an, d), tmp_path / "elsewhere", svg=False)
    assert out == tmp_path / "elsewhere" / "report.html" and (tmp_path / "elsewhere" / "figures").is_dir()
    assert len(re.findall(r"<img\b", out.read_text(encoding="utf-8"))) == 3
    with pytest.raises(UserError, match="needs out="):
        write_report(an)


def test_report_without_analysis_says_what_to_run(tmp_path: Path, capsys):
    from crystallab.cli.main import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "crystallab analyze" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_analyze_then_report_end_to_end(tmp_path: Path, capsys):
    from crystallab.cli.main import main

    write(tmp_path, ladder("escape"))
    th = tmp_path / "thresholds.yaml"
    th.write_text("n_boot: 50\n")
    assert main(["analyze", str(tmp_path), "--thresholds", str(th)]) == 0
    assert main(["report", str(tmp_path), "--no-svg"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    an = load_analysis(tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert an.verdicts[TASK]["settling"].value == "fails"  # RL moved the mass off the support
    for v in an.verdicts[TASK].values():
        assert f'<span class="v {v.value}">{v.value}</span>' in page
    assert keyed(page)["th/n_boot"] == "50"
    assert not list((tmp_path / "figures").glob("*.svg"))


def test_import_does_not_load_matplotlib():
    code = "import sys, crystallab, crystallab.reporting; assert 'matplotlib' not in sys.modules, 'matplotlib loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# the page in a real browser


def test_report_in_headless_chromium(tracked):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    ci = bool(os.environ.get("CI"))
    if not (chromium and driver_path):
        if ci:
            pytest.fail(
                "CI is set but chromium/chromedriver are missing: scripts/setup.sh installs them "
                "(apt-get install chromium chromium-driver)"
            )
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver); "
            "CI=1 makes this a failure"
        )
    if ci:
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip(
            "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
        )
    from selenium.webdriver.chrome.service import Service

    report_dir, _, page = tracked
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1360,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get((report_dir / "report.html").resolve().as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == len(re.findall(r"<img\b", page)) == 5
        assert all(c and w > 0 and h > 0 for c, w, h in images), images
        errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, errors
        assert "crystallab report" in driver.execute_script("return document.title")
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1360, min(max(height, 1000), 16000))
        shot = report_dir / "screenshot.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and _decode_png(data).shape[0] >= 1000
    repo_runs = Path(__file__).resolve().parents[2] / "runs"
    repo_runs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, repo_runs / "report-screenshot.png")
