"""Shared fixtures: settings built from a clean environment, and a real local server for tests."""

from __future__ import annotations

import os

import pytest

from shared import llm
from shared.config import Settings, load_settings

TEST_PORT = int(os.environ.get("GENAI_TEST_PORT", "8791"))


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
