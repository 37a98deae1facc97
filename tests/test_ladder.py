"""Ladders: presets resolve to the right checkpoints; the whole path runs on tiny local models."""

from __future__ import annotations

import json

import pytest
import yaml

from crystallab.cli.main import main
from crystallab.errors import UserError
from crystallab.ladder import ladder_from_dict, load_ladder, preset_names
from crystallab.models.spec import parse_spec

EXPECTED = {
    "olmo2-1b": [
        "allenai/OLMo-2-0425-1B",
        "allenai/OLMo-2-0425-1B-SFT",
        "allenai/OLMo-2-0425-1B-DPO",
        "allenai/OLMo-2-0425-1B-Instruct",
    ],
    "olmo2-7b": [
        "allenai/OLMo-2-1124-7B",
        "allenai/OLMo-2-1124-7B-SFT",
        "allenai/OLMo-2-1124-7B-DPO",
        "allenai/OLMo-2-1124-7B-Instruct",
    ],
    "tulu3-8b": [
        "meta-llama/Llama-3.1-8B",
        "allenai/Llama-3.1-Tulu-3-8B-SFT",
        "allenai/Llama-3.1-Tulu-3-8B-DPO",
        "allenai/Llama-3.1-Tulu-3-8B",
    ],
    "qwen2.5-7b": ["Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"],
    "llama3.1-8b": ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_presets_resolve(name):
    lad = load_ladder(preset=name)
    assert [c.model for c in lad.checkpoints] == EXPECTED[name]
    assert lad.checkpoints[0].stage == "base" and len({c.label for c in lad.checkpoints}) == len(lad.checkpoints)
    for c in lad.checkpoints:
        spec = parse_spec(c.model)  # resolves as a Hugging Face id (nothing downloaded)
        assert spec.kind == "hf" and spec.target == c.model


def test_every_shipped_preset_loads():
    assert set(EXPECTED) <= set(preset_names())
    for name in preset_names():
        load_ladder(preset=name)


@pytest.mark.parametrize(
    "data,needle",
    [
        (
            {
                "checkpoints": [
                    {"label": "a", "stage": "base", "model": "x"},
                    {"label": "a", "stage": "sft", "model": "y"},
                ]
            },
            "duplicate label 'a'",
        ),
        ({"checkpoints": [{"label": "a", "stage": "pretrain", "model": "x"}]}, "checkpoints[0].stage"),
        ({"checkpoints": [{"label": "a", "stage": "base", "modle": "x"}]}, "did you mean 'model'"),
        ({"checkpoints": []}, "non-empty list"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_ladders(data, needle):
    with pytest.raises(UserError, match=None) as e:
        ladder_from_dict(data, "l.yaml")
    assert needle in str(e.value) and "l.yaml" in str(e.value)


def test_ladder_command_on_tiny_checkpoints(tiny_ckpt, tmp_path, capsys):
    base = tiny_ckpt("llama", "digits", chat_template=True, seed=0)
    sft = tiny_ckpt("llama", "digits", chat_template=True, seed=1)
    f = tmp_path / "ladder.yaml"
    f.write_text(
        f"name: tiny\ncheckpoints:\n  - {{label: base, stage: base, model: '{base}'}}\n"
        f"  - {{label: sft, stage: sft, model: '{sft}'}}\n"
    )
    out = tmp_path / "run"
    th = tmp_path / "th.yaml"
    th.write_text("n_boot: 100\nn_perm: 100\n")
    args = [
        "ladder",
        str(f),
        "--task",
        "number_1_10,coin_flip",
        "--out",
        str(out),
        "--limit",
        "5",
        "--thresholds",
        str(th),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "base → sft" in printed
    stages = [line.split(" … ")[0] for line in captured.err.splitlines() if " … " in line]
    assert stages[:2] == [f"measure base [1/2] ({base})", f"measure sft [2/2] ({sft})"] and stages[2] == "analyze"
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert [c["label"] for c in written["ladder"]["checkpoints"]] == ["base", "sft"]
    assert written["measure"]["settings"]["limit"] == 5 and written["measure"]["tasks"] == ["number_1_10", "coin_flip"]
    assert written["thresholds"] == str(th) and (out / "crystallab.log").exists()
    a = json.loads((out / "analysis.json").read_text())
    assert [c["label"] for c in a["checkpoints"]] == ["base", "sft"]
    assert set(a["verdicts"]) == {"number_1_10", "coin_flip"}
    for v in a["verdicts"].values():
        assert v["settling"]["value"] == "inconclusive"  # two checkpoints: nothing after the SFT one
        assert v["liquid"]["value"] in ("holds", "fails", "inconclusive")
    # rerunning resumes: nothing is measured again
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert main(args) == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards


def test_run_ladder_is_the_library_function(tiny_ckpt, tmp_path):
    """The loop, the writer lock, the analysis and the report live in crystallab.ladder, not the CLI."""
    import io

    from crystallab.console import Console
    from crystallab.ladder import run_ladder
    from crystallab.measuring import MeasureConfig, MeasureSettings

    base = tiny_ckpt("llama", "digits", chat_template=True, seed=0)
    lad = ladder_from_dict({"checkpoints": [{"label": "a", "stage": "base", "model": str(base)}]})
    out = tmp_path / "r"
    th = tmp_path / "th.yaml"
    th.write_text("n_boot: 50\nn_perm: 50\n")
    cfg = MeasureConfig(model="", tasks=["coin_flip"], out=str(out), progress=False, settings=MeasureSettings(limit=2))
    stream = io.StringIO()
    console = Console(stream=stream, interactive=False)
    analysis, report = run_ladder(lad, cfg, thresholds=str(th), report=False, console=console)
    assert [c.label for c in analysis.checkpoints] == ["a"] and report is None
    assert "analyze … " in stream.getvalue() and (out / "analysis.json").exists()


def test_library_never_imports_the_cli():
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "crystallab"
    for f in src.rglob("*.py"):
        if "cli" not in f.relative_to(src).parts:
            assert "crystallab.cli" not in f.read_text(), f


def test_ladder_needs_a_source(capsys):
    assert main(["ladder", "--task", "coin_flip", "--out", "x"]) == 2
    assert "ladder file or --preset" in capsys.readouterr().err
    assert main(["ladder", "--preset", "olmo2-1", "--task", "coin_flip", "--out", "x"]) == 2
    assert "did you mean 'olmo2-1b'" in capsys.readouterr().err
