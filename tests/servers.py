"""Real OpenAI-compatible servers for the api tests, started on loopback: `transformers serve`
and llama-cpp-python's server, plus a small fault-injecting proxy in front of them (429/5xx)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server did not answer {url} within {seconds} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve(cmd: list[str], health: str, log: Path, seconds: float = 180):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TOKENIZERS_PARALLELISM="false")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait(health, proc, log, seconds)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path):
    """`transformers serve MODEL_DIR` on a free loopback port; yields the base URL (…/v1)."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [
        str(exe),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    with serve(cmd, f"http://127.0.0.1:{port}/health", log):
        yield f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def llama_cpp_serve(gguf: Path, log: Path, n_ctx: int = 512):
    """llama-cpp-python's OpenAI-compatible server on a free loopback port; yields the base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "1",
        "--logits_all",
        "True",
    ]
    with serve(cmd, f"http://127.0.0.1:{port}/v1/models", log, seconds=240):
        yield f"http://127.0.0.1:{port}/v1"


class FaultProxy:
    """Forwards POSTs to a real server, except that it answers the first ``fail_first``
    requests with the statuses in ``statuses`` (cycled), and every request whose body contains
    ``poison`` with 500. Counts what it saw."""

    def __init__(self, upstream: str, statuses=(429, 503), fail_first: int = 0, poison: str | None = None):
        self.upstream, self.statuses, self.fail_first, self.poison = upstream.rstrip("/"), statuses, fail_first, poison
        self.seen = 0
        self.faults = 0
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    proxy.seen += 1
                    k = proxy.seen
                    proxy.headers.append(dict(self.headers))
                status = None
                if k <= proxy.fail_first:
                    status = proxy.statuses[(k - 1) % len(proxy.statuses)]
                elif proxy.poison and proxy.poison.encode() in body:
                    status = 500
                if status is not None:
                    with proxy.lock:
                        proxy.faults += 1
                    data = json.dumps({"error": {"message": f"injected {status}"}}).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                path = self.path[len("/v1") :] if self.path.startswith("/v1") else self.path
                req = urllib.request.Request(
                    proxy.upstream + path, data=body, headers={"Content-Type": "application/json"}, method="POST"
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        data, code = r.read(), r.status
                except urllib.error.HTTPError as e:
                    data, code = e.read(), e.code
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
