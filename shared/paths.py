"""Where the course keeps things: the repository, ``data/`` and one git-ignored cache.

Everything the course writes (converted models, tokenizer caches, Hugging Face caches, the local
server's log and pid, lesson databases) goes under :func:`cache_dir`, which is ``<repo>/.cache``
unless ``GENAI_CACHE_DIR`` says otherwise. :func:`configure_environment` points the libraries'
own caches there, so a course run leaves the home directory untouched. Nothing happens on
import: call it first, before importing a library that reads its cache variable when imported
(``huggingface_hub``, ``transformers`` and ``sentence_transformers`` read ``HF_HOME``). Every
notebook's setup cell starts with that call; the Makefile exports the same variables.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "configure_environment",
    "data_dir",
    "data_path",
    "lessons_dir",
    "repo_root",
]


def repo_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "shared").is_dir():
            return candidate
    raise RuntimeError(
        f"Cannot find the course repository above {here}. Install the course with "
        "`pip install -e .` from a clone of the repository (or run `make lab`)."
    )


def data_dir() -> Path:
    """The committed data folder, ``<repo>/data``."""
    return repo_root() / "data"


def data_path(*parts: str) -> Path:
    """A file under ``data/``; raises ``FileNotFoundError`` with the full path if it is missing."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"Course data file not found: {path}. Is the checkout complete?")
    return path


def lessons_dir() -> Path:
    """The folder holding the lesson notebooks."""
    return repo_root() / "lessons"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The course cache (``GENAI_CACHE_DIR`` or ``<repo>/.cache``), or a folder inside it."""
    root = Path(os.environ.get("GENAI_CACHE_DIR") or repo_root() / ".cache").expanduser()
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def configure_environment() -> dict[str, str]:
    """Point library caches at the course cache and turn the libraries' telemetry off.

    Only variables that are not set already are changed, so a learner's own settings win; a
    second call changes nothing. Returns the variables this call set.
    """
    root = cache_dir()
    wanted = {
        "HF_HOME": str(root / "huggingface"),
        "HF_HUB_CACHE": str(root / "huggingface" / "hub"),
        "TIKTOKEN_CACHE_DIR": str(root / "tiktoken"),
        "SENTENCE_TRANSFORMERS_HOME": str(root / "sentence_transformers"),
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "NLTK_DATA": str(root / "nltk_data"),
        "ANONYMIZED_TELEMETRY": "False",  # chromadb
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    changed = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            changed[key] = value
    Path(os.environ["HF_HUB_CACHE"]).mkdir(parents=True, exist_ok=True)
    return changed
