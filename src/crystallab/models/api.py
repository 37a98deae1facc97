"""A model behind an OpenAI-compatible server: ``api:BASE_URL#MODEL[?key_env=NAME&server=...]``.

HTTP only: the backend offers two capabilities (models/base.py), and the scorers that use them
live in ``crystallab.scoring``:

``complete``      (TextSampler) N completions of a prompt under a decoding setting from
                  ``/v1/completions`` (raw prompts) or ``/v1/chat/completions`` (chat prompts: the
                  server applies its chat template). ``scoring.sample`` parses and counts them.
``top_logprobs``  (TopLogprobs) the top-k next-token logprobs after raw texts (``logprobs=k`` on
                  ``/v1/completions``); ``scoring.topk`` walks the answers with them.

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
from typing import Any, Sequence

from crystallab.errors import UserError, require
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.spec import ModelSpec, parse_spec

SERVERS = ("openai", "vllm", "llama.cpp", "transformers")


class ApiError(Exception):
    """A request that failed for good (after retries, or a 4xx that retrying cannot fix)."""


def sampling_fields(server: str, decoding: Decoding, max_tokens: int) -> dict[str, Any]:
    """Request fields for sampling under ``decoding`` and nothing else: its temperature, top-p,
    top-k and min-p, and, per server, the fields that switch off its own defaults (llama.cpp:
    top_k 40, min_p 0.05 and a repeat penalty; vLLM: the model's generation_config;
    transformers: greedy unless do_sample). OpenAI's API has no top-k or min-p: asking for them
    there is a UserError, never a setting silently dropped.

    >>> sampling_fields("llama.cpp", DEFAULT, 8)["top_k"], sampling_fields("openai", DEFAULT, 8).get("top_k")
    (0, None)
    >>> sampling_fields("vllm", Decoding(temperature=0.7, min_p=0.1), 8)["min_p"]
    0.1
    """
    d = decoding
    body: dict[str, Any] = {"temperature": d.temperature, "top_p": d.top_p, "max_tokens": max_tokens}
    if server == "vllm":
        body.update(top_k=d.top_k if d.top_k > 0 else -1, min_p=d.min_p, repetition_penalty=1.0)
    elif server == "llama.cpp":
        body.update(
            top_k=d.top_k, min_p=d.min_p, typical_p=1.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0
        )
    elif server == "transformers":
        gen = {
            "do_sample": True,
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "min_p": d.min_p,
            "max_new_tokens": max_tokens,
            "repetition_penalty": 1.0,
        }
        body["generation_config"] = json.dumps(gen)
    elif d.top_k > 0 or d.min_p > 0:
        raise UserError(
            f"the {server} API has no top-k or min-p; drop --top-k/--min-p, or name a server that has them "
            "(?server=vllm, llama.cpp or transformers)"
        )
    return body


class ApiBackend:
    """A served model: HTTP only. It samples texts (``complete``) and reads top-k logprobs
    (``top_logprobs``); ``scoring.sample`` and ``scoring.topk`` turn those into distributions."""

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
            self.top_logprobs_k = int(o.get("top_logprobs", 20))
            self.max_tokens = int(o.get("max_tokens", 16))
        except ValueError as exc:
            raise UserError(f"model spec {ms.raw}: option values must be numbers ({exc})") from exc
        if (
            self.concurrency < 1
            or self.timeout <= 0
            or self.retries < 0
            or self.top_logprobs_k < 1
            or self.max_tokens < 1
        ):
            raise UserError(
                f"model spec {ms.raw}: concurrency, timeout, top_logprobs and max_tokens must be positive, "
                f"retries not negative"
            )
        self.backoff = 0.5  # seconds before the first retry; doubles, capped at 30 s
        self._sem = threading.Semaphore(self.concurrency)
        self._client = httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_connections=self.concurrency))
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.device = "api"
        self.info: dict[str, Any] = {
            "model": ms.raw,
            "kind": "api",
            "base_url": self.base_url,
            "served_model": self.model,
            "server": self.server,
            "key_env": self.key_env,
            "key_sent": bool(key),
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "retries": self.retries,
            "top_logprobs": self.top_logprobs_k,
            "max_tokens": self.max_tokens,
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
                    raise UserError(
                        f"{url}: HTTP {r.status_code}: the server refused the request ({detail}); "
                        f"check the key in ${self.key_env}"
                    )
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

    # ---- the two capabilities: TextSampler and TopLogprobs ---------------------------------
    def complete(
        self,
        text: str,
        chat: bool,
        n: int,
        seed: int,
        max_tokens: int | None = None,
        decoding: Decoding = DEFAULT,
    ) -> tuple[list[str], int]:
        """Up to ``n`` completions of ``text`` sampled under ``decoding`` (default: pure ancestral
        sampling at temperature 1; a server may return fewer), and the tokens the server reported.
        ``chat`` sends the text as one user message to /v1/chat/completions; otherwise it is a raw
        /v1/completions prompt."""
        body = sampling_fields(self.server, decoding, max_tokens or self.max_tokens)
        body.update(n=n, seed=int(seed))
        if chat:
            data = self.post("chat/completions", {"messages": [{"role": "user", "content": text}], **body})
            texts = [(c.get("message") or {}).get("content") or "" for c in data.get("choices", [])]
        else:
            data = self.post("completions", {"prompt": text, **body})
            texts = [c.get("text") or "" for c in data.get("choices", [])]
        if not texts:
            raise ApiError("the server returned no choices")
        return texts, int((data.get("usage") or {}).get("total_tokens") or 0)

    def top_logprobs(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """The server's top-k next tokens after each raw text (one token each, concurrently)."""
        if len(texts) == 1:
            return [self._top_after(texts[0])]
        with ThreadPoolExecutor(max_workers=max(1, min(len(texts), self.concurrency))) as pool:
            return list(pool.map(self._top_after, texts))

    def _top_after(self, text: str) -> dict[str, float]:
        body = sampling_fields(self.server, DEFAULT, 1)
        body.update(prompt=text, logprobs=self.top_logprobs_k, n=1, seed=0)
        data = self.post("completions", body)
        lp = (data.get("choices") or [{}])[0].get("logprobs")
        top = (lp or {}).get("top_logprobs") or []
        if not top or not top[0]:
            raise UserError(
                f"{self.base_url} returned no logprobs for the model '{self.model}': "
                f"this server does not support --method logprobs-topk (use --method sample)"
            )
        return {str(t): float(v) for t, v in top[0].items() if v is not None and math.isfinite(float(v))}


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
