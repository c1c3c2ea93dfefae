"""Lesson 05 (ChromaDB): the shop's knowledge base, embedding functions, clients, ingestion.

* :func:`load_kb` / :func:`load_questions`: the knowledge base of the fictional shop (``data/kb/``);
* :class:`MiniLMEmbeddingFunction`: the lesson's registered Chroma embedding function over the
  packaged MiniLM; :class:`MiniLMEmbeddings` is the same model for LangChain;
  :func:`embedding_function` / :func:`langchain_embeddings` follow ``EMBEDDING_PROVIDER``;
* :func:`ephemeral_client`, :func:`persistent_client` (under the course cache);
* :func:`chunk_text`, :func:`kb_chunks`, :func:`ingest` (stable ids + upsert: idempotent),
  :func:`hit_rate_at_k`, :func:`wilson_interval`; exercise checks that never show the answer.

Chroma's own default embedding function downloads a model on first use: it is never used here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.config import Settings as ChromaSettings
from chromadb.utils.embedding_functions import (
    OpenAIEmbeddingFunction,
    known_embedding_functions,
    register_embedding_function,
)
from langchain_core.embeddings import Embeddings as _LCEmbeddings

from shared import metrics
from shared.checks import CheckResult, check
from shared.config import Settings, load_settings
from shared.io import read_jsonl
from shared.models import EMBEDDING_MODEL_ID, load_embedder
from shared.paths import cache_dir, data_path

__all__ = [
    "EXERCISES",
    "KbDoc",
    "MiniLMEmbeddingFunction",
    "MiniLMEmbeddings",
    "answer_digest",
    "check_digest",
    "check_embedding_exercise",
    "check_exercise",
    "check_faq_exercise",
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
    "wilson_interval",
]

_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)


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
    """The labelled questions (``data/kb/questions.jsonl``), optionally one split; ``answerable``
    True keeps those with a ``doc_id``, False the out-of-scope ones."""
    if split not in (None, "dev", "test"):
        raise ValueError(f"split must be None, 'dev' or 'test', not {split!r}")
    required = ("id", "question", "doc_id", "split")
    rows = read_jsonl(data_path("kb", "questions.jsonl"), required)
    rows = [r for r in rows if split is None or r["split"] == split]
    if answerable is not None:
        rows = [r for r in rows if (r["doc_id"] is not None) == answerable]
    return rows


# ---------------------------------------------------------------------------- embeddings
@functools.cache
def _embedder() -> Any:
    return load_embedder(device="cpu")  # one MiniLM per process, loaded on first use (~1 s)


def _encode(texts: Sequence[str]) -> list[list[float]]:
    return _embedder().encode(list(texts), batch_size=32, normalize_embeddings=True).tolist()


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over the packaged all-MiniLM-L6-v2 (384-d, unit vectors, offline).

    Registered under :meth:`name`: ``client.get_collection(name)`` rebuilds it from the stored
    config in any process that imports this module. Lesson 05 writes the same class.
    """

    def __init__(self) -> None:
        pass  # nothing to set up: the model is loaded once per process, on first use

    def __call__(self, input: Documents) -> Embeddings:
        vectors = _embedder().encode(list(input), batch_size=32, normalize_embeddings=True)
        return vectors.tolist()  # (N, 384), unit length

    @staticmethod
    def name() -> str:
        return "course-minilm-l6-v2"

    def default_space(self) -> Space:
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return {"model": EMBEDDING_MODEL_ID}  # no absolute path: the store stays portable

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()


def embedding_function(settings: Settings | None = None) -> EmbeddingFunction:
    """Chroma's ``OpenAIEmbeddingFunction`` when ``EMBEDDING_PROVIDER=openai``, else MiniLM.

    The choice is independent of the chat provider: an OpenAI key or ``OPENAI_BASE_URL`` alone
    keeps the local MiniLM (a chat-only compatible server may serve no embeddings at all).
    """
    s = settings or load_settings()
    if s.embedding_provider == "openai":
        # The key is handed to the function, never written to os.environ. Chroma warns that a
        # key given this way is not stored with the collection: reopening it in another process
        # needs the function again (or CHROMA_OPENAI_API_KEY set by the learner).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Direct api_key configuration", DeprecationWarning)
            return OpenAIEmbeddingFunction(
                api_key=s.embedding_api_key.reveal(),
                model_name=s.embedding_model,
                api_base=s.embedding_base_url,
            )
    return MiniLMEmbeddingFunction()


