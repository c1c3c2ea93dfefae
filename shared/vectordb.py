"""Lesson 05 (ChromaDB): the shop's knowledge base, embedding functions, clients, ingestion.

* :func:`load_kb` / :func:`load_questions` read the committed knowledge base of the fictional
  shop *Maple & Mill* (``data/kb/``) and its labelled questions;
* :class:`MiniLMEmbeddingFunction` is a Chroma embedding function over the packaged
  all-MiniLM-L6-v2, registered with Chroma so a stored collection reopens without passing it
  again; :func:`embedding_function` picks OpenAI's embeddings instead when a key is configured;
  :class:`MiniLMEmbeddings` is the same model as a LangChain ``Embeddings``;
* :func:`persistent_client` keeps its files under ``shared.paths.cache_dir("chroma", ...)``;
  :func:`start_chroma_server` runs a real ``chroma run`` server on a free port and always stops it;
* :func:`chunk_text`, :func:`kb_chunks` and :func:`ingest` split and upsert with stable ids, so
  ingesting twice leaves the same count; :func:`hit_rate_at_k` scores retrieval.

Chroma's own default embedding function downloads a model on first use: it is never used here.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from shared.config import FriendlyError, Settings, load_settings
from shared.models import EMBEDDING_MODEL_ID, load_embedder
from shared.paths import cache_dir, data_path

__all__ = [
    "ChromaServer",
    "ChromaServerError",
    "KbDoc",
    "MiniLMEmbeddingFunction",
    "MiniLMEmbeddings",
    "chunk_text",
    "embedding_function",
    "ephemeral_client",
    "hit_rate_at_k",
    "ingest",
    "kb_chunks",
    "langchain_embeddings",
    "load_kb",
    "load_questions",
    "parse_front_matter",
    "persistent_client",
    "start_chroma_server",
]

_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)


class ChromaServerError(FriendlyError):
    """The local ``chroma run`` server could not be started."""


# ---------------------------------------------------------------------------- knowledge base
@dataclass(frozen=True)
class KbDoc:
    """One knowledge-base page: its stable id, title, category and markdown body."""

    id: str
    title: str
    category: str
    text: str


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """Split ``---``-delimited ``key: value`` front matter from a markdown body."""
    match = _FRONT.match(text)
    if not match:
        raise ValueError("document has no front matter (a '---' block at the top)")
    meta = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"front-matter line without ':': {line!r}")
        meta[key.strip()] = value.strip()
    return meta, text[match.end() :].strip()


def load_kb(folder: Path | None = None) -> list[KbDoc]:
    """Every page of the shop's knowledge base (``data/kb/docs``), sorted by id."""
    folder = folder or data_path("kb", "docs")
    docs = []
    for path in sorted(folder.glob("*.md")):
        meta, body = parse_front_matter(path.read_text(encoding="utf-8"))
        if meta.get("id") != path.stem:
            raise ValueError(f"{path.name}: front-matter id {meta.get('id')!r} != file name")
        docs.append(KbDoc(meta["id"], meta["title"], meta["category"], body))
    return docs


def load_questions(split: str | None = None, answerable: bool | None = None) -> list[dict]:
    """The labelled questions (``data/kb/questions.jsonl``), optionally one split only.

    ``answerable=True`` keeps questions with a ``doc_id``; ``False`` the out-of-scope ones.
    """
    if split not in (None, "dev", "test"):
        raise ValueError(f"split must be None, 'dev' or 'test', not {split!r}")
    rows = [
        json.loads(line) for line in data_path("kb", "questions.jsonl").read_text().splitlines()
    ]
    rows = [r for r in rows if split is None or r["split"] == split]
    if answerable is not None:
        rows = [r for r in rows if (r["doc_id"] is not None) == answerable]
    return rows


# ---------------------------------------------------------------------------- embeddings
_EMBEDDER: Any = None


def _embedder() -> Any:
    global _EMBEDDER  # one MiniLM per process, loaded on first use (~1 s)
    if _EMBEDDER is None:
        _EMBEDDER = load_embedder(device="cpu")
    return _EMBEDDER


