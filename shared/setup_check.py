"""Lesson 00: the environment report — Python, packages, hardware, provider, models, caches."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import FriendlyError, Settings, load_settings
from shared.paths import cache_dir, data_dir, repo_root

__all__ = [
    "PACKAGES",
    "EnvironmentReport",
    "display_path",
    "environment_report",
    "ping_provider",
]

#: the distributions the course depends on directly, shown in the report.
PACKAGES = (
    "torch",
    "transformers",
    "openai",
    "langchain",
    "langchain-openai",
    "chromadb",
    "peft",
    "sentence-transformers",
    "tiktoken",
    "llama_cpp_python",
    "jupyterlab",
)


@dataclass
class EnvironmentReport:
    """What the report found; ``rows()`` gives (section, item, value) for display."""

    python: str
    platform: str
    packages: dict[str, str]
    cpus: int
    memory_gb: float
    accelerator: str
    provider: str
    model: str
    answers: str
    paths: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        out = [
            ("system", "python", self.python),
            ("system", "platform", self.platform),
            ("system", "cpu cores", str(self.cpus)),
            ("system", "memory (GB)", f"{self.memory_gb:.1f}"),
            ("system", "accelerator", self.accelerator),
        ]
        out += [("package", k, v) for k, v in self.packages.items()]
        out += [
            ("provider", "active", self.provider),
            ("provider", "model", self.model),
            ("provider", "answers", self.answers),
        ]
        out += [("paths", k, v) for k, v in self.paths.items()]
        return out

    def show(self) -> None:
        """Print the report as an aligned table."""
        for section, item, value in self.rows():
            print(f"{section:<9} {item:<22} {value}")


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _accelerator() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GB"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps (Apple silicon)"
    return "none (CPU only)"


def ping_provider(settings: Settings | None = None) -> str:
    """One tiny chat completion against the active provider: ``"yes (0.4 s)"`` or the error."""
    from shared import llm

    s = settings or load_settings()
    start = time.perf_counter()
    try:
        c = llm.client(s)
        c.chat.completions.create(
            model=llm.model_name(s), max_tokens=1, messages=[{"role": "user", "content": "Hi"}]
        )
    except FriendlyError as exc:
        return f"no: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a diagnostic
        return f"no: {llm.explain(exc, s)}"
    return f"yes ({time.perf_counter() - start:.1f} s)"


def display_path(path: str | Path) -> str:
    """A path as a learner can share it: relative to the repository, ``<site-packages>/...`` for
    installed packages, ``~/...`` under the home folder (no absolute path of this machine)."""
    p = Path(path)
    parts = p.parts
    if "site-packages" in parts:
        return str(Path("<site-packages>", *parts[parts.index("site-packages") + 1 :]))
    try:
        return str(Path(".") / p.resolve().relative_to(repo_root().resolve()))
    except ValueError:
        pass
    try:
        return str(Path("~") / p.relative_to(Path.home()))
    except ValueError:
        return str(p)


def environment_report(ping: bool = True, settings: Settings | None = None) -> EnvironmentReport:
    """Collect the environment report; ``ping`` also checks that the provider answers."""
    import psutil

    from shared import llm, models

    s = settings or load_settings()
    try:
        chat_dir = display_path(models.chat_model_source(None))
    except FriendlyError as exc:
        chat_dir = f"not prepared ({type(exc).__name__})"
    return EnvironmentReport(
        python=sys.version.split()[0],
        platform=f"{platform.system()} {platform.machine()}",
        packages={p: _version(p) for p in PACKAGES},
        cpus=os.cpu_count() or 1,
        memory_gb=psutil.virtual_memory().total / 2**30,
        accelerator=_accelerator(),
        provider=s.provider,
        model=llm.model_name(s),
        answers=ping_provider(s) if ping else "not checked",
        paths={
            "repository": f"{repo_root().name}/ (paths below are relative to it)",
            "data": display_path(data_dir()),
            "cache": display_path(cache_dir()),
            "chat model (HF folder)": chat_dir,
            "chat model (GGUF)": display_path(models.smollm2_gguf_path()),
            "embedding model": display_path(models.embedding_model_path()),
        },
    )
