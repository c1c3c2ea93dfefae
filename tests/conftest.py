"""Shared fixtures: settings built from a clean environment, a real local server, the real model.

The course cache is applied first, as every notebook's setup cell does, so the libraries imported
by the tests find their caches there (``import shared`` itself changes nothing).

Tests that use the real server or the real model (the ``local_server`` and ``chat`` fixtures) are
marked ``slow`` here; tests that start a server or load a model themselves carry the mark in
their own file. ``pytest -m "not slow"`` runs the fast tests only; a plain ``pytest`` (and
``make test``) runs everything.
"""

from __future__ import annotations

import os

import pytest

from shared import llm, paths
from shared.config import Settings, load_settings
from shared.processes import free_port

paths.configure_environment()  # before any test module imports transformers & co.

#: the test server's port: GENAI_TEST_PORT, or a free one, so two test runs never share a server.
TEST_PORT = int(os.environ.get("GENAI_TEST_PORT") or free_port())
#: fixtures that start the real server or load the real model: their tests are ``slow``.
SLOW_FIXTURES = {"local_server", "chat"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def settings_from(env: dict[str, str]) -> Settings:
    """Settings from exactly ``env`` (no .env file, no process environment)."""
    return load_settings(environ=env, use_dotenv=False)


@pytest.fixture(scope="session")
def local_server():
    """A real OpenAI-compatible server over the packaged model on a test port, stopped after."""
    settings = settings_from({"LOCAL_SERVER_PORT": str(TEST_PORT)})
    server = llm.start_server(settings=settings)
    yield server
    llm.stop_server(TEST_PORT)


@pytest.fixture(scope="session")
def chat():
    """``(tokenizer, model)``: the packaged SmolLM2 in-process on the CPU, loaded once."""
    import torch

    from shared.models import load_chat_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 decoding: one thread is as fast, and steady on a busy CPU
    yield load_chat_model(device="cpu")
    torch.set_num_threads(threads)
