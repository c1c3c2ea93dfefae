"""Course settings: which provider answers, with which model, from the environment and ``.env``.

The provider is decided in this order (ARCHITECTURE.md):

1. ``GENAI_PROVIDER`` if set: ``local``, ``openai`` or ``azure``;
2. ``OPENAI_API_KEY`` (+ optional ``OPENAI_BASE_URL`` for any OpenAI-compatible endpoint, and
   ``OPENAI_MODEL``) -> ``openai``;
3. ``AZURE_OPENAI_API_KEY`` + ``AZURE_OPENAI_ENDPOINT`` -> ``azure``;
4. otherwise ``local``: a real OpenAI-compatible server on this machine (see :mod:`shared.llm`).

Embeddings are a setting of their own, independent of the chat provider: ``EMBEDDING_PROVIDER``
is ``local`` (the packaged MiniLM, the default even when an OpenAI key or base URL is set) or
``openai`` (any OpenAI-style ``/v1/embeddings`` endpoint: ``EMBEDDING_MODEL``, and
``EMBEDDING_BASE_URL`` / ``EMBEDDING_API_KEY``, which default to the ``OPENAI_`` ones).

Keys are held in :class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

from shared.paths import repo_root

__all__ = [
    "EMBEDDING_PROVIDERS",
    "PROVIDERS",
    "ConfigError",
    "FriendlyError",
    "Secret",
    "Settings",
    "load_settings",
]

PROVIDERS = ("local", "openai", "azure")
EMBEDDING_PROVIDERS = ("local", "openai")
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_LOCAL_PORT = 8765
LOCAL_ENGINES = ("llamacpp", "transformers")


class FriendlyError(RuntimeError):
    """An error whose message says what happened and what to do, shown without a traceback.

    In Jupyter the message is printed as one paragraph (IPython calls ``_render_traceback_``);
    elsewhere it is an ordinary exception.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ConfigError(FriendlyError):
    """The settings are incomplete or contradictory."""


