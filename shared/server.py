"""The local OpenAI-compatible server behind the default provider: start, reuse, stop.

Two engines serve the same SmolLM2-135M-Instruct weights on 127.0.0.1 (README "Performance" has
the measurements behind the default):

* ``llamacpp`` (default): ``llama_cpp.server`` over the packaged GGUF, fast on a CPU, run as
  ``python -m shared.llama_serve`` (same arguments; a model that skips the prompt logits no
  request reads, see :mod:`shared.llama_serve`);
* ``transformers``: ``transformers serve`` over the converted folder, or any hub model / folder
  (``LOCAL_CHAT_MODEL``), e.g. the merged model from lesson 07.

A server is started on first use, recorded in the course cache (``server-<port>.json`` with its
pid, and ``server-<port>.log``), reused by every notebook, and stopped by
``python -m shared.llm stop`` (``make stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from shared.config import FriendlyError, Settings, load_settings
from shared.models import chat_model_source, smollm2_gguf_path
from shared.paths import cache_dir, configure_environment
from shared.processes import free_port, pid_alive

__all__ = [
    "LOCAL_MODEL_ALIAS",
    "LocalServer",
    "PortInUseError",
    "ServerStartError",
    "command_line",
    "default_source",
    "ensure_server",
    "log_tail",
    "served_name",
    "server_status",
    "start_server",
    "stop_server",
]

LOCAL_MODEL_ALIAS = "smollm2-135m-instruct"
START_TIMEOUT_S = 180.0
BUSY_WAIT_S = 60.0  # how long a running course server may take to answer before it counts as stuck


class PortInUseError(FriendlyError):
    """The local server's port is taken by another program."""


class ServerStartError(FriendlyError):
    """The local server exited or did not answer in time; the message ends with its log."""


