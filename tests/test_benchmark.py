"""Smoke test of benchmarks/scoring.py on a tiny model: it runs end to end and reports the keys
docs/performance.md describes (the figures themselves come from the real model)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "scoring.py"
HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


def _bench():
    spec = importlib.util.spec_from_file_location("crystallab_bench_scoring", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check(report: dict, tasks: list[str]) -> None:
    for key in (
        "speedup_vs_per_candidate",
        "speedup_vs_sampling",
        "token_overhead",
        "max_abs_diff",
        "peak_memory_mb",
        "targets",
        "workload",
        "overall",
    ):
        assert key in report, key
    assert set(report["per_task"]) == set(tasks)
    for row in report["per_task"].values():
        for key in (
            "exact_seconds",
            "per_candidate_seconds",
            "sampling_seconds_extrapolated",
            "exact_tokens_forwarded",
            "unique_prompt_trie_tokens",
            "per_candidate_tokens_forwarded",
            "speedup_vs_per_candidate",
            "speedup_vs_sampling",
            "token_overhead",
            "max_abs_diff",
        ):
            assert key in row, key
        assert row["exact_seconds"] > 0 and row["per_candidate_seconds"] > 0
        assert row["max_abs_diff"] <= 1e-4  # the two methods compute the same probabilities
        assert 1.0 <= row["token_overhead"] <= 1.1
        assert row["exact_tokens_forwarded"] < row["per_candidate_tokens_forwarded"]
    assert report["peak_memory_mb"]["exact"] > 0
    s = next(iter(report["sampling"]["tasks"].values()))
    assert s["samples_needed_total"] >= 1 and s["seconds_per_sample"] > 0 and s["timed"]


def test_benchmark_end_to_end(tiny_ckpt, tmp_path):
    """The real driver: every method in its own subprocess, JSON written."""
    ckpt = tiny_ckpt("llama", "digits", chat_template=True)
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(BENCH),
        "--model",
        str(ckpt),
        "--tasks",
        "number_1_10,coin_flip",
        "--raw",
        "2",
        "--chat",
        "1",
        "--repeat",
        "1",
        "--sample-n",
        "8",
        "--pc-prompts",
        "2",
        "--lm-eval",
        "both" if HAS_LM_EVAL else "none",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    _check(report, ["number_1_10", "coin_flip"])
    assert "speedup_vs_per_candidate" in proc.stdout and "max_abs_diff" in proc.stdout
    if HAS_LM_EVAL:  # lm-eval's own log-likelihoods agree with the re-implementation's
        for row in report["per_task"].values():
            assert row["lm_eval_vs_reimpl_max_abs_loglik_diff"] < 1e-3
            assert row["lm_eval_default_vs_reimpl_max_abs_loglik_diff"] < 1e-3


def test_benchmark_random_config(tiny_ckpt, tmp_path):
    """--random-config: a model with random weights from a config.json, in one process."""
    ckpt = tiny_ckpt("llama", "digits", chat_template=True)
    bench = _bench()
    out = tmp_path / "r.json"
    assert (
        bench.main(
            [
                "--random-config",
                str(ckpt / "config.json"),
                "--tasks",
                "coin_flip",
                "--raw",
                "2",
                "--chat",
                "1",
                "--repeat",
                "1",
                "--sample-n",
                "4",
                "--sample-prompts",
                "1",
                "--lm-eval",
                "none",
                "--in-process",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    _check(report, ["coin_flip"])
    assert report["workload"]["model"].startswith("random:")


@pytest.mark.parametrize("p,lo,hi", [([0.5, 0.5], 350, 450), ([1.0, 0.0], 1, 1), ([0.25] * 4, 1000, 1400)])
def test_samples_needed(p, lo, hi):
    assert lo <= _bench().samples_needed(p) <= hi
