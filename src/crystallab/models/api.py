"""A model behind an OpenAI-compatible server: ``api:BASE_URL#MODEL[?key_env=NAME&server=...]``.

Two methods:

``sample``         N completions per prompt at temperature 1 from ``/v1/completions`` (raw
                   prompts) or ``/v1/chat/completions`` (chat prompts: the server applies its
                   chat template), parsed with the task's text parser. A server that ignores
                   ``n`` (``transformers serve``) is asked again until N completions are in.
``logprobs-topk``  an approximate exact mode for raw prompts, from the top-k next-token logprobs
                   the server returns (``logprobs=k`` on ``/v1/completions``). The answer strings
                   are walked as text: every top-k token that continues an answer is queried
                   again, one position deeper, until the answer is complete and the next token
                   closes it (a token starting with a character that is not a letter or digit,
                   or EOS). Option probabilities are lower bounds; ``uncovered`` is an upper
                   bound on what they miss: the sum, over every queried position, of the path's
                   probability times the mass outside the top-k list there (divided by W when
                   the prompt ends with blanks, see ``topk_walk``).

The API key is read from the environment variable the spec names (``key_env``, default
``OPENAI_API_KEY``; none is sent when it is unset) and lives only in the request headers: it is
never part of ``info`` (the manifest), rows, failure records or messages.

Requests retry with exponential backoff (honouring ``Retry-After``) on 429, 5xx, timeouts and
dropped connections; at most ``concurrency`` are in flight. A prompt whose requests still fail
comes back as an exception, which ``measure`` records in DIR/failures/ and measures again on the
next run. Authentication errors (401/403) and an unknown endpoint or model (404) stop the run.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from crystallab.errors import UserError, require
from crystallab.models.spec import ModelSpec, parse_spec
from crystallab.models.text import MAX_DRAWS, is_boundary_text, next_draws, split_blank_tail, strip_lead

SERVERS = ("openai", "vllm", "llama.cpp", "transformers")


class ApiError(Exception):
    """A request that failed for good (after retries, or a 4xx that retrying cannot fix)."""


@dataclass
class PromptResult:
    probs: np.ndarray  # K options, then ⊥
    completions: list[str] = field(default_factory=list)
    parsed: list[int | None] = field(default_factory=list)
    uncovered: float | None = None  # logprobs-topk: upper bound on the option mass not seen
    tokens: int = 0  # prompt + completion tokens the server reported


def sampling_fields(server: str, temperature: float, max_tokens: int) -> dict[str, Any]:
    """Request fields for pure ancestral sampling: temperature, no top-p, and, per server, the
    fields that switch off its own truncation defaults (llama.cpp: top_k 40, min_p 0.05 and a
    repeat penalty; vLLM: the model's generation_config; transformers: greedy unless do_sample).

    >>> sampling_fields("llama.cpp", 1.0, 8)["top_k"], sampling_fields("openai", 1.0, 8).get("top_k")
    (0, None)
    """
    body: dict[str, Any] = {"temperature": temperature, "top_p": 1.0, "max_tokens": max_tokens}
    if server == "vllm":
        body.update(top_k=-1, min_p=0.0, repetition_penalty=1.0)
    elif server == "llama.cpp":
        body.update(top_k=0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    elif server == "transformers":
        gen = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0, "max_new_tokens": max_tokens, "repetition_penalty": 1.0}
        body["generation_config"] = json.dumps(gen)
    return body


def topk_walk(prompt: str, answers: Sequence[tuple[int, str]], n_options: int, top_logprobs) -> tuple[np.ndarray, float, int]:
    """Option probabilities (K, then ⊥), the uncovered-mass bound and the number of distinct
    texts queried, from ``top_logprobs(texts) -> [{token_text: logprob}, ...]`` (the server's
    top-k after each text; one level of the walk is asked at once).

    The prompt's trailing spaces and tabs ``w`` move into the answers, as in the exact scorer,
    and the answers are conditioned on the text after ``c̄`` starting with ``w``: with ``Wt``
    that event's mass among the walked paths and ``Uw`` the mass outside the top-k lists while
    ``w`` is being written, the true W lies in ``[Wt, Wt + Uw]``, so options are divided by
    ``Wt + Uw`` (still lower bounds) and ``uncovered`` bounds the rest: ``(N + U) / Wt - sum``.

    >>> table = {"Q:": {" a": math.log(0.5), " b": math.log(0.3), "\\n": math.log(0.1)},
    ...          "Q: a": {"\\n": math.log(0.9), "x": math.log(0.05)}, "Q: b": {".": math.log(0.6)}}
    >>> probs, unc, q = topk_walk("Q: ", [(0, "a"), (0, " a"), (1, "b"), (1, " b")], 2, lambda ts: [table[t] for t in ts])
    >>> [round(float(x), 4) for x in probs], round(unc, 4), q
    ([0.5, 0.2, 0.3], 0.3937, 3)

    A newline stays in the context (no lead, W = 1):

    >>> table = {"Q:\\n": {"a": math.log(0.5), "b": math.log(0.25)},
    ...          "Q:\\na": {",": 0.0}, "Q:\\nb": {"c": 0.0}}
    >>> probs, unc, q = topk_walk("Q:\\n", [(0, "a"), (1, "b")], 2, lambda ts: [table[t] for t in ts])
    >>> [round(float(x), 4) for x in probs], round(unc, 4), q
    ([0.5, 0.0, 0.5], 0.25, 3)
    """
    ctx, lead = split_blank_tail(prompt)
    texts: dict[str, int] = {}
    for k, s in answers:
        a = lead + s
        if texts.setdefault(a, k) != k:
            raise UserError(f"surface forms collide: {a!r} names two options")
    probs = np.zeros(n_options + 1)
    uncovered = 0.0
    lead_mass, lead_unc = (0.0, 0.0) if lead else (1.0, 0.0)  # Wt, Uw
    queried: set[str] = set()
    frontier: list[tuple[str, float]] = [("", 0.0)]
    while frontier:
        # the same text reached through two tokenizations is one node: add up its path mass
        merged: dict[str, float] = {}
        for s, lp in frontier:
            merged[s] = float(np.logaddexp(merged[s], lp)) if s in merged else lp
        frontier = list(merged.items())
        nxt: list[tuple[str, float]] = []
        results = top_logprobs([ctx + s for s, _ in frontier])
        queried.update(s for s, _ in frontier)
        for (s, lp), top in zip(frontier, results):
            if not top:
                raise ApiError("the server returned no top logprobs")
            covered = sum(math.exp(v) for v in top.values())
            miss = math.exp(lp) * max(0.0, 1.0 - covered)
            uncovered += miss
            writing = len(s) < len(lead)  # s is then a proper prefix of w: every answer starts with w
            lead_unc += miss if writing else 0.0
            for t, lt in top.items():
                p = math.exp(lp + lt)
                s2 = s + t
                if writing and s2.startswith(lead):
                    lead_mass += p
                if t and any(a.startswith(s2) for a in texts):
                    nxt.append((s2, lp + lt))
                    continue
                # the longest answer that s2 completes and that a boundary character then closes
                best = max((a for a in texts if len(a) >= len(s) and s2.startswith(a) and (len(s2) == len(a) and not t or len(s2) > len(a) and is_boundary_text(s2[len(a) :]))), key=len, default=None)
                if best is not None and best:
                    probs[texts[best]] += p
        frontier = nxt
    found = probs[:n_options].sum()
    probs[:n_options] /= max(lead_mass + lead_unc, 1e-300)  # found is 0 when both are
    total = probs[:n_options].sum()
    probs[n_options] = max(0.0, 1.0 - total)
    bound = (found + uncovered) / lead_mass - total if lead_mass > 0 else 1.0
    return probs, float(min(max(bound, 0.0), 1.0)), len(queried)


class ApiBackend:
    """A served model. Its ``measure_prompts`` returns one PromptResult (or the exception that
    made the prompt fail) per prompt."""

    def __init__(self, spec: str | ModelSpec):
        httpx = require("httpx", "api")
        ms = parse_spec(spec) if isinstance(spec, str) else spec
        if ms.kind != "api":
            raise UserError(f"not an api: model spec: {ms.raw}")
        o = ms.opts
        self.spec = ms
        self.base_url, self.model = ms.target, ms.model
        self.key_env = o.get("key_env", "OPENAI_API_KEY")
        key = os.environ.get(self.key_env)
        if "key_env" in o and not key:
            raise UserError(f"the API key variable {self.key_env} (key_env in the model spec) is not set")
        self.server = o.get("server", "openai")
        if self.server not in SERVERS:
            raise UserError(f"model spec option server={self.server}: use one of {', '.join(SERVERS)}")
        try:
            self.concurrency = int(o.get("concurrency", 8))
            self.timeout = float(o.get("timeout", 120))
            self.retries = int(o.get("retries", 6))
            self.top_logprobs = int(o.get("top_logprobs", 20))
            self.max_tokens = int(o.get("max_tokens", 16))
        except ValueError as exc:
            raise UserError(f"model spec {ms.raw}: option values must be numbers ({exc})") from exc
        if self.concurrency < 1 or self.timeout <= 0 or self.retries < 0 or self.top_logprobs < 1 or self.max_tokens < 1:
            raise UserError(f"model spec {ms.raw}: concurrency, timeout, top_logprobs and max_tokens must be positive, retries not negative")
        self.backoff = 0.5  # seconds before the first retry; doubles, capped at 30 s
        self._sem = threading.Semaphore(self.concurrency)
        self._client = httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_connections=self.concurrency))
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.device = "api"
        self.info: dict[str, Any] = {
            "model": ms.raw, "kind": "api", "base_url": self.base_url, "served_model": self.model, "server": self.server,
            "key_env": self.key_env, "key_sent": bool(key), "concurrency": self.concurrency, "timeout": self.timeout, "retries": self.retries,
            "top_logprobs": self.top_logprobs, "max_tokens": self.max_tokens,
        }

    @property
    def name(self) -> str:
        return self.spec.raw

    def render_chat(self, instruction: str) -> tuple[str, str]:
        """Chat prompts go to /v1/chat/completions as one user message; the server renders its
        own template, so the stored prompt text is the instruction and the template ``server``."""
        return instruction, "server"

    def close(self) -> None:
        self._client.close()

    # ---- HTTP ---------------------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/{path.lstrip('/')}"
        body = {"model": self.model, **body}
        for attempt in range(self.retries + 1):
            wait = None
            try:
                with self._sem:
                    r = self._client.post(url, json=body, headers=self._auth)
            except httpx.TimeoutException:
                err = f"timed out after {self.timeout:g} s"
            except httpx.TransportError as exc:
                err = f"connection failed ({type(exc).__name__})"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise ApiError(f"POST {path}: the server's answer is not JSON") from None
                detail = _detail(r)
                if r.status_code in (401, 403):
                    raise UserError(f"{url}: HTTP {r.status_code}: the server refused the request ({detail}); check the key in ${self.key_env}")
                if r.status_code == 404:
                    raise UserError(f"{url}: HTTP 404 ({detail}); check the base URL and the model name '{self.model}'")
                if r.status_code != 429 and r.status_code < 500:
                    raise ApiError(f"POST {path}: HTTP {r.status_code}: {detail}")
                err = f"HTTP {r.status_code}: {detail}"
                wait = _retry_after(r.headers.get("retry-after"))
            if attempt == self.retries:
                raise ApiError(f"POST {path}: {err} (gave up after {self.retries + 1} attempts)")
            time.sleep(wait if wait is not None else min(30.0, self.backoff * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    # ---- measuring ---------------------------------------------------------------------------
    def measure_prompts(self, task, prompts: Sequence, method: str, n: int, seeds: Sequence[int]) -> list[PromptResult | Exception]:
        """One result per prompt (its distribution), or the exception that made it fail."""
        if method == "logprobs-topk":
            if any(p.kind != "raw" for p in prompts):
                raise UserError("--method logprobs-topk scores raw prompts only; pass --prompts raw")
            fn = lambda p, s: self.score_topk(p.text, task)  # noqa: E731
        elif method == "sample":
            fn = lambda p, s: self.sample(p, task, n, s)  # noqa: E731
        else:
            raise UserError(f"an api: model cannot measure with --method {method}; use sample or logprobs-topk")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(fn, p, s) for p, s in zip(prompts, seeds)]
            out: list[PromptResult | Exception] = []
            for f in futures:
                try:
                    out.append(f.result())
                except UserError:
                    raise
                except Exception as exc:  # noqa: BLE001  (recorded as a failed prompt, retried on resume)
                    out.append(exc)
        return out

    def _request_choices(self, prompt, k: int, seed: int) -> tuple[list[str], int]:
        body = sampling_fields(self.server, 1.0, self.max_tokens)
        body.update(n=k, seed=int(seed))
        if prompt.kind == "chat":
            data = self.post("chat/completions", {"messages": [{"role": "user", "content": prompt.text}], **body})
            texts = [(c.get("message") or {}).get("content") or "" for c in data.get("choices", [])]
        else:  # c̄: sample() keeps the completions that write w, as the exact scorer conditions on it
            data = self.post("completions", {"prompt": split_blank_tail(prompt.text)[0], **body})
            texts = [c.get("text") or "" for c in data.get("choices", [])]
        if not texts:
            raise ApiError("the server returned no choices")
        return texts, int((data.get("usage") or {}).get("total_tokens") or 0)

    def sample(self, prompt, task, n: int, seed: int) -> PromptResult:
        """N completions of one prompt, parsed with the task's text parser. Raw prompts are sent
        as ``c̄`` (without their trailing spaces and tabs ``w``), and only the completions that
        start with ``w`` are kept, ``w`` stripped, as the local sampler does; more are asked for
        until N are kept, up to MAX_DRAWS * N."""
        from crystallab.models.hf import sample_seed
        from crystallab.scoring.sample import parse_answer

        lead = split_blank_tail(prompt.text)[1] if prompt.kind != "chat" else ""
        texts: list[str] = []
        tokens = drawn = 0

        def keep(got: list[str], tk: int) -> None:
            nonlocal tokens, drawn
            tokens, drawn = tokens + tk, drawn + len(got)
            for t in got:
                if (u := strip_lead(t, lead)) is not None and len(texts) < n:
                    texts.append(u)

        first, k_first = self._request_choices(prompt, n, seed)
        keep(first[:n], k_first)
        per = max(1, len(first))  # a server may cap n, or ignore it (transformers serve: one per request)
        j = 1
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            while len(texts) < n and (want := next_draws(n - len(texts), len(texts), drawn, MAX_DRAWS * n - drawn)):
                asks = [min(per, want - i * per) for i in range(min(-(-want // per), 4 * self.concurrency))]
                futs = [pool.submit(self._request_choices, prompt, k, sample_seed(seed, str(j + i))) for i, k in enumerate(asks)]
                j += len(asks)
                for f, k in zip(futs, asks):
                    got, tk = f.result()
                    keep(got[:k], tk)
        K = len(task.options)
        parsed = [parse_answer(t, task) for t in texts]
        counts = np.bincount([K if k is None else k for k in parsed], minlength=K + 1)
        probs = counts / counts.sum() if texts else np.eye(K + 1)[K]  # no completion wrote w: all ⊥
        return PromptResult(probs=probs, completions=texts, parsed=parsed, tokens=tokens)

    def top_logprobs_after(self, text: str) -> dict[str, float]:
        """The server's top-k next tokens after ``text`` (raw completion, one token)."""
        body = sampling_fields(self.server, 1.0, 1)
        body.update(prompt=text, logprobs=self.top_logprobs, n=1, seed=0)
        data = self.post("completions", body)
        lp = (data.get("choices") or [{}])[0].get("logprobs")
        top = (lp or {}).get("top_logprobs") or []
        if not top or not top[0]:
            raise UserError(f"{self.base_url} returned no logprobs for the model '{self.model}': this server does not support --method logprobs-topk (use --method sample)")
        return {str(t): float(v) for t, v in top[0].items() if v is not None and math.isfinite(float(v))}

    def score_topk(self, text: str, task) -> PromptResult:
        from crystallab.scoring.exact import answer_strings

        cache: dict[str, dict[str, float]] = {}

        def query(texts: list[str]) -> list[dict[str, float]]:
            new = [t for t in dict.fromkeys(texts) if t not in cache]
            if len(new) == 1:
                cache[new[0]] = self.top_logprobs_after(new[0])
            elif new:
                with ThreadPoolExecutor(max_workers=min(len(new), self.concurrency)) as pool:
                    cache.update(zip(new, pool.map(self.top_logprobs_after, new)))
            return [cache[t] for t in texts]

        probs, unc, q = topk_walk(text, answer_strings(task), len(task.options), query)
        return PromptResult(probs=probs, uncovered=unc, tokens=q)


def _detail(r) -> str:
    try:
        d = r.json()
        d = d.get("error", d) if isinstance(d, dict) else d
        d = d.get("message", d) if isinstance(d, dict) else d
        text = d if isinstance(d, str) else json.dumps(d)
    except ValueError:
        text = r.text
    return " ".join(text.split())[:200] or r.reason_phrase


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None