class Secret:
    """A credential. Its ``repr``/``str`` are masked; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for handing to an SDK. Never print it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the course reads from the environment. Build it with :func:`load_settings`."""

    provider: str
    openai_api_key: Secret = field(default_factory=lambda: Secret(""))
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_embedding_model: str = "text-embedding-3-small"
    azure_api_key: Secret = field(default_factory=lambda: Secret(""))
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    azure_api_version: str = DEFAULT_AZURE_API_VERSION
    azure_embedding_deployment: str | None = None
    local_chat_model: str | None = None
    local_engine: str = "llamacpp"
    local_host: str = "127.0.0.1"
    local_port: int = DEFAULT_LOCAL_PORT
    device: str = "auto"
    source: str = "environment"
    #: ``local`` (packaged MiniLM) or ``openai`` (an OpenAI-style embeddings endpoint).
    embedding_provider: str = "local"
    #: the model asked for when ``embedding_provider`` is ``openai``.
    embedding_model: str = DEFAULT_OPENAI_EMBEDDING_MODEL
    embedding_base_url: str | None = None
    embedding_api_key: Secret = field(default_factory=lambda: Secret(""))

    def describe(self) -> dict[str, str]:
        """A printable summary, secrets masked (safe to show in a notebook)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = repr(value) if isinstance(value, Secret) else str(value)
        return out


def _read(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> dict[str, str]:
    merged = {k: v for k, v in dotenv.items() if v is not None}
    merged.update(environ)  # the real environment wins over .env
    return {k: v.strip() for k, v in merged.items() if isinstance(v, str) and v.strip()}


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | Path | None = None,
    use_dotenv: bool = True,
) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``) and the repository's ``.env``.

    Raises :class:`ConfigError` naming the missing variable when a forced provider lacks one.
    """
    env_file = Path(dotenv_path) if dotenv_path else repo_root() / ".env"
    from_file = dotenv_values(env_file) if use_dotenv and env_file.is_file() else {}
    env = _read(os.environ if environ is None else environ, from_file)
    source = f"environment + {env_file.name}" if from_file else "environment"

    forced = env.get("GENAI_PROVIDER", "").lower()
    if forced and forced not in PROVIDERS:
        raise ConfigError(
            f"GENAI_PROVIDER={forced!r} is not a provider this course knows. "
            f"Use one of {', '.join(PROVIDERS)}, or remove the line to let the course choose."
        )
    if forced:
        provider = forced
    elif env.get("OPENAI_API_KEY"):
        provider = "openai"
    elif env.get("AZURE_OPENAI_API_KEY") and env.get("AZURE_OPENAI_ENDPOINT"):
        provider = "azure"
    else:
        provider = "local"

    engine = env.get("LOCAL_ENGINE", "llamacpp").lower()
    if engine not in LOCAL_ENGINES:
        raise ConfigError(
            f"LOCAL_ENGINE={engine!r} is not supported. Use one of {', '.join(LOCAL_ENGINES)}."
        )
    try:
        port = int(env.get("LOCAL_SERVER_PORT", DEFAULT_LOCAL_PORT))
    except ValueError:
        raise ConfigError(
            f"LOCAL_SERVER_PORT={env['LOCAL_SERVER_PORT']!r} is not a port number; "
            "use a free port such as 8765."
        ) from None

    settings = Settings(
        provider=provider,
        openai_api_key=Secret(env.get("OPENAI_API_KEY", "")),
        openai_base_url=env.get("OPENAI_BASE_URL"),
        openai_model=env.get("OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
        openai_embedding_model=env.get("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"),
        azure_api_key=Secret(env.get("AZURE_OPENAI_API_KEY", "")),
        azure_endpoint=env.get("AZURE_OPENAI_ENDPOINT"),
        azure_deployment=env.get("AZURE_OPENAI_DEPLOYMENT"),
        azure_api_version=env.get("AZURE_OPENAI_API_VERSION", DEFAULT_AZURE_API_VERSION),
        azure_embedding_deployment=env.get("AZURE_OPENAI_EMBEDDING_DEPLOYMENT"),
        local_chat_model=env.get("LOCAL_CHAT_MODEL"),
        local_engine=engine,
        local_host=env.get("LOCAL_SERVER_HOST", "127.0.0.1"),
        local_port=port,
        device=env.get("GENAI_DEVICE", "auto").lower(),
        source=source,
        embedding_provider=env.get("EMBEDDING_PROVIDER", "local").lower(),
        embedding_model=env.get(
            "EMBEDDING_MODEL",
            env.get("OPENAI_EMBEDDING_MODEL", DEFAULT_OPENAI_EMBEDDING_MODEL),
        ),
        embedding_base_url=env.get("EMBEDDING_BASE_URL", env.get("OPENAI_BASE_URL")),
        embedding_api_key=Secret(env.get("EMBEDDING_API_KEY", env.get("OPENAI_API_KEY", ""))),
    )
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.provider == "openai" and not s.openai_api_key:
        raise ConfigError(
            "GENAI_PROVIDER is 'openai' but OPENAI_API_KEY is not set. Put your key in the "
            "repository's .env file (copy .env.example), or set GENAI_PROVIDER=local to use the "
            "local model. For a local OpenAI-compatible server that needs no key, any value "
            "works, e.g. OPENAI_API_KEY=not-needed."
        )
    if s.provider == "azure":
        missing = [
            name
            for name, value in (
                ("AZURE_OPENAI_API_KEY", s.azure_api_key),
                ("AZURE_OPENAI_ENDPOINT", s.azure_endpoint),
                ("AZURE_OPENAI_DEPLOYMENT", s.azure_deployment),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"GENAI_PROVIDER is 'azure' but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set. Find them in the Azure portal "
                "(your Azure OpenAI resource: 'Keys and Endpoint', and the deployment name under "
                "'Model deployments'), add them to .env (see .env.example), or set "
                "GENAI_PROVIDER=local to use the local model."
            )
    if s.embedding_provider not in EMBEDDING_PROVIDERS:
        raise ConfigError(
            f"EMBEDDING_PROVIDER={s.embedding_provider!r} is not supported. Use local (the "
            "packaged MiniLM, the default) or openai (an OpenAI-style embeddings endpoint)."
        )
    if s.embedding_provider == "openai" and not s.embedding_api_key:
        raise ConfigError(
            "EMBEDDING_PROVIDER is 'openai' but neither EMBEDDING_API_KEY nor OPENAI_API_KEY is "
            "set. Add one to .env (a local server that needs no key accepts any value, e.g. "
            "EMBEDDING_API_KEY=not-needed), or remove EMBEDDING_PROVIDER to use the local MiniLM."
        )
    if s.device not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"GENAI_DEVICE={s.device!r} must be one of auto, cpu, cuda, mps.")