def _encode(texts: Sequence[str]) -> list[list[float]]:
    vectors = _embedder().encode(list(texts), batch_size=32, normalize_embeddings=True)
    return vectors.tolist()  # (N, 384), unit length


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over the packaged all-MiniLM-L6-v2 (384-d, unit vectors, offline).

    Registered under :meth:`name`, so ``client.get_collection(name)`` rebuilds it from the
    collection's stored config; importing :mod:`shared.vectordb` is all that is needed.
    """

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return _encode(input)  # type: ignore[return-value]

    @staticmethod
    def name() -> str:
        return "course-minilm-l6-v2"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return {"model": EMBEDDING_MODEL_ID}  # no absolute path: the store stays portable

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()


def embedding_function(settings: Settings | None = None) -> EmbeddingFunction:
    """OpenAI's embeddings when the provider is ``openai`` with a key, else the local MiniLM."""
    s = settings or load_settings()
    if s.provider == "openai" and s.openai_api_key:
        from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

        os.environ.setdefault("OPENAI_API_KEY", s.openai_api_key.reveal())
        return OpenAIEmbeddingFunction(
            model_name=s.openai_embedding_model,
            api_base=s.openai_base_url,
            api_key_env_var="OPENAI_API_KEY",
        )
    return MiniLMEmbeddingFunction()


try:  # the LangChain view of the same model (langchain-chroma's vector store needs one)
    from langchain_core.embeddings import Embeddings as _LCEmbeddings
except ImportError:  # pragma: no cover - langchain is pinned in requirements.txt
    _LCEmbeddings = object  # type: ignore[assignment,misc]


