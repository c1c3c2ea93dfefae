"""shared.llm: one OpenAI-style API over a real local server, and clear errors for every failure.

The "OpenAI-compatible endpoint" branch is exercised for real: the official SDK, configured only
through OPENAI_BASE_URL + OPENAI_API_KEY, talks to a separately started local server. Tests that
use that server are ``slow`` (conftest marks them); the error paths run against tiny HTTP servers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import openai
import pytest
from conftest import settings_from

from shared import llm
from shared import server as local_server_module
from shared.models import ModelNotPreparedError
from shared.paths import cache_dir
from shared.processes import free_port, pid_alive

POEM = [
    {
        "role": "system",
        "content": "You are a poetic assistant, skilled in explaining complex "
        "programming concepts with creative flair.",
    },
    {
        "role": "user",
        "content": "Compose a poem that explains the concept of recursion in programming.",
    },
]
KEY = "sk-wrong-0123456789abcdef"


def test_poem_from_the_default_local_provider(local_server) -> None:
    s = settings_from({"LOCAL_SERVER_PORT": str(local_server.port)})
    assert s.provider == "local"
    client = llm.client(s)
    assert str(client.base_url).rstrip("/") == local_server.url
    reply = client.chat.completions.create(model=llm.model_name(s), messages=POEM, max_tokens=40)
    assert reply.choices[0].message.content.strip()
    assert 0 < reply.usage.completion_tokens <= 40


def test_poem_through_openai_base_url(local_server) -> None:
    s = settings_from(
        {
            "OPENAI_API_KEY": "not-needed",
            "OPENAI_BASE_URL": local_server.url,
            "OPENAI_MODEL": local_server.model,
        }
    )
    assert s.provider == "openai" and llm.model_name(s) == local_server.model
    client = llm.client(s)
    assert isinstance(client, openai.OpenAI) and not isinstance(client, openai.AzureOpenAI)
    chunks = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=llm.model_name(s), messages=POEM, max_tokens=30, stream=True
        )
        if c.choices
    ]
    assert len(chunks) > 3 and "".join(chunks).strip()


def test_langchain_chat_model_uses_the_same_server(local_server) -> None:
    s = settings_from({"LOCAL_SERVER_PORT": str(local_server.port)})
    model = llm.chat_model(s, max_tokens=20, temperature=0)
    answer = model.invoke("What is the capital of France? Answer in one word.")
    assert "Paris" in answer.content


def test_running_server_is_reused(local_server) -> None:
    s = settings_from({"LOCAL_SERVER_PORT": str(local_server.port)})
    assert llm.ensure_server(s).pid == local_server.pid
    assert llm.server_status(local_server.port).pid == local_server.pid


class _JSONHandler(BaseHTTPRequestHandler):
    """A tiny HTTP endpoint for the error paths: replies with JSON, logs nothing."""

    def _json(self, status: int, payload: dict) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(payload).encode())

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port in a thread; yield its OpenAI-style base URL."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()


class _Reject401(_JSONHandler):
    def _reply(self) -> None:
        error = {"message": "Incorrect API key provided: sk-wr***cdef."}
        error |= {"type": "invalid_request_error", "code": "invalid_api_key"}
        self._json(401, {"error": error})

    do_GET = do_POST = _reply


def test_wrong_key_gives_one_paragraph_with_the_fix() -> None:
    with _serving(_Reject401) as url:
        s = settings_from({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url})
        with pytest.raises(llm.ProviderError) as err:
            llm.client(s)
    msg = str(err.value)
    assert "rejected the API key (HTTP 401)" in msg and "OPENAI_API_KEY" in msg and url in msg
    assert KEY not in msg and "\n" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_unreachable_endpoint_is_explained() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    s = settings_from({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url})
    with pytest.raises(llm.ProviderError, match=r"Cannot reach http://127\.0\.0\.1:\d+/v1"):
        llm.client(s)


def test_azure_requests_are_shaped_for_deployments() -> None:
    s = settings_from(
        {
            "AZURE_OPENAI_API_KEY": KEY,
            "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "my-gpt4o",
            "AZURE_OPENAI_API_VERSION": "2024-10-21",
        }
    )
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"], seen["key"] = str(request.url), request.headers.get("api-key")
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "A poem."},
                    }
                ],
            },
        )

    client = llm.client(s, verify=False)
    assert isinstance(client, openai.AzureOpenAI) and llm.model_name(s) == "my-gpt4o"
    offline = client.with_options(http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    reply = offline.chat.completions.create(model=llm.model_name(s), messages=POEM)
    assert reply.choices[0].message.content == "A poem."
    assert seen["url"] == (
        "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/"
        "completions?api-version=2024-10-21"
    )
    assert seen["key"] == KEY and seen["body"]["messages"] == POEM
    lc = llm.chat_model(s)
    assert type(lc).__name__ == "AzureChatOpenAI" and lc.deployment_name == "my-gpt4o"


def test_port_taken_by_another_program() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(llm.PortInUseError, match=f"Port {port} .* LOCAL_SERVER_PORT"):
            llm.start_server(port=port, settings=settings_from({}))


def test_a_running_course_server_that_does_not_answer_is_reported(monkeypatch) -> None:
    """The state file names a live process (this one) but nothing answers on the port: the
    course waits, then says how to restart it, instead of blaming another program."""
    import os

    from shared import server

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        state = cache_dir("server") / f"server-{port}.json"  # where a course server is recorded
        state.write_text(
            json.dumps(
                {
                    "engine": "llamacpp",
                    "model": "m",
                    "source": "x.gguf",
                    "host": "127.0.0.1",
                    "port": port,
                    "pid": os.getpid(),
                    "log": "x.log",
                }
            )
        )
        monkeypatch.setattr(server, "BUSY_WAIT_S", 1.0)
        try:
            with pytest.raises(llm.ServerStartError, match="has not answered .* stop --port"):
                llm.start_server(port=port, settings=settings_from({}))
        finally:
            state.unlink()


@pytest.mark.slow  # starts a real `transformers serve`
def test_server_that_dies_shows_its_log(tmp_path) -> None:
    with pytest.raises(llm.ServerStartError, match="exited .* Last lines of") as err:
        llm.start_server(
            source=str(tmp_path),
            engine="transformers",
            port=free_port(),
            settings=settings_from({}),
            timeout=120,
        )
    assert "Unrecognized" in str(err.value) or "Error" in str(err.value)


def test_model_not_prepared(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path))
    s = settings_from({"LOCAL_ENGINE": "transformers", "LOCAL_SERVER_PORT": str(free_port())})
    with pytest.raises(ModelNotPreparedError, match="make lab"):
        llm.client(s)


def test_stop_stops_the_process(local_server) -> None:
    port = free_port()
    s = settings_from({"LOCAL_SERVER_PORT": str(port)})
    server = llm.start_server(source=local_server.source, engine=local_server.engine, settings=s)
    assert llm.server_status(port) is not None
    assert llm.stop_server(port) == [port]
    assert llm.server_status(port) is None and not pid_alive(server.pid)
    assert llm.stop_server(port) == []


def test_engine_without_source_serves_the_packaged_model_in_its_format(tmp_path) -> None:
    s = settings_from({"LOCAL_ENGINE": "transformers", "LOCAL_SERVER_PORT": str(free_port())})
    assert llm.model_name(s).endswith("SmolLM2-135M-Instruct")
    assert llm.model_name(settings_from({"LOCAL_ENGINE": "llamacpp"})) == llm.LOCAL_MODEL_ALIAS
    gguf = settings_from({"LOCAL_CHAT_MODEL": str(tmp_path / "x.gguf")})
    assert local_server_module.default_source(gguf)[0] == "transformers"  # not a file: a hub id


def test_a_running_server_with_another_engine_is_not_silently_reused(local_server) -> None:
    other = "transformers" if local_server.engine == "llamacpp" else "llamacpp"
    s = settings_from({"LOCAL_ENGINE": other, "LOCAL_SERVER_PORT": str(local_server.port)})
    with pytest.raises(llm.PortInUseError, match="python -m shared.llm stop --port"):
        llm.client(s)


class _Compatible(_JSONHandler):
    """An OpenAI-compatible endpoint that records each request body and answers "ok"."""

    bodies: list[dict] = []

    def do_GET(self) -> None:  # models.list(), the client's first check
        self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        _Compatible.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        choice = {"index": 0, "finish_reason": "stop"}
        choice["message"] = {"role": "assistant", "content": "ok"}
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "m"}
        self._json(200, {**reply, "choices": [choice]})


def test_chat_model_sends_max_tokens_to_compatible_servers() -> None:
    """LangChain writes a limit as max_completion_tokens, which llama.cpp & co. ignore."""
    _Compatible.bodies.clear()
    with _serving(_Compatible) as url:
        s = settings_from({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": url, "OPENAI_MODEL": "m"})
        model = llm.chat_model(s, max_tokens=5, temperature=0, extra_body={"top_k": 1})
        assert model.invoke("hi").content == "ok"
    (body,) = _Compatible.bodies
    assert (body["max_tokens"], body["top_k"], body["temperature"]) == (5, 1, 0)
    assert "max_completion_tokens" not in body


def test_langchain_max_tokens_is_honoured_by_compatible_servers(local_server) -> None:
    s = settings_from({"LOCAL_SERVER_PORT": str(local_server.port)})
    model = llm.chat_model(s, max_tokens=5, temperature=0)
    reply = model.invoke("Write a long story about a dragon.")
    assert 0 < reply.usage_metadata["output_tokens"] <= 5


def test_a_stream_is_not_cut_short_by_another_request(local_server) -> None:
    """Two notebooks (or two chat users) share one server: a second request must not end a
    stream early (llama_cpp.server's interrupt_requests, off in the course's command)."""
    client = openai.OpenAI(base_url=local_server.url, api_key="x")
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    stream = client.chat.completions.create(
        model=local_server.model, messages=ask, max_tokens=24, temperature=0, stream=True
    )
    other = threading.Thread(
        target=client.chat.completions.create,
        kwargs={"model": local_server.model, "messages": ask, "max_tokens": 4},
    )
    other.start()
    chunks = [c for c in stream if c.choices and c.choices[0].delta.content]
    other.join()
    assert len(chunks) >= 20, f"the stream ended after {len(chunks)} chunks"
