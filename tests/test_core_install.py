"""The slim core install: `pip install crystallab` with no extras, in a second venv without torch.

The venv is built once per module from a snapshot of this repository (non-editable, no extras;
pip takes the wheels from its cache). In it: `import torch` fails, `analyze` and `report` work on
a copy of the checked-in results folder tests/data/small-results, `measure --model api:...`
samples from a real `transformers serve` on loopback (the server runs in this venv, which has
transformers; only the client runs in the core venv), and a model that needs the hf extra is one
line naming `pip install 'crystallab[hf]'`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servers import transformers_serve

ROOT = Path(__file__).resolve().parents[1]
SMALL = Path(__file__).resolve().parent / "data" / "small-results"
FAST = "n_boot: 100\nn_perm: 100\n"  # the same verdicts in seconds instead of half a minute
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")


def _env(tmp: Path) -> dict[str, str]:
    """This process's environment less anything that would point the core venv at ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(tmp / "mpl"),
        TOKENIZERS_PARALLELISM="false",
        CRYSTALLAB_CACHE=str(tmp / "cache"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _snapshot(dest: Path) -> Path:
    """What pip needs to build the package (pyproject, README, src/), copied out of the work tree so
    the build writes no build/ or egg-info into it and installs exactly the files of this checkout."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    return dest


class Core:
    """The core venv: ``run(*args)`` runs a program from its bin/ in a scratch folder."""

    def __init__(self, venv: Path, tmp: Path) -> None:
        self.venv, self.tmp, self.env = venv, tmp, _env(tmp)

    def run(self, exe: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``venv/bin/EXE ARGS`` with stdout and stderr captured as text."""
        return subprocess.run(
            [str(self.venv / "bin" / exe), *args],
            check=False,
            cwd=self.tmp,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def crystallab(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The core venv's `crystallab` command."""
        return self.run("crystallab", *args, timeout=timeout)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    """A fresh venv with `pip install <this checkout>` and nothing else (about a minute, cached wheels)."""
    base = tmp_path_factory.mktemp("core-install")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _env(base) | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(_snapshot(base / "src-copy"))]
    pip = subprocess.run(
        cmd, check=False, env=env, text=True, capture_output=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert pip.returncode == 0, f"pip install of the core failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    work = base / "work"
    work.mkdir()
    return Core(venv, work)


@pytest.fixture(scope="module")
def server(tiny_ckpt: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`transformers serve` (this venv) on a tiny chat-template Llama: (base URL, model dir)."""
    model = tiny_ckpt("llama", "digits", chat_template=True, seed=5)
    with transformers_serve(model, tmp_path_factory.mktemp("core-logs") / "serve.log") as url:
        yield url, model


def test_core_has_no_torch_and_imports_light(core: Core) -> None:
    """torch and the other heavy libraries are absent; `import crystallab`, the task suite and
    `crystallab tasks` work from the installed (non-editable) package."""
    r = core.run("python", "-c", "import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    probe = (
        "import importlib.util as u, json, sys, crystallab; crystallab.load_task('coin_flip'); "
        f"print(json.dumps([crystallab.__file__, [m for m in {HEAVY!r} if u.find_spec(m)], "
        f"[m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    r = core.run("python", "-c", probe)
    assert r.returncode == 0, r.stderr
    where, installed, imported = json.loads(r.stdout)
    assert str(core.venv) in where and str(ROOT / "src") not in where
    assert installed == [] and imported == []
    r = core.crystallab("tasks")
    assert r.returncode == 0 and "coin_flip" in r.stdout, r.stderr


def test_core_analyze_and_report_a_results_folder(core: Core, tmp_path: Path) -> None:
    """`crystallab analyze` and `crystallab report` on a copy of the checked-in results folder."""
    runs = shutil.copytree(SMALL, tmp_path / "small-results-copy")
    th = tmp_path / "thresholds.yaml"
    th.write_text(FAST)
    r = core.crystallab("analyze", str(runs), "--thresholds", str(th))
    assert r.returncode == 0, r.stderr
    assert (runs / "analysis.json").is_file()
    assert "nucleation holds" in " ".join(r.stdout.split()), r.stdout
    r = core.crystallab("report", str(runs))
    assert r.returncode == 0, r.stderr
    html = runs / "report.html"
    assert html.is_file() and html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()


def test_core_measures_a_served_model(core: Core, server: tuple[str, Path], tmp_path: Path) -> None:
    """`measure --model api:...` from the core venv against a real OpenAI-compatible server."""
    import pyarrow.parquet as pq

    url, model = server
    out = tmp_path / "api-runs"
    spec = f"api:{url}#{model}?server=transformers&max_tokens=6&concurrency=2"
    r = core.crystallab(
        "measure",
        "--model",
        spec,
        "--method",
        "sample",
        "--samples",
        "4",
        "--limit",
        "2",
        "--task",
        "number_1_10",
        "--out",
        str(out),
        "--label",
        "served",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    t = pq.read_table(out / "distributions.parquet").to_pandas()
    assert set(t.method) == {"sample"} and set(t.checkpoint) == {"served"} and set(t.task) == {"number_1_10"}
    assert t.prompt_id.nunique() >= 2 and (t.groupby("prompt_id").prob.sum() - 1).abs().max() < 1e-6
    info = json.loads((out / "manifest.json").read_text())["checkpoints"][0]["info"]
    assert info["kind"] == "api"


def test_core_names_the_missing_extra_in_one_line(core: Core, tmp_path: Path) -> None:
    """A model that needs the hf extra: exit 2 and one stderr line saying what to install."""
    for model in ("builtin:gemma-3-270m", "gpt2"):
        r = core.crystallab("measure", "--model", model, "--task", "coin_flip", "--out", str(tmp_path / "x"))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (model, r.stderr)
        assert lines[0].startswith("crystallab: error: ") and "pip install 'crystallab[hf]'" in lines[0], lines
