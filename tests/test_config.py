"""shared.config: provider choice, validation errors, secrets never shown."""

from __future__ import annotations

import pytest
from conftest import settings_from

from shared.config import ConfigError, FriendlyError, Secret, load_settings

KEY = "sk-test-1234567890abcdef"


@pytest.mark.parametrize(
    ("env", "provider"),
    [
        ({}, "local"),
        ({"OPENAI_API_KEY": KEY}, "openai"),
        ({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://localhost:11434/v1"}, "openai"),
        (
            {
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
                "AZURE_OPENAI_DEPLOYMENT": "gpt4o",
            },
            "azure",
        ),
        ({"AZURE_OPENAI_API_KEY": KEY}, "local"),  # a key without an endpoint is not enough
        (
            {
                "OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_ENDPOINT": "https://x",
            },
            "openai",
        ),
        ({"OPENAI_API_KEY": KEY, "GENAI_PROVIDER": "local"}, "local"),
        ({"GENAI_PROVIDER": "OpenAI", "OPENAI_API_KEY": KEY}, "openai"),
    ],
)
def test_provider_order(env: dict[str, str], provider: str) -> None:
    assert settings_from(env).provider == provider


def test_defaults() -> None:
    s = settings_from({})
    assert (s.local_host, s.local_port, s.openai_model, s.device) == (
        "127.0.0.1",
        8765,
        "gpt-4o-mini",
        "auto",
    )
    assert s.azure_api_version == "2024-10-21"
    assert s.local_engine in ("llamacpp", "transformers")


def test_secrets_are_masked_everywhere() -> None:
    s = settings_from({"OPENAI_API_KEY": KEY, "AZURE_OPENAI_API_KEY": KEY + "z"})
    for text in (repr(s), str(s), str(s.describe()), repr(s.openai_api_key), f"{s.openai_api_key}"):
        assert KEY not in text
    assert s.openai_api_key.reveal() == KEY
    assert repr(Secret("")) == "Secret('')" and not Secret("")


def test_forced_azure_names_missing_variables() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from({"GENAI_PROVIDER": "azure", "AZURE_OPENAI_API_KEY": KEY})
    msg = str(err.value)
    assert "AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_DEPLOYMENT are not set" in msg
    assert ".env" in msg and KEY not in msg and "\n" not in msg
    assert err.value._render_traceback_() == [f"ConfigError: {msg}"]  # one paragraph in Jupyter


def test_forced_openai_without_key() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        settings_from({"GENAI_PROVIDER": "openai"})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"GENAI_PROVIDER": "anthropic"}, "not a provider"),
        ({"LOCAL_ENGINE": "vllm"}, "LOCAL_ENGINE='vllm' is not supported"),
        ({"LOCAL_SERVER_PORT": "eighty"}, "not a port number"),
        ({"GENAI_DEVICE": "tpu"}, "GENAI_DEVICE"),
    ],
)
def test_bad_values_are_explained(env: dict[str, str], match: str) -> None:
    with pytest.raises(FriendlyError, match=match) as err:  # shown as one paragraph in Jupyter
        settings_from(env)
    assert type(err.value) is ConfigError and "\n" not in str(err.value)


def test_dotenv_is_read_and_environment_wins(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_MODEL=from-file\nGENAI_PROVIDER=\n")
    s = load_settings(environ={}, dotenv_path=env_file)
    assert (s.provider, s.openai_model, s.source) == ("openai", "from-file", "environment + .env")
    s = load_settings(environ={"OPENAI_MODEL": "from-env"}, dotenv_path=env_file)
    assert s.openai_model == "from-env"
    assert load_settings(environ={}, dotenv_path=env_file, use_dotenv=False).provider == "local"


def test_env_example_lists_every_variable_read() -> None:
    import re

    from shared.paths import repo_root

    source = (repo_root() / "shared" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z_]+)"', source)) | set(
        re.findall(r'env\["([A-Z_]+)"\]', source)
    )
    example = (repo_root() / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert read and read <= listed, f"missing from .env.example: {read - listed}"
