"""Lesson 08 (customer-service capstone): finding the page and the sentences that answer.

The help centre (``data/kb/docs``, lesson 05's :func:`shared.vectordb.load_kb`) is cut into
**title-prefixed chunks** (the page title is repeated at the top of every chunk, so a chunk from
the middle of "Return shipping costs" still says what it is about) and indexed twice:

- dense: MiniLM embeddings in Chroma, searched through LangChain's ``Chroma`` vector store
  (cosine similarity: 1 = same meaning);
- lexical: BM25 over the same chunks (LangChain's ``BM25Retriever``, ``rank_bm25`` underneath),
  which catches the rare words an embedding blurs ("PO box", "Klarna", "invoice").

Each page also comes with ten **questions customers ask** that it answers
(``data/support/page_questions.jsonl``, written from the pages alone, :func:`load_page_questions`):
a question is closer in meaning to another question than to the statement that answers it
("what can I pay with?" is far from "We accept Visa, Mastercard, ..."), so they go into the
Chroma collection next to the chunks and count as the page's sentences when pages are ranked
and when :meth:`KnowledgeBase.evidence` judges whether the help centre answers at all. They
are never shown: answers are the pages' own sentences.

:meth:`KnowledgeBase.search` ranks **pages**: a page's rank in each index is its best chunk's, and
the two rankings are fused with reciprocal rank fusion (RRF), plus an optional soft prior from
the router (a bonus for the intent's help-centre sections, never a filter). The best dense cosine
is kept as the calibrated "is this in the help centre at all?" score.

:meth:`KnowledgeBase.extract` is the extractive answer: the sentences of the best page(s) that
score highest on embedding similarity plus word overlap with the question, in page order.
The checks on a model's rephrasing live in :mod:`shared.support.answer`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.support.pages import (
    SYNONYMS,
    Page,
    content_words,
    expand_query,
    lexical_tokens,
    load_page_questions,
    load_pages,
    page_sentences,
    title_chunks,
)

__all__ = [  # the text side (pages, chunks, tokens) is re-exported from shared.support.pages
    "COLLECTION",
    "INTENT_CATEGORIES",
    "Hit",
    "KnowledgeBase",
    "Page",
    "build_knowledge_base",
    "SYNONYMS",
    "content_words",
    "expand_query",
    "lexical_tokens",
    "load_page_questions",
    "load_pages",
    "page_sentences",
    "title_chunks",
]

COLLECTION = "maple_mill_help_v3"
#: the help-centre sections that fit each routed intent (a soft prior in :meth:`search`).
INTENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "order_status": ("shipping",),
    "shipping": ("shipping",),
    "returns_refunds": ("returns", "refunds"),
    "account": ("accounts",),
    "payments": ("payments",),
    "product_question": ("product-care", "warranty"),
}
_PLACE = re.compile(r"\b(to|in|into|from)\s+([A-Z][a-z]+(?:\s[A-Z][a-z]+)*)")
#: words that make "in <place>" / "from <place>" about delivery ("made in China" is not)
_DELIVERY = re.compile(
    r"\b(ship\w*|deliver\w*|send\w*|sent|post(age|ed)?|mail\w*|arriv\w*|courier|customs|"
    r"dut(y|ies)|import\w*|parcels?|packages?|orders?|ordering|live|living|abroad|overseas)\b",
    re.I,
)


@dataclass(frozen=True)
class Hit:
    """One ranked page: id, title, fused score, best sentence cosine, BM25 rank."""

    doc_id: str
    title: str
    score: float  # the fused ranking score
    dense: float  # cosine similarity of the page's best sentence to the query
    lexical_rank: int  # 1 = BM25's best page


_ANAPHOR = re.compile(r"(They|These|Those)\b")


class KnowledgeBase:
    """Page search (dense, lexical or hybrid) and extractive answers over the help centre."""

    def __init__(
        self,
        pages: Sequence[Page],
        store: Any,
        bm25: Any,
        embedder: Any,
        questions: Sequence[tuple[str, str]] = (),
        question_matrix: np.ndarray | None = None,
        unanswered: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.pages = {p.id: p for p in pages}
        self.store, self.bm25, self.embedder = store, bm25, embedder
        self._cache: dict[str, np.ndarray] = {}
        self._dense_cache: dict[str, dict[str, float]] = {}  # the index never changes after build
        #: every answer unit of every page, embedded once: (S, 384), and its (page, index)
        self.units = [(p.id, i) for p in pages for i in range(len(p.sentences))]
        plain = [self.pages[p].sentences[i] for p, i in self.units]
        titled = [
            f"{self.pages[p].title}: {s}" for (p, _), s in zip(self.units, plain, strict=True)
        ]
        self.unit_matrix = self.embed(titled)  # (S, 384): for finding the page, with its title
        #: for picking the answering sentences; one that starts with a pronoun ("They are valid
        #: for 3 years") is read after the sentence before it, which says what "they" are
        plain = [
            f"{self.pages[p].sentences[i - 1]} {s}" if i and _ANAPHOR.match(s) else s
            for (p, i), s in zip(self.units, plain, strict=True)
        ]
        self.sentence_matrix = self.embed(plain)  # (S, 384)
        #: the questions customers ask, as ``(page id, question)``, embedded once: (Q, 384)
        self.questions = list(questions)
        if question_matrix is None:  # (given when they are embedded already, e.g. in Chroma)
            question_matrix = self.embed([q for _, q in self.questions])
        self.question_matrix = np.asarray(question_matrix, dtype=np.float32).reshape(
            len(self.questions), self.unit_matrix.shape[1]
        )
        #: questions next to each page's topic that no page answers, embedded once: (U, 384);
        #: evidence against answering, never searched for pages
        self.unanswered = list(unanswered)
        self.unanswered_matrix = self.embed([q for _, q in self.unanswered]).reshape(
            len(self.unanswered), self.unit_matrix.shape[1]
        )
        #: every word the help centre uses (BM25's tokens)
        self.vocab = {w for p in pages for w in lexical_tokens(f"{p.title} {p.body}")}

    def abroad(self, query: str) -> str:
        """``query`` plus "international delivery" when it names a destination that no page
        mentions ("delivery cost to Vancouver"): the help centre names only the shop's own town,
        so any other destination is a question about international shipping. A place after
        "to" is a destination; after in/into/from only in a question about delivery ("do you
        ship in Canada?", but not "are they made in China?" or "a store in Lyon?")."""
        for m in _PLACE.finditer(query):
            if m.group(1) != "to" and not _DELIVERY.search(query):
                continue
            if not any(w in self.vocab for w in lexical_tokens(m.group(2))):
                return f"{query} (international delivery)"
        return query

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length MiniLM embeddings, shape (len(texts), 384)."""
        vecs = self.embedder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def query_vector(self, text: str) -> np.ndarray:
        """The embedding of one query, cached (a turn embeds its message once)."""
        if text not in self._cache:
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[text] = self.embed([text])[0]
        return self._cache[text]

    def dense_scores(self, query: str) -> dict[str, float]:
        """Best chunk (or customer question) cosine per page, from Chroma through LangChain.

        The nearest two entries per page on average are fetched (fetching all ~470 costs
        four times as long); a page with none of them scores -1, last in the ranking."""
        if query in self._dense_cache:  # a turn searches its message more than once
            return dict(self._dense_cache[query])
        k = min(self.store._collection.count(), 2 * len(self.pages))
        vec = self.query_vector(query).tolist()
        scores = dict.fromkeys(self.pages, -1.0)
        for doc, dist in self.store.similarity_search_by_vector_with_relevance_scores(vec, k=k):
            page = doc.metadata["doc_id"]
            scores[page] = max(scores[page], 1.0 - float(dist))
        if len(self._dense_cache) > 512:
            self._dense_cache.clear()
        self._dense_cache[query] = scores
        return dict(scores)

    def sentence_scores(self, query: str) -> dict[str, float]:
        """Best cosine per page over its sentences (headed by the title) and the questions
        customers ask that it answers."""
        vec = self.query_vector(query)
        scores: dict[str, float] = {}
        for (page, _), s in zip(self.units, (self.unit_matrix @ vec).tolist(), strict=True):
            scores[page] = max(scores.get(page, -1.0), s)
        for (page, _), s in zip(self.questions, (self.question_matrix @ vec).tolist(), strict=True):
            scores[page] = max(scores[page], s)
        return scores

    def lexical_scores(self, query: str) -> dict[str, float]:
        """Best chunk BM25 score per page (0 when no word matches)."""
        raw = self.bm25.vectorizer.get_scores(self.bm25.preprocess_func(expand_query(query)))
        scores: dict[str, float] = {}
        for doc, s in zip(self.bm25.docs, raw, strict=True):
            page = doc.metadata["doc_id"]
            scores[page] = max(scores.get(page, 0.0), float(s))
        return scores

    def evidence(self, query: str, *variants: str) -> tuple[float, float, float]:
        """``(best cosine, best BM25 score, best unanswered cosine)`` over the whole help
        centre: how close the nearest sentence or customer question is in meaning
        (:meth:`sentence_scores`), how many of the question's rarer words one chunk shares, and
        how close the nearest question that no page answers is; each the best over ``query``
        and its ``variants`` (the same question in other words).
        :class:`~shared.support.bot.BotConfig` turns the three into "answerable?"."""
        best = (0.0, 0.0, 0.0)
        for text in dict.fromkeys((query, *variants)):
            sentence = max(self.sentence_scores(text).values())
            bm25 = max(self.lexical_scores(text).values(), default=0.0)
            vec = self.query_vector(text)
            against = float(np.max(self.unanswered_matrix @ vec, initial=0.0))
            best = (max(best[0], sentence), max(best[1], bm25), max(best[2], against))
        return best

    def search(
        self,
        query: str,
        k: int = 3,
        mode: str = "hybrid",
        prior: Sequence[str] = (),
        prior_weight: float = 0.5,
        rrf_k: int = 10,
        weights: tuple[float, float, float] = (0.5, 1.0, 0.5),
    ) -> list[Hit]:
        """The ``k`` best pages for ``query``, best first.

        ``mode``: ``"dense"`` (chunks in Chroma), ``"lexical"`` (BM25) or ``"hybrid"``: reciprocal
        rank fusion, sum of ``weight / (rrf_k + rank)`` over the chunk, sentence and BM25 rankings
        (``weights`` in that order). ``prior``: help-centre sections favoured by the router, a
        bonus worth ``prior_weight`` of a first place in one ranking (never a filter).
        """
        if mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(f"mode must be dense, lexical or hybrid, not {mode!r}")
        dense, lexical = self.dense_scores(query), self.lexical_scores(query)
        sentence = self.sentence_scores(query)
        w = {"dense": (1.0, 0.0, 0.0), "lexical": (0.0, 0.0, 1.0), "hybrid": weights}[mode]
        ranks = [_ranks(dense), _ranks(sentence), _ranks(lexical)]
        fused = {}
        for p, page in self.pages.items():
            s = w[0] / (rrf_k + ranks[0][p]) + w[1] / (rrf_k + ranks[1][p])
            s += w[2] / (rrf_k + ranks[2][p]) if lexical.get(p, 0.0) > 0 else 0.0
            fused[p] = s + (prior_weight / (rrf_k + 1) if page.category in prior else 0.0)
        best = sorted(fused, key=lambda p: (-fused[p], -dense[p]))[:k]
        return [
            Hit(p, self.pages[p].title, round(fused[p], 5), round(sentence[p], 4), ranks[2][p])
            for p in best
        ]

    def rank_sentences(
        self,
        query: str,
        page_ids: Sequence[str],
        overlap_weight: float = 0.5,
        page_penalty: float = 0.05,
    ) -> list[tuple[float, str, int]]:
        """``(score, page id, sentence index)`` for the sentences of ``page_ids``, best first.

        score = cosine(question, sentence) + ``overlap_weight`` x share of the question's content
        words (with their help-centre synonyms, :func:`expand_query`) in the sentence -
        ``page_penalty`` x the page's rank (0 for the best page). The cosine is the mean of the
        sentence's cosine alone and headed by its page title (the title says what "it" is).
        """
        q_vec, q_words = self.query_vector(query), content_words(expand_query(query))
        rank_of = {pid: r for r, pid in enumerate(page_ids)}
        out = []
        for j, (pid, i) in enumerate(self.units):
            if pid in rank_of:
                sentence = self.pages[pid].sentences[i]
                overlap = len(q_words & content_words(sentence)) / max(1, len(q_words))
                cosine = float((self.sentence_matrix[j] + self.unit_matrix[j]) @ q_vec) / 2
                score = cosine + overlap_weight * overlap
                out.append((score - page_penalty * rank_of[pid], pid, i))
        return sorted(out, key=lambda t: -t[0])

    def extract(
        self,
        query: str,
        page_ids: Sequence[str],
        n: int = 3,
        most: int = 0,
        margin: float = 0.0,
        **weights: float,
    ) -> tuple[str, list[str]]:
        """The ``n`` best sentences for ``query`` from ``page_ids``, and up to ``most`` when the
        next ones score within ``margin`` of the best (several sentences answer it about equally
        well), grouped by page in page order, and the pages they came from."""
        if not page_ids:
            return "", []
        ranked = self.rank_sentences(query, page_ids, **weights)
        close = sum(1 for t in ranked[:most] if ranked[0][0] - t[0] <= margin) if ranked else 0
        chosen = ranked[: max(n, close)]
        order = {pid: r for r, pid in enumerate(page_ids)}
        chosen.sort(key=lambda t: (order[t[1]], t[2]))
        used = list(dict.fromkeys(pid for _, pid, _ in chosen))
        parts: list[str] = []
        for _, pid, i in chosen:
            unit, head = self.pages[pid].sentences[i], parts[-1].split(": ")[0] if parts else ""
            same_list = head.endswith(("you", "cover", "are")) or ":" in (
                parts[-1] if parts else ""
            )
            if parts and same_list and unit.startswith(head + ": "):
                unit = unit[len(head) + 2 :]  # the list's intro is said once
            parts.append(unit)
        return " ".join(parts), used


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    return {p: r for r, p in enumerate(sorted(scores, key=lambda p: -scores[p]), 1)}


class _LangChainMiniLM:
    """LangChain ``Embeddings`` over the local MiniLM (unit vectors, so cosine = dot product)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def build_knowledge_base(embedder: Any = None, max_words: int = 80) -> KnowledgeBase:
    """Index the help centre in an in-memory Chroma collection and a BM25 index (about 2 s):
    the title-prefixed chunks, and (in Chroma only) the questions customers ask of each page.

    Upserts with stable ids, so calling it twice in one process re-embeds nothing new.
    """
    import chromadb
    from chromadb.config import Settings
    from langchain_chroma import Chroma

    from shared.models import load_embedder

    with warnings.catch_warnings():  # langchain-community announces its sunset on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.retrievers import BM25Retriever

    embedder = embedder or load_embedder()
    pages = load_pages()
    ids, texts, metas = title_chunks(pages, max_words)
    questions = load_page_questions()
    by_id = {p.id: p for p in pages}
    q_ids = [f"{page}#q{n}" for n, (page, _) in enumerate(questions)]
    q_metas = [
        {"doc_id": page, "title": by_id[page].title, "category": by_id[page].category}
        for page, _ in questions
    ]
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    store = Chroma(
        collection_name=f"{COLLECTION}_{max_words}",
        embedding_function=_LangChainMiniLM(embedder),
        client=client,
        collection_configuration={"hnsw": {"space": "cosine"}},
    )
    have = set(store.get(ids=ids + q_ids)["ids"])
    if have != set(ids + q_ids):
        store.add_texts(
            texts + [q for _, q in questions], metadatas=metas + q_metas, ids=ids + q_ids
        )
    bm25 = BM25Retriever.from_texts(texts, metadatas=metas, preprocess_func=lexical_tokens, k=5)
    stored = store.get(ids=q_ids, include=["embeddings"])  # the questions' vectors, embedded once
    vectors = dict(zip(stored["ids"], stored["embeddings"], strict=True))
    matrix = np.array([vectors[i] for i in q_ids], dtype=np.float32)
    unanswered = load_page_questions("page_unanswered.jsonl")
    return KnowledgeBase(pages, store, bm25, embedder, questions, matrix, unanswered)
