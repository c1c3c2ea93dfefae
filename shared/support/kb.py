"""Lesson 08 (customer-service capstone): finding the page and the sentences that answer.

The help centre (``data/kb/docs``, lesson 05's :func:`shared.vectordb.load_kb`) is cut into
**title-prefixed chunks** (the page title is repeated at the top of every chunk, so a chunk from
the middle of "Return shipping costs" still says what it is about) and indexed twice:

- dense: MiniLM embeddings in Chroma, searched through LangChain's ``Chroma`` vector store
  (cosine similarity: 1 = same meaning);
- lexical: BM25 over the same chunks (LangChain's ``BM25Retriever``, ``rank_bm25`` underneath),
  which catches the rare words an embedding blurs ("PO box", "Klarna", "invoice").

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

__all__ = [
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
    "page_sentences",
    "title_chunks",
]

COLLECTION = "maple_mill_help_v2"
#: the help-centre sections that fit each routed intent (a soft prior in :meth:`search`).
INTENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "order_status": ("shipping",),
    "shipping": ("shipping",),
    "returns_refunds": ("returns", "refunds"),
    "account": ("accounts",),
    "payments": ("payments",),
    "product_question": ("product-care", "warranty"),
}
_STOP = frozenset(
    "the and for you your are was were that this with from have has had not but can will its "
    "our out all any also into than then there their they them what when where which who why "
    "how about would could should may might must been being does did doing just only very "
    "more most some such yes here after before over under again once per each other i me my "
    "we us is it of to in on at be do a an or if so as by no get got want please hi hello "
    "thanks thank".split()
)
_PLACE = re.compile(r"\b(to|in|into|from)\s+([A-Z][a-z]+(?:\s[A-Z][a-z]+)*)")
#: words that make "in <place>" / "from <place>" about delivery ("made in China" is not)
_DELIVERY = re.compile(
    r"\b(ship\w*|deliver\w*|send\w*|sent|post(age|ed)?|mail\w*|arriv\w*|courier|customs|"
    r"dut(y|ies)|import\w*|parcels?|packages?|orders?|ordering|live|living|abroad|overseas)\b",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9(\"'])")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


#: customers' words -> the help centre's words (added to the query for BM25, never replacing it).
SYNONYMS: dict[str, str] = {
    r"send (it |them |this |that |\w+ )?back|bring (it |them )?back": "return",
    r"money back|reimburse\w*": "refund",
    r"guarantee\w*": "warranty",
    r"voucher|gift certificate": "gift card",
    r"postage|courier|deliver\w*": "shipping delivery",
    r"package|box(es)?": "parcel",
    r"log ?in|sign ?in|login": "sign-in account",
    r"pay later|split (the )?pay\w*|spread the cost": "instalments SplitPay",
    r"coupon|promo": "discount code",
    r"sofa|couch|wardrobe|bed frame|table|bookshelf|furniture": "bulky furniture",
    r"broke|broken|stopped working|faulty|defect\w*": "fault defect",
    r"take (\w+ ){0,3}(off|out of)|remove (\w+ ){0,3}from|(drop|delete) (\w+ ){0,3}from": (
        "cancel part of an order item by item"
    ),
    r"without (an |a )?account|no account|not (signed|logged) in|as a guest": "guest order",
}


def expand_query(text: str) -> str:
    """``text`` plus the help centre's words for the customers' words it contains."""
    extra = [
        words for pattern, words in SYNONYMS.items() if re.search(rf"\b({pattern})\b", text, re.I)
    ]
    return " ".join([text, *extra])


def lexical_tokens(text: str) -> list[str]:
    """BM25's tokens: lower-case words and numbers, stop words dropped, crude suffix stemming."""
    words = re.findall(r"[a-z0-9]+(?:[.,-][0-9]+)*", text.lower().replace("'", ""))
    return [_stem(w) for w in words if w not in _STOP and (len(w) > 1 or w.isdigit())]


def content_words(text: str) -> set[str]:
    """The set of :func:`lexical_tokens` of 3+ characters (or any number)."""
    return {w for w in lexical_tokens(text) if len(w) >= 3 or w[0].isdigit()}


# ---------------------------------------------------------------------------- pages
@dataclass(frozen=True)
class Page:
    """One help-centre page: id, title, section and its answer units (sentences, rows, items)."""

    id: str
    title: str
    category: str
    body: str
    sentences: tuple[str, ...]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", "")).strip(" -*")


