"""The public API: every name in ``crystallab.__all__`` resolves, means the same on every access
(importing a submodule never rebinds it), and ``import crystallab`` stays free of torch."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import numpy as np

import crystallab


def test_every_public_name_resolves_and_keeps_its_meaning():
    first = {name: getattr(crystallab, name) for name in crystallab.__all__}
    # import every submodule that imports without an optional extra, then look again
    for mod in pkgutil.walk_packages(crystallab.__path__, "crystallab."):
        try:
            importlib.import_module(mod.name)
        except Exception:  # noqa: BLE001  (vllm, ray, ...: extras this machine may lack)
            continue
    again = {name: getattr(crystallab, name) for name in crystallab.__all__}
    changed = [n for n in first if again[n] is not first[n]]
    assert not changed, f"these names changed meaning after their submodules were imported: {changed}"
    assert callable(crystallab.measure) and callable(crystallab.report) and callable(crystallab.tasks)


def test_import_crystallab_loads_no_heavy_library():
    code = (
        "import sys, crystallab; crystallab.Results; crystallab.Thresholds; crystallab.load_task('coin_flip'); "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'matplotlib', 'ray', 'vllm') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_measure_in_memory_round_trips_through_a_folder(tiny_ckpt, tmp_path):
    """The notebook path on a tiny real model: measure into a Results, analyze it, save it,
    load it back; a second checkpoint goes into the same Results with ``into=``."""
    model = crystallab.load_model(str(tiny_ckpt("llama", "digits", chat_template=True)))
    res = crystallab.measure(model, ["coin_flip"], prompts="raw", limit=4, label="base")
    df = res.to_pandas()
    assert len(df) == 4 * 3 and np.allclose(df.groupby("prompt_id").prob.sum(), 1.0)
    res = crystallab.measure(model, "coin_flip", prompts="all", limit=4, label="sft", parent="base", into=res)
    assert res.checkpoints == ["base", "sft"] and len(res.to_pandas()) == 4 * 3 + 8 * 3
    an = crystallab.analyze(res)
    assert [c.label for c in an.checkpoints] == ["base", "sft"] and an.root == "base"
    assert an.table is not None and len(an.table) == len(res)
    saved = res.save(tmp_path / "x")
    back = crystallab.Results.load(saved)
    assert back.to_arrow().equals(res.to_arrow()) and back.checkpoints == res.checkpoints
    assert crystallab.analyze(saved).to_json() == an.to_json()  # a folder and a Results analyse alike
    assert res.save(tmp_path / "x") == saved and len(crystallab.Results.load(saved)) == len(res)  # idempotent
    html = crystallab.report(an, tmp_path / "report" / "report.html")
    page = html.read_text(encoding="utf-8")
    assert "heatmaps are left out" not in page  # the Analysis brought its rows along
    assert any(f.name.startswith("heatmap") for f in (html.parent / "figures").iterdir())


def test_sampled_measurement_keeps_its_completions(tiny_ckpt):
    model = crystallab.load_model(str(tiny_ckpt("llama", "digits", chat_template=True)))
    res = crystallab.measure(model, "coin_flip", prompts="raw", method="sample", samples=16, seed=3, limit=2)
    assert set(res.to_pandas().method) == {"sample"} and len(res.samples()) == 2 * 16
    again = crystallab.measure(model, "coin_flip", prompts="raw", method="sample", samples=16, seed=3, limit=2)
    assert again.to_arrow().equals(res.to_arrow())  # seeded: the same counts
