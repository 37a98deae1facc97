"""`crystallab compare`: several folders' post-trained models in each root's basins, the distance
matrix and the shared-seed permutation test, on synthetic folders with planted seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from crystallab.analysis.compare import compare, share_seed_test
from crystallab.cli.main import main

import synthetic as S


def folder(tmp_path, name: str, seed_family: str, seed: int, families: dict | None = None):
    """A base (raw families with their planted distributions) and one SFT model whose chat
    answers sit in ``seed_family``'s basin."""
    rng = np.random.default_rng(seed)
    fams = families or S.FAMILIES
    chat0 = {f: list(fams.values())[i % len(fams)] for i, f in enumerate(S.CHAT_FAMILIES)}
    rows = S.rows_for("base", 0, "number_1_10", S.family_prompts(fams, rng), S.family_prompts(chat0, rng, 3, 50))
    sft_chat = S.family_prompts({f: fams[seed_family] for f in S.CHAT_FAMILIES}, rng, 3, 2000)
    rows += S.rows_for(f"sft-{name}", 1, "number_1_10", S.family_prompts(fams, rng), sft_chat, valid=0.95)
    return S.write(tmp_path / name, rows)


def test_a_planted_shared_seed_is_found(tmp_path):
    dirs = [str(folder(tmp_path, f"m{i}", "qa", seed=i)) for i in range(3)]
    c = compare(dirs)
    s = c["share_seed"]
    assert s["k_star_in_own_root"] == ["qa", "qa", "qa"] and s["agreeing_pairs"] == 3
    # 5 families each: P(all three agree) = 5 / 125
    assert s["p"] == pytest.approx(0.04) and s["exact"] and s["verdict"] == "shared"
    # every model read against every root: the same basin, inside it
    for m in c["mapping"]:
        assert {r["k_star"] for r in m["roots"].values()} == {"qa"}
        assert all(r["inside"] for r in m["roots"].values())
    D = np.array(c["distance"]["js"])
    assert D.shape == (3, 3) and np.allclose(D, D.T, atol=1e-9) and D.max() < 0.1
    lo, hi = np.array(c["distance"]["lo"]), np.array(c["distance"]["hi"])
    assert np.all(lo <= D + 1e-9) and np.all(D <= hi + 1e-9)


def test_planted_different_seeds_are_not_shared(tmp_path):
    dirs = [str(folder(tmp_path, n, fam, seed=i)) for i, (n, fam) in enumerate([("a", "qa"), ("b", "list"),
                                                                                ("c", "code")])]  # fmt: skip
    c = compare(dirs)
    s = c["share_seed"]
    assert s["k_star_in_own_root"] == ["qa", "list", "code"] and s["agreeing_pairs"] == 0
    assert s["p"] == 1.0 and s["verdict"] == "not shown"
    D = np.array(c["distance"]["js"])
    assert D[0, 1] > 0.3 and D[0, 2] > 0.3


def test_different_roots_compare_through_families(tmp_path):
    """Two bases whose families share names but not distributions: each model is read in its own
    root, by family name."""
    other = {k: v for k, v in zip(S.FAMILIES, list(S.FAMILIES.values())[::-1])}  # the same names, permuted means
    a = folder(tmp_path, "a", "qa", seed=0)
    b = folder(tmp_path, "b", "qa", seed=1, families=other)
    c = compare([str(a), str(b)])
    s = c["share_seed"]
    assert s["k_star_in_own_root"] == ["qa", "qa"] and s["through"].startswith("families")
    # read against the *other* root, b's model sits where that root's qa is not
    m_b = next(m for m in c["mapping"] if m["folder"] == "b")
    assert m_b["roots"]["b"]["k_star"] == "qa" and m_b["roots"]["a"]["k_star"] != "qa"


def test_share_seed_test_small_cases():
    assert share_seed_test(["x", "x"], [["x", "y"], ["x", "y"]]).p == 0.5
    big = share_seed_test(["f0"] * 8, [[f"f{i}" for i in range(6)]] * 8)  # 6^8 > 200,000: Monte Carlo
    assert not big.exact and big.p < 0.001


def test_cli_writes_json_and_html(tmp_path, capsys):
    dirs = [str(folder(tmp_path, f"m{i}", "qa", seed=i)) for i in range(2)]
    out = tmp_path / "cmp"
    assert main(["compare", *dirs, "--out", str(out), "--n-boot", "50"]) == 0
    c = json.loads((out / "compare.json").read_text())
    assert c["share_seed"]["k_star_in_own_root"] == ["qa", "qa"]
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert 'id="verdict"' in page and "Distance matrix" in page and page.count("data:image/png;base64,") == 3
    assert "shared seed:" in capsys.readouterr().out


def test_bad_folders_are_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not a results folder" in err and len(err.strip().splitlines()) == 1
    d = folder(tmp_path, "m", "qa", seed=0)
    assert main(["compare", str(d), "--task", "color"]) == 2
    assert "no rows of task 'color'" in capsys.readouterr().err


def test_compare_page_in_headless_chromium(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        import os

        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium/chromedriver are missing (scripts/setup.sh installs them)")
        pytest.skip("headless Chromium not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    dirs = [str(folder(tmp_path, f"m{i}", "qa", seed=i)) for i in range(2)]
    out = tmp_path / "cmp"
    assert main(["compare", *dirs, "--out", str(out), "--n-boot", "20"]) == 0
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        drv.get((out / "compare.html").as_uri())
        imgs = drv.find_elements("css selector", "img")
        assert len(imgs) == 3 and all(drv.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        assert "Shared seed" in drv.find_element("id", "verdict").text
        logs = [x for x in drv.get_log("browser") if x["level"] == "SEVERE"]
        assert not logs, logs
    finally:
        drv.quit()
