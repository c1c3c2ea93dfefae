"""One OpenAI-style API for every provider.

``client()`` returns the official ``openai.OpenAI`` (OpenAI or any OpenAI-compatible endpoint) or
``openai.AzureOpenAI``; ``chat_model()`` the matching LangChain chat model; ``model_name()`` the
model to ask for. With no key configured the provider is ``local``: a real OpenAI-compatible HTTP
server on 127.0.0.1 (:mod:`shared.server`), started on first use and reused by every notebook.

From a terminal: ``python -m shared.llm start | status | log | stop [--all]``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import openai

from shared.config import FriendlyError, Settings, load_settings
from shared.paths import cache_dir, configure_environment
from shared.server import (
    LOCAL_MODEL_ALIAS,
    LocalServer,
    PortInUseError,
    ServerStartError,
    ensure_server,
    log_tail,
    served_name,
    server_status,
    start_server,
    stop_server,
)

__all__ = [
    "LOCAL_MODEL_ALIAS",
    "LocalServer",
    "PortInUseError",
    "ProviderError",
    "ServerStartError",
    "chat_model",
    "client",
    "ensure_server",
    "explain",
    "model_name",
    "server_status",
    "start_server",
    "stop_server",
]


class ProviderError(FriendlyError):
    """The provider could not be used: bad key, unreachable endpoint, unknown model..."""


# ---------------------------------------------------------------------------- providers
_verified: set[tuple[str, str]] = set()


def explain(
    exc: BaseException, settings: Settings | None = None, url: str | None = None
) -> Exception:
    """Turn an ``openai`` SDK error into a :class:`ProviderError` that says what to do."""
    s = settings or load_settings()
    where = url or {
        "openai": s.openai_base_url or "https://api.openai.com/v1",
        "azure": s.azure_endpoint or "(no endpoint)",
    }.get(s.provider, "local server")
    key_var = "AZURE_OPENAI_API_KEY" if s.provider == "azure" else "OPENAI_API_KEY"
    if isinstance(exc, openai.AuthenticationError):
        msg = (
            f"The endpoint {where} rejected the API key (HTTP 401). Check {key_var} in your "
            ".env file: copy the key again from your provider's dashboard, with no quotes or "
            "spaces, and make sure it belongs to this endpoint. Then restart the kernel."
        )
    elif isinstance(exc, openai.PermissionDeniedError):
        msg = (
            f"The endpoint {where} refused access (HTTP 403): the key is valid but may not "
            "use this model or resource. Check the key's project and permissions."
        )
    elif isinstance(exc, openai.RateLimitError):
        msg = (
            f"The endpoint {where} says rate limit or quota exceeded (HTTP 429). Wait and "
            "retry, or check billing; GENAI_PROVIDER=local uses the free local model."
        )
    elif isinstance(exc, openai.NotFoundError):
        msg = (
            f"The endpoint {where} does not know the model or deployment {model_name(s)!r} "
            "(HTTP 404). Check OPENAI_MODEL / AZURE_OPENAI_DEPLOYMENT."
        )
    elif isinstance(exc, openai.APIConnectionError):
        msg = (
            f"Cannot reach {where} ({str(exc.__cause__ or exc).rstrip('.')}). Check the address "
            "(OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT), that the server is running and that "
            "this machine can reach it; unset them to use the local model."
        )
    else:
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    return ProviderError(msg)


def model_name(settings: Settings | None = None) -> str:
    """The ``model=`` value for the active provider (the Azure deployment name on Azure)."""
    s = settings or load_settings()
    if s.provider == "openai":
        return s.openai_model
    if s.provider == "azure":
        return s.azure_deployment or ""
    return served_name(s)


def client(settings: Settings | None = None, verify: bool = True) -> openai.OpenAI:
    """The official OpenAI client for the active provider.

    ``local`` starts (or reuses) the local server. For ``openai``/``azure``, ``verify`` makes one
    cheap ``models.list()`` call the first time, so a wrong key or address fails here with a
    clear message instead of deep inside a later cell.
    """
    s = settings or load_settings()
    if s.provider == "local":
        configure_environment()  # the server process inherits the course cache
        server = ensure_server(s)
        return openai.OpenAI(base_url=server.url, api_key="local-server-needs-no-key")
    if s.provider == "azure":
        c: openai.OpenAI = openai.AzureOpenAI(
            api_key=s.azure_api_key.reveal(),
            azure_endpoint=s.azure_endpoint or "",
            api_version=s.azure_api_version,
        )
    else:
        c = openai.OpenAI(api_key=s.openai_api_key.reveal(), base_url=s.openai_base_url)
    tag = (s.provider, str(c.base_url))
    if verify and tag not in _verified:
        try:
            c.with_options(max_retries=0, timeout=15).models.list()
        except (
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.APIConnectionError,
        ) as exc:
            raise explain(exc, s, str(c.base_url)) from None
        except openai.APIStatusError:
            pass  # some compatible servers have no /models; the first real call will tell
        _verified.add(tag)
    return c


def chat_model(settings: Settings | None = None, **kwargs: Any) -> Any:
    """The LangChain chat model for the active provider (``ChatOpenAI`` or ``AzureChatOpenAI``).

    ``kwargs`` go to the class (``temperature=0``, ``max_tokens=48``...). LangChain sends a
    ``max_tokens`` as OpenAI's newer ``max_completion_tokens``, which compatible servers such as
    llama.cpp's ignore (they would generate until the context is full); for them the limit
    travels as ``max_tokens`` in ``extra_body``, which the request carries as it is.
    """
    s = settings or load_settings()
    if s.provider == "azure":
        from langchain_openai import AzureChatOpenAI

        return AzureChatOpenAI(
            azure_deployment=s.azure_deployment,
            azure_endpoint=s.azure_endpoint,
            api_version=s.azure_api_version,
            api_key=s.azure_api_key.reveal(),
            **kwargs,
        )
    from langchain_openai import ChatOpenAI

    c = client(s)
    on_openai = s.provider == "openai" and not s.openai_base_url
    if not on_openai and kwargs.get("max_tokens") is not None:
        extra = {**(kwargs.pop("extra_body", None) or {}), "max_tokens": kwargs.pop("max_tokens")}
        kwargs["extra_body"] = extra
    return ChatOpenAI(model=model_name(s), base_url=str(c.base_url), api_key=c.api_key, **kwargs)


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m shared.llm", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["start", "stop", "status", "log"])
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--all", action="store_true", help="stop every course server")
    a = p.parse_args(argv)
    configure_environment()  # a server started from here writes into the course cache too
    try:
        if a.command == "start":
            srv = start_server(port=a.port)
            print(f"local server ({srv.engine}) at {srv.url}  model={srv.model}  pid={srv.pid}")
            print(f"log: {srv.log}")
        elif a.command == "stop":
            ports = stop_server(a.port, all_ports=a.all)
            print(
                f"stopped server(s) on port(s) {ports}" if ports else "no course server was running"
            )
        elif a.command == "status":
            srv = server_status(a.port)
            print(json.dumps(asdict(srv), indent=2) if srv else "no course server is running")
        else:
            port = a.port or load_settings().local_port
            print(log_tail(cache_dir("server") / f"server-{port}.log", 40))
    except FriendlyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
