"""Lesson 08 (customer-service capstone): knowledge-base retrieval and a groundedness check.

The shop's help centre (``data/kb/docs``, lesson 05's :func:`shared.vectordb.load_kb`) is chunked
and upserted into Chroma with stable ids (idempotent; stale chunks are removed), then searched
through LangChain's ``Chroma`` vector store. Scores are cosine similarities (1 = same meaning), so
one threshold decides when the assistant should not guess.

:func:`grounded_share` is a measurable proxy for "the answer is supported by the retrieved text":
the share of the answer's content words that occur in that text. It catches a small model that
drifts away from its sources; it cannot prove that a sentence is true.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared import vectordb

__all__ = [
    "COLLECTION",
    "INTENT_CATEGORIES",
    "Hit",
    "KnowledgeBase",
    "build_knowledge_base",
    "content_words",
    "grounded_share",
]

COLLECTION = "maple_mill_help"
#: the help-centre sections searched first for each routed intent (a Chroma ``where`` filter).
INTENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "shipping": ("shipping",),
    "returns_refunds": ("returns", "refunds"),
    "account": ("accounts",),
    "payments": ("payments", "general"),
    "product_question": ("product-care", "warranty", "general"),
}
_STOP = frozenset(
    "the and for you your are was were that this with from have has had not but can will its "
    "our out all any also into than then there their they them what when where which who why "
    "how about would could should may might must been being does did doing just only very "
    "more most some such yes here after before over under again once per each other".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters (or any number) minus stop words, plural 's' removed."""
    words = set()
    for w in re.findall(r"[a-z0-9]+(?:[.,-][0-9]+)*", text.lower()):
        if w in _STOP or (len(w) < 3 and not w[0].isdigit()):
            continue
        words.add(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return words


def grounded_share(answer: str, context: str) -> float:
    """Share of the answer's content words found in ``context`` (0.0 for an empty answer)."""
    said = content_words(answer)
    if not said:
        return 0.0
    return len(said & content_words(context)) / len(said)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its page, the text and the cosine similarity to the query."""

    doc_id: str
    title: str
    text: str
    score: float


class KnowledgeBase:
    """Search over a LangChain vector store whose scores are cosine distances (Chroma, cosine)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def search(self, query: str, k: int = 3, categories: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` best chunks for ``query``, best first, with cosine similarity scores.

        ``categories`` limits the search to those help-centre sections (metadata filter).
        """
        where = {"category": {"$in": list(categories)}} if categories else None
        pairs = self.store.similarity_search_with_score(query, k=k, filter=where)
        return [Hit(d.metadata.get("doc_id", ""), d.metadata.get("title", ""), d.page_content,
                    round(1.0 - float(dist), 4)) for d, dist in pairs]  # fmt: skip

    def doc_ids(self, query: str, k: int = 3) -> list[str]:
        """The pages of the best chunks, best first (what :func:`vectordb.hit_rate_at_k` wants)."""
        return [h.doc_id for h in self.search(query, k)]

    @staticmethod
    def extract(
        query: str, hit: Hit, embed: Callable[[Sequence[str]], np.ndarray], n: int = 2
    ) -> str:
        """The ``n`` sentences of ``hit`` most similar to ``query``, in their original order.

        The assistant's fallback when the model's draft is not grounded: quoting the source is
        always grounded.
        """
        text = re.sub(rf"^#+\s*{re.escape(hit.title)}\s*", "", hit.text.strip())
        sentences = [s.strip(" -*#|") for s in _SENTENCE.split(text)]
        sentences = [s for s in sentences if len(s.split()) >= 4]
        if not sentences:
            return hit.text.strip()
        vecs = embed([query, *sentences])  # (1 + S, D), unit rows
        sims = vecs[1:] @ vecs[0]  # (S,)
        best = sorted(np.argsort(-sims)[:n].tolist())
        return " ".join(sentences[i] for i in best)


def build_knowledge_base(
    persist: bool = True, name: str = "lesson08", max_words: int = 120, overlap: int = 20
) -> KnowledgeBase:
    """Index the help centre in Chroma (idempotent) and wrap it in LangChain's vector store.

    ``persist=True`` keeps the index in ``cache_dir("chroma", name)``; ``False`` builds it in
    memory (about a second for the 40 pages).
    """
    from langchain_chroma import Chroma

    client = vectordb.persistent_client(name) if persist else vectordb.ephemeral_client()
    collection = client.get_or_create_collection(
        COLLECTION,
        embedding_function=vectordb.MiniLMEmbeddingFunction(),
        configuration={"hnsw": {"space": "cosine"}},
    )
    ids, texts, metas = vectordb.kb_chunks(vectordb.load_kb(), max_words, overlap)
    stored = collection.get(include=["documents"])
    have = dict(zip(stored["ids"], stored["documents"], strict=True))
    stale = sorted(set(have) - set(ids))
    if stale:  # pages removed or re-chunked since the last run
        collection.delete(ids=stale)
    if any(have.get(i) != t for i, t in zip(ids, texts, strict=True)):  # new or changed text
        vectordb.ingest(collection, ids, texts, metas, progress=False)
    store = Chroma(
        client=client, collection_name=COLLECTION, embedding_function=vectordb.MiniLMEmbeddings()
    )
    return KnowledgeBase(store)
