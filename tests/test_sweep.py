"""`crystallab ladder --ray`: a local Ray cluster on CPU, tiny checkpoints, one job per
(checkpoint, task), a worker that kills itself mid-job; the table equals a sequential run's."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from crystallab.errors import UserError
from crystallab.ladder import ladder_from_dict
from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure

TASKS = ["coin_flip", "number_1_10"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray") if os.environ.get("CI") is None else __import__("ray")
    from ray_faults import MARKER_ENV

    marker = tmp_path_factory.mktemp("fault") / "killed-once"
    here = os.path.dirname(__file__)
    env = {
        MARKER_ENV: str(marker),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
    }
    # the fault lives in the test, not in crystallab: a worker setup hook makes the first job that
    # writes a shard kill its own worker process (as an OOM kill or a lost node would)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env, "worker_process_setup_hook": "ray_faults.kill_after_first_shard"},
    )
    yield marker
    ray.shutdown()


def _table(path):
    t = pq.read_table(path / "distributions.parquet").to_pandas()
    return t.sort_values(["checkpoint_index", "task", "prompt_id", "option"]).reset_index(drop=True)


def test_ray_sweep_survives_a_killed_worker_and_matches_a_sequential_run(tiny_ckpt, tmp_path, ray_cluster):
    from crystallab.sweep import sweep_ladder

    lad = ladder_from_dict(
        {
            "name": "tiny",
            "checkpoints": [
                {
                    "label": "base",
                    "stage": "base",
                    "model": str(tiny_ckpt("llama", "digits", chat_template=True, seed=1)),
                },
                {"label": "sft", "stage": "sft", "model": str(tiny_ckpt("gpt2", "bpe", chat_template=True, seed=2))},
            ],
        }
    )
    base = MeasureConfig(
        model="", tasks=TASKS, out=str(tmp_path / "ray"), chunk=1, progress=False, settings=MeasureSettings(limit=2)
    )

    results = sweep_ladder(lad, base, num_cpus=1, max_retries=2, log=print)
    assert ray_cluster.exists(), "the fault hook did not fire: no worker was killed"
    killed_pid = int(ray_cluster.read_text())
    assert len(results) == len(lad.checkpoints) * len(TASKS)
    assert killed_pid not in {r["run"]["ray"]["pid"] for r in results}  # the killed job finished on another worker

    for c in lad.checkpoints:  # the same ladder, one checkpoint at a time, no Ray
        run_measure(replace(base, model=c.model, label=c.label, stage=c.stage, out=str(tmp_path / "seq")))
    ray_t, seq_t = _table(tmp_path / "ray"), _table(tmp_path / "seq")
    assert len(ray_t) == len(seq_t) > 0
    cols = [c for c in seq_t.columns if c != "prob"]
    assert ray_t[cols].equals(seq_t[cols])
    assert (ray_t.prob - seq_t.prob).abs().max() < 1e-9

    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert [(c["index"], c["label"]) for c in m["checkpoints"]] == [(0, "base"), (1, "sft")]
    assert all(c["info"].get("architecture") for c in m["checkpoints"])  # load info came back from the jobs
    assert len(m["runs"]) == 4 and all(
        r["throughput"]["prompts"] + r["throughput"]["skipped_prompts"] == 4 for r in m["runs"]
    )
    assert sorted(m["tasks"]) == TASKS

    # a rerun finds everything done
    again = sweep_ladder(lad, base, num_cpus=1, log=print)
    assert sum(r["run"]["throughput"]["prompts"] for r in again) == 0
    assert _table(tmp_path / "ray").equals(ray_t)


def test_ray_job_errors_come_back_as_one_line(tmp_path, ray_cluster):
    from crystallab.sweep import sweep_ladder

    lad = ladder_from_dict({"checkpoints": [{"label": "x", "stage": "base", "model": str(tmp_path / "missing-model")}]})
    base = MeasureConfig(
        model="", tasks=["coin_flip"], out=str(tmp_path / "r"), progress=False, settings=MeasureSettings(limit=1)
    )
    with pytest.raises(UserError, match="x/coin_flip: model not found"):
        sweep_ladder(lad, base, log=print)


def test_ray_cli_flag_parses():
    from crystallab.cli.main import build_parser

    args = build_parser().parse_args(
        ["ladder", "lad.yaml", "--task", "coin_flip", "--out", "o", "--ray", "--num-gpus", "1"]
    )
    assert args.ray == "" and args.num_gpus == 1.0
    args = build_parser().parse_args(["ladder", "lad.yaml", "--ray=auto", "--task", "coin_flip", "--out", "o"])
    assert args.ray == "auto"