class MiniLMEmbeddings(_LCEmbeddings):  # type: ignore[misc,valid-type]
    """LangChain ``Embeddings`` over the same packaged MiniLM (identical vectors to Chroma's)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return _encode([text])[0]


def langchain_embeddings(settings: Settings | None = None) -> Any:
    """``OpenAIEmbeddings`` when an OpenAI key is configured, else :class:`MiniLMEmbeddings`."""
    s = settings or load_settings()
    if s.provider == "openai" and s.openai_api_key:
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(
            model=s.openai_embedding_model,
            api_key=s.openai_api_key.reveal(),
            base_url=s.openai_base_url,
        )
    return MiniLMEmbeddings()


# ---------------------------------------------------------------------------- clients
def _chroma_settings(allow_reset: bool) -> Any:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=allow_reset)


def ephemeral_client(allow_reset: bool = False) -> Any:
    """An in-memory client: nothing is written to disk, all is gone when the kernel stops."""
    import chromadb

    return chromadb.EphemeralClient(settings=_chroma_settings(allow_reset))


def persistent_client(name: str = "lesson05", allow_reset: bool = False) -> Any:
    """A client whose data lives in ``cache_dir("chroma", name)`` and survives restarts."""
    import chromadb

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"store name must be a plain folder name, not {name!r}")
    return chromadb.PersistentClient(
        path=str(cache_dir("chroma", name)), settings=_chroma_settings(allow_reset)
    )


@dataclass
class ChromaServer:
    """A ``chroma run`` server started by :func:`start_chroma_server`; ``stop()`` ends it."""

    host: str
    port: int
    path: str
    pid: int
    log: str
    _proc: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self) -> Any:
        """An ``HttpClient`` talking to this server."""
        import chromadb

        return chromadb.HttpClient(
            host=self.host, port=self.port, settings=_chroma_settings(allow_reset=False)
        )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Terminate the server (its whole process group); safe to call twice."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> ChromaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_chroma_server(
    name: str = "lesson05-server",
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
) -> ChromaServer:
    """Start ``chroma run`` over ``cache_dir("chroma", name)`` on a free port; wait for heartbeat.

    Use it as a context manager (``with start_chroma_server() as server:``); it is also stopped
    when Python exits, so no server outlives the kernel.
    """
    import httpx

    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        raise ChromaServerError(
            f"The chroma command is missing ({exe}); reinstall with `make lab`."
        )
    port = port or _free_port(host)
    path = cache_dir("chroma", name)
    log = cache_dir("chroma") / f"server-{port}.log"
    cmd = [str(exe), "run", "--path", str(path), "--host", host, "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = ChromaServer(host, port, str(path), proc.pid, str(log), proc)
    atexit.register(server.stop)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server._proc = None
            raise ChromaServerError(
                f"`chroma run` exited with code {proc.returncode}. "
                f"Its log ({log}):\n{log.read_text()[-1500:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise ChromaServerError(
        f"`chroma run` did not answer on port {port} within {timeout:.0f} s "
        f"and was stopped; see {log}."
    )


# ---------------------------------------------------------------------------- ingestion
def chunk_text(text: str, max_words: int = 120, overlap: int = 20) -> list[str]:
    """Split text into chunks of at most ``max_words`` words, cutting at paragraph ends first.

    A paragraph longer than ``max_words`` is cut into word windows that share ``overlap`` words.
    """
    if max_words < 1 or not 0 <= overlap < max_words:
        raise ValueError("need max_words >= 1 and 0 <= overlap < max_words")
    pieces: list[list[str]] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        words = para.split()
        step = max_words - overlap
        starts = range(0, max(len(words) - overlap, 1), step) if len(words) > max_words else [0]
        pieces += [words[i : i + max_words] for i in starts if words[i : i + max_words]]
    chunks: list[str] = []
    current: list[str] = []
    for piece in pieces:  # greedily pack whole paragraphs together
        if current and len(current) + len(piece) > max_words:
            chunks.append(" ".join(current))
            current = []
        current = current + piece
    if current:
        chunks.append(" ".join(current))
    return chunks


def kb_chunks(
    docs: Sequence[KbDoc], max_words: int = 120, overlap: int = 20
) -> tuple[list[str], list[str], list[dict]]:
    """``(ids, texts, metadatas)`` for the knowledge base; ids are stable: ``<doc id>#<n>``."""
    ids, texts, metas = [], [], []
    for doc in docs:
        for n, chunk in enumerate(chunk_text(doc.text, max_words, overlap)):
            ids.append(f"{doc.id}#{n}")
            texts.append(chunk)
            metas.append(
                {"doc_id": doc.id, "title": doc.title, "category": doc.category, "chunk": n}
            )
    return ids, texts, metas


def ingest(
    collection: Any,
    ids: Sequence[str],
    documents: Sequence[str],
    metadatas: Sequence[dict] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> int:
    """Upsert in batches (with a progress bar); re-running never duplicates. Returns the count."""
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique: a duplicate id would silently overwrite a chunk")
    if len(ids) != len(documents) or (metadatas is not None and len(metadatas) != len(ids)):
        raise ValueError("ids, documents and metadatas must have the same length")
    from tqdm.auto import tqdm

    starts = range(0, len(ids), batch_size)
    for i in tqdm(starts, desc=f"upsert -> {collection.name}", disable=not progress):
        collection.upsert(
            ids=list(ids[i : i + batch_size]),
            documents=list(documents[i : i + batch_size]),
            metadatas=None if metadatas is None else list(metadatas[i : i + batch_size]),
        )
    return collection.count()


def hit_rate_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[str | None], k: int = 3) -> float:
    """Share of questions whose gold doc id is among the first ``k`` distinct retrieved doc ids.

    ``ranked[i]`` lists doc ids for question ``i``, best first (several chunks of one page may
    repeat an id: duplicates are collapsed). Questions whose gold id is ``None`` are skipped.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} rankings for {len(gold)} gold ids")
    pairs = [(list(dict.fromkeys(r)), g) for r, g in zip(ranked, gold, strict=True) if g]
    if not pairs:
        raise ValueError("no answerable questions (with a gold doc id) to score")
    return sum(g in r[:k] for r, g in pairs) / len(pairs)