def page_sentences(body: str) -> list[str]:
    """A page's answer units: prose sentences, list items (each prefixed with the sentence that
    introduces the list) and table rows read with their header."""
    units: list[str] = []
    intro = ""  # "It does not cover:" - carried to the list items that follow
    for block in re.split(r"\n\s*\n", body.strip()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
        if lines and all(ln.startswith("|") for ln in lines):  # a table: one unit per row
            rows = [[_clean(c) for c in ln.strip("|").split("|")] for ln in lines]
            header, body_rows = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
            for row in body_rows:
                cells = [
                    f"{h}: {c}" if i else c
                    for i, (h, c) in enumerate(zip(header, row, strict=False))
                ]
                units.append(_clean(", ".join(cells)) + ".")
            intro = ""
            continue
        items: list[list[str]] = []
        prose: list[str] = []
        for ln in lines:
            if ln.startswith(("- ", "* ")) or re.match(r"\d+\.\s", ln):
                items.append([re.sub(r"^(\d+\.|[-*])\s+", "", ln)])
            elif items:
                items[-1].append(ln)  # a list item continued on the next line
            else:
                prose.append(ln)
        if prose:
            sentences = [_clean(x) for x in _SENTENCE.split(" ".join(prose))]
            intro = sentences.pop() if sentences and sentences[-1].endswith(":") else ""
            units += sentences
        for item in items:
            units.append(f"{intro} {_clean(' '.join(item))}".strip())
        if items:
            intro = ""
    return [u for u in units if len(u.split()) >= 3]


def title_chunks(
    pages: Sequence[Page], max_words: int = 80
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(ids, texts, metadatas)``: each page's units packed into chunks headed by its title."""
    ids, texts, metas = [], [], []
    for page in pages:
        chunks: list[list[str]] = [[]]
        for unit in page.sentences:
            if (
                chunks[-1]
                and sum(len(u.split()) for u in chunks[-1]) + len(unit.split()) > max_words
            ):
                chunks.append([])
            chunks[-1].append(unit)
        for n, units in enumerate(chunks):
            ids.append(f"{page.id}#{n}")
            texts.append(f"{page.title}\n" + " ".join(units))
            metas.append({"doc_id": page.id, "title": page.title, "category": page.category})
    return ids, texts, metas


@dataclass(frozen=True)
class Hit:
    """One ranked page: id, title, fused score, best sentence cosine, BM25 rank."""

    doc_id: str
    title: str
    score: float  # the fused ranking score
    dense: float  # cosine similarity of the page's best sentence to the query
    lexical_rank: int  # 1 = BM25's best page


class KnowledgeBase:
    """Page search (dense, lexical or hybrid) and extractive answers over the help centre."""

    def __init__(self, pages: Sequence[Page], store: Any, bm25: Any, embedder: Any) -> None:
        self.pages = {p.id: p for p in pages}
        self.store, self.bm25, self.embedder = store, bm25, embedder
        self._cache: dict[str, np.ndarray] = {}
        #: every answer unit of every page, embedded once: (S, 384), and its (page, index)
        self.units = [(p.id, i) for p in pages for i in range(len(p.sentences))]
        plain = [self.pages[p].sentences[i] for p, i in self.units]
        titled = [
            f"{self.pages[p].title}: {s}" for (p, _), s in zip(self.units, plain, strict=True)
        ]
        self.unit_matrix = self.embed(titled)  # (S, 384): for finding the page, with its title
        self.sentence_matrix = self.embed(plain)  # (S, 384): for picking the answering sentences
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
        """Best chunk cosine per page (every page), from Chroma through LangChain."""
        n = self.store._collection.count()
        vec = self.query_vector(query).tolist()
        scores: dict[str, float] = {}
        for doc, dist in self.store.similarity_search_by_vector_with_relevance_scores(vec, k=n):
            page = doc.metadata["doc_id"]
            scores[page] = max(scores.get(page, -1.0), 1.0 - float(dist))
        return scores

    def sentence_scores(self, query: str) -> dict[str, float]:
        """Best sentence cosine per page."""
        sims = self.unit_matrix @ self.query_vector(query)  # (S,)
        scores: dict[str, float] = {}
        for (page, _), s in zip(self.units, sims.tolist(), strict=True):
            scores[page] = max(scores.get(page, -1.0), s)
        return scores

    def lexical_scores(self, query: str) -> dict[str, float]:
        """Best chunk BM25 score per page (0 when no word matches)."""
        raw = self.bm25.vectorizer.get_scores(self.bm25.preprocess_func(expand_query(query)))
        scores: dict[str, float] = {}
        for doc, s in zip(self.bm25.docs, raw, strict=True):
            page = doc.metadata["doc_id"]
            scores[page] = max(scores.get(page, 0.0), float(s))
        return scores

    def evidence(self, query: str, *variants: str) -> tuple[float, float]:
        """``(best sentence cosine, best BM25 score)`` over the whole help centre: how close the
        nearest sentence is in meaning, and how many of the question's rarer words one chunk
        shares; each the best over ``query`` and its ``variants`` (the same question in other
        words). :class:`~shared.support.bot.BotConfig` turns the two into "answerable?"."""
        best = (0.0, 0.0)
        for text in dict.fromkeys((query, *variants)):
            sentence = float(np.max(self.unit_matrix @ self.query_vector(text)))
            bm25 = max(self.lexical_scores(text).values(), default=0.0)
            best = (max(best[0], sentence), max(best[1], bm25))
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


def load_pages() -> list[Page]:
    """The help-centre pages with their answer units."""
    from shared.vectordb import load_kb

    pages = []
    for doc in load_kb():
        body = re.sub(r"^#\s+.*\n", "", doc.text.strip(), count=1)
        pages.append(Page(doc.id, doc.title, doc.category, body, tuple(page_sentences(body))))
    return pages


class _LangChainMiniLM:
    """LangChain ``Embeddings`` over the local MiniLM (unit vectors, so cosine = dot product)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def build_knowledge_base(embedder: Any = None, max_words: int = 80) -> KnowledgeBase:
    """Index the help centre in an in-memory Chroma collection and a BM25 index (about 1 s).

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
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    store = Chroma(
        collection_name=f"{COLLECTION}_{max_words}",
        embedding_function=_LangChainMiniLM(embedder),
        client=client,
        collection_configuration={"hnsw": {"space": "cosine"}},
    )
    have = set(store.get(ids=ids)["ids"])
    if have != set(ids):
        store.add_texts(texts, metadatas=metas, ids=ids)
    bm25 = BM25Retriever.from_texts(texts, metadatas=metas, preprocess_func=lexical_tokens, k=5)
    return KnowledgeBase(pages, store, bm25, embedder)