@dataclass(frozen=True)
class LocalServer:
    """A running local OpenAI-compatible server: address, what it serves, its log and pid."""

    engine: str
    model: str  # the name to pass as ``model=`` in requests
    source: str  # the file or folder it serves
    host: str
    port: int
    pid: int
    log: str

    @property
    def url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:8765/v1``."""
        return f"http://{self.host}:{self.port}/v1"


# ---------------------------------------------------------------------------- local server
def _state_file(port: int) -> Path:
    return cache_dir("server") / f"server-{port}.json"


def _served_models(host: str, port: int, timeout: float = 2.0) -> list[str] | None:
    """Model ids from ``GET /v1/models``, or None when nothing OpenAI-like answers there."""
    try:
        r = httpx.get(f"http://{host}:{port}/v1/models", timeout=timeout)
        r.raise_for_status()
        return [m.get("id", "") for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _answers(host: str, port: int, patience: float) -> bool:
    """Whether the server answers within ``patience`` seconds: a busy server on a loaded CPU (a
    long generation for another notebook) can take a while to list its models."""
    deadline = time.monotonic() + patience
    while True:
        if _served_models(host, port, timeout=min(5.0, patience)) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _command(engine: str, source: str, host: str, port: int) -> tuple[list[str], str]:
    """The server command line and the model name clients must send."""
    # Decoding runs on half the cores (one on a 2-core machine): when the notebook kernel or another
    # program holds a core, two spinning decode threads stall each other (111 -> 25-29 tokens/s).
    # Reading the prompt uses every core: 1.8x faster while the lessons wait for the server (lesson
    # 03: 147 s instead of 230 s), bit-identical results, but it falls from 245 to 36 tokens/s when
    # another process computes at the same time. OMP_NUM_THREADS, when set, fixes both (1 on a busy
    # machine). README "Performance" has the measurements (`make bench`).
    cores = os.cpu_count() or 2
    threads = os.environ.get("OMP_NUM_THREADS") or str(min(8, max(1, cores // 2)))
    batch_threads = os.environ.get("OMP_NUM_THREADS") or str(min(8, cores))
    if engine == "llamacpp":
        cmd = [
            sys.executable,
            "-m",
            "shared.llama_serve",  # llama_cpp.server; reads prompts 1.2x faster (no unread logits)
            "--model",
            source,
            "--model_alias",
            LOCAL_MODEL_ALIAS,
            "--host",
            host,
            "--port",
            str(port),
            "--n_ctx",
            "8192",
            "--n_threads",
            threads,
            "--n_threads_batch",
            batch_threads,
            # llama_cpp.server otherwise ends a stream ("[DONE]") whenever another request comes
            # in: a second notebook or a chat user would cut the first reply short.
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]
        return cmd, LOCAL_MODEL_ALIAS
    if engine in ("transformers", "transformers-compile"):
        exe = Path(sys.executable).with_name("transformers")
        cmd = [
            "env",  # torch reads its thread count from the environment only
            f"OMP_NUM_THREADS={threads}",
            str(exe) if exe.exists() else "transformers",
            "serve",
            source,
            "--host",
            host,
            "--port",
            str(port),
        ]
        if engine == "transformers-compile":  # static KV cache + torch.compile (make bench)
            cmd.append("--compile")
        return cmd, source
    raise ValueError(
        f"unknown engine {engine!r}; use 'llamacpp', 'transformers' or 'transformers-compile'"
    )


def command_line(server: LocalServer) -> list[str]:
    """The command that runs ``server`` (run it in a terminal to serve the model yourself)."""
    return _command(server.engine, server.source, server.host, server.port)[0]


def default_source(settings: Settings) -> tuple[str, str]:
    """(engine, source) of the configured local model: ``LOCAL_CHAT_MODEL`` or the packaged one."""
    if settings.local_chat_model:
        src = chat_model_source(settings.local_chat_model)
        if src.endswith(".gguf") and Path(src).is_file():
            return "llamacpp", src
        return "transformers", src  # a hub id or a Hugging Face folder
    if settings.local_engine == "transformers":
        return "transformers", chat_model_source(None)
    return "llamacpp", str(smollm2_gguf_path())


def served_name(settings: Settings) -> str:
    """The ``model=`` name the configured local server answers to."""
    engine, source = default_source(settings)
    return LOCAL_MODEL_ALIAS if engine == "llamacpp" else source


def _read_state(port: int) -> LocalServer | None:
    path = _state_file(port)
    try:
        return LocalServer(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def start_server(
    source: str | None = None,
    engine: str | None = None,
    port: int | None = None,
    host: str | None = None,
    settings: Settings | None = None,
    timeout: float = START_TIMEOUT_S,
) -> LocalServer:
    """Start (or reuse) a local OpenAI-compatible server and wait until it answers.

    With no arguments it serves the configured local model on ``LOCAL_SERVER_PORT``. Pass a GGUF
    file (engine ``llamacpp``) or a Hugging Face folder / hub id (engine ``transformers``) to
    serve something else, e.g. a fine-tuned model on another port.
    """
    configure_environment()  # the server process writes its caches into the course's folder
    s = settings or load_settings()
    if source is None and engine is None:
        engine, source = default_source(s)
    elif source is None:  # an engine was asked for: serve the packaged model in its format
        source = str(smollm2_gguf_path()) if engine == "llamacpp" else chat_model_source(None)
    engine = engine or ("llamacpp" if str(source).endswith(".gguf") else "transformers")
    host = host or s.local_host
    port = port or s.local_port
    cmd, name = _command(engine, str(source), host, port)

    state = _read_state(port)
    if state and pid_alive(state.pid) and not _answers(host, port, BUSY_WAIT_S):
        raise ServerStartError(
            f"The course's server on port {port} (pid {state.pid}) is running but has not "
            f"answered for {BUSY_WAIT_S:.0f}s. If it stays so, restart it: "
            f"`python -m shared.llm stop --port {port}`, then re-run this cell."
        )
    if state and pid_alive(state.pid):
        if state.source == str(source) and state.engine == engine:
            return state  # reuse the running server across notebooks
        raise PortInUseError(
            f"The course's server on port {port} is serving {state.source} ({state.engine}), "
            f"not {source} ({engine}). Stop it with `python -m shared.llm stop --port {port}` "
            "or choose another port."
        )
    try:
        free_port(host, port)
    except OSError:
        raise PortInUseError(
            f"Port {port} on {host} is already used by another program, so the local model "
            f"server cannot start there. Set LOCAL_SERVER_PORT to a free port in .env (e.g. "
            f"{port + 1}), or stop the program using it (`lsof -i :{port}` shows which)."
        ) from None

    log = cache_dir("server") / f"server-{port}.log"
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    if engine == "transformers" and not Path(str(source)).exists():
        env.pop("HF_HUB_OFFLINE")  # a hub id: let the server download it (needs the internet)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LocalServer(engine, name, str(source), host, port, proc.pid, str(log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(
                f"The local {engine} server exited (code {proc.returncode}) before it answered. "
                f"Last lines of {log}:\n{log_tail(log)}"
            )
        if _served_models(host, port, timeout=1.0) is not None:
            _state_file(port).write_text(json.dumps(asdict(server), indent=2))
            return server
        time.sleep(0.3)
    _kill(proc.pid)
    raise ServerStartError(
        f"The local {engine} server did not answer within {timeout:.0f}s and was stopped. "
        f"Last lines of {log}:\n{log_tail(log)}"
    )


def ensure_server(settings: Settings | None = None) -> LocalServer:
    """The configured local server, started if it is not running yet."""
    return start_server(settings=settings)


def _kill(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_server(port: int | None = None, all_ports: bool = False) -> list[int]:
    """Stop the course's server on ``port`` (default: the configured one), or all of them."""
    files = (
        sorted(cache_dir("server").glob("server-*.json"))
        if all_ports
        else [_state_file(port or load_settings().local_port)]
    )
    stopped = []
    for path in files:
        try:
            state = LocalServer(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if pid_alive(state.pid):
            _kill(state.pid)
            stopped.append(state.port)
        path.unlink(missing_ok=True)
    return stopped


def server_status(port: int | None = None) -> LocalServer | None:
    """The running course server on ``port``, or None."""
    state = _read_state(port or load_settings().local_port)
    if state and pid_alive(state.pid) and _served_models(state.host, state.port) is not None:
        return state
    return None