class MiniLMEmbeddings(_LCEmbeddings):
    """LangChain ``Embeddings`` over the same packaged MiniLM (identical vectors to Chroma's)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return _encode([text])[0]


def langchain_embeddings(settings: Settings | None = None) -> Any:
    """``OpenAIEmbeddings`` when ``EMBEDDING_PROVIDER=openai``, else :class:`MiniLMEmbeddings`."""
    s = settings or load_settings()
    if s.embedding_provider == "openai":
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(
            model=s.embedding_model,
            api_key=s.embedding_api_key.reveal(),
            base_url=s.embedding_base_url,
            # OpenAI's own endpoint accepts token ids; other servers want the text itself.
            check_embedding_ctx_length=s.embedding_base_url is None,
        )
    return MiniLMEmbeddings()


# ---------------------------------------------------------------------------- clients
def _chroma_settings(allow_reset: bool) -> Any:
    return ChromaSettings(anonymized_telemetry=False, allow_reset=allow_reset)


def ephemeral_client(allow_reset: bool = False) -> Any:
    """An in-memory client: nothing is written to disk, all is gone when the kernel stops."""
    return chromadb.EphemeralClient(settings=_chroma_settings(allow_reset))


def persistent_client(name: str = "lesson05", allow_reset: bool = False) -> Any:
    """A client whose data lives in ``cache_dir("chroma", name)`` and survives restarts."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"store name must be a plain folder name, not {name!r}")
    return chromadb.PersistentClient(
        path=str(cache_dir("chroma", name)), settings=_chroma_settings(allow_reset)
    )


# ---------------------------------------------------------------------------- ingestion
def chunk_text(text: str, max_words: int = 120, overlap: int = 20) -> list[str]:
    """Chunks of at most ``max_words`` words, cut at paragraph ends first; a longer paragraph
    is cut into word windows that share ``overlap`` words."""
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
        batch = slice(i, i + batch_size)
        metas = None if metadatas is None else list(metadatas[batch])
        collection.upsert(ids=list(ids[batch]), documents=list(documents[batch]), metadatas=metas)
    return collection.count()


def hit_rate_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[str | None], k: int = 3) -> float:
    """Share of questions whose gold doc id is among the first ``k`` distinct retrieved doc ids.

    ``ranked[i]``: doc ids for question ``i``, best first (repeats collapse); gold None: skipped.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} rankings for {len(gold)} gold ids")
    pairs = [(list(dict.fromkeys(r)), g) for r, g in zip(ranked, gold, strict=True) if g]
    if not pairs:
        raise ValueError("no answerable questions (with a gold doc id) to score")
    return sum(g in r[:k] for r, g in pairs) / len(pairs)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``successes / n`` (:func:`shared.metrics.wilson`)."""
    return metrics.wilson(successes, n, z)


def answer_digest(value: Any) -> str:
    """SHA-256 of a value's canonical JSON (floats rounded to 3 places): an answer's fingerprint."""
    if isinstance(value, float):
        value = round(value, 3)
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def check_digest(label: str, value: Any, digest: str, hint: str = "") -> CheckResult:
    """An exercise check that compares fingerprints, so the expected answer is never shown."""
    return check(label, lambda: answer_digest(value) == digest, hint)


# ---------------------------------------------------------------------------- exercises (lesson 05)
EXERCISES: dict[str, str] = {  # check label -> SHA-256 of the expected answer (answer_digest)
    "electrical over $90": "ab342e6832d0949db589e20bc0d2773afe22cbb86b34641067bba8ba0116d4a7",
    "50-word chunks, hit@3": "491f82ed3908ff93df72ebb16d97adcd2558d5696be0cf339c38ccf49bf73827",
}


def check_exercise(label: str, value: Any, hint: str = "") -> CheckResult:
    """Check an answer of lesson 05 against its stored fingerprint (the answer is never shown)."""
    return check_digest(label, value, EXERCISES[label], hint)


def check_embedding_exercise(cls: Any, hint: str = "") -> CheckResult:
    """Exercise 2: ``cls(max_words)`` embeds each text's first words with MiniLM, registered."""
    texts = [" ".join(f"word{i}" for i in range(40)), load_kb()[0].text]

    def same(ef: Any, n: int) -> bool:
        want = MiniLMEmbeddingFunction()([" ".join(t.split()[:n]) for t in texts])
        return bool(np.allclose(np.array(ef(texts)), np.array(want), atol=1e-5))

    def passed() -> bool:
        ef = cls(max_words=5)
        registered = cls.name() == "first-words-minilm"
        registered = registered and known_embedding_functions.get(cls.name()) is cls
        rebuilt = type(ef).build_from_config(ef.get_config())
        return (
            isinstance(ef, EmbeddingFunction)
            and registered
            and ef.get_config() == {"max_words": 5}
            and same(ef, 5)
            and same(cls(), 20)
            and same(rebuilt, 5)
        )

    return check("an embedding function over the first words", passed, hint)


def check_faq_exercise(add_faq: Any, client: Any, hint: str = "") -> CheckResult:
    """Exercise 3: ``add_faq(collection, entries)`` twice (once edited): 3 current records."""
    v1 = [
        "Saturday orders leave the warehouse on Monday.",
        "We plant a tree for every order.",
        "Our packaging is recycled cardboard.",
    ]
    v2 = [v1[0], "We plant two trees for every order.", v1[2]]

    def passed() -> bool:
        with contextlib.suppress(Exception):
            client.delete_collection("exercise-faq")
        col = client.create_collection("exercise-faq", embedding_function=MiniLMEmbeddingFunction())
        add_faq(col, v1)
        add_faq(col, v2)
        return col.count() == 3 and sorted(col.get()["documents"]) == sorted(v2)

    return check("add_faq twice: 3 records, the edit kept", passed, hint)
