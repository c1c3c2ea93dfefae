"""Lesson 08 (customer-service capstone): the help-centre pages as text.

Each page of ``data/kb/docs`` (lesson 05's :func:`shared.vectordb.load_kb`) is read into
**answer units** (:func:`page_sentences`: sentences, list items with the sentence that introduces
them, table rows with their header) and packed into **title-prefixed chunks**
(:func:`title_chunks`). BM25 sees a text through :func:`lexical_tokens`, with the help centre's
words added for a customer's (:data:`SYNONYMS`, :func:`expand_query`). Each page also has ten
questions customers ask that it answers (:func:`load_page_questions`). The indexes over all of
this are in :mod:`shared.support.kb`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SYNONYMS",
    "Page",
    "content_words",
    "expand_query",
    "lexical_tokens",
    "load_page_questions",
    "load_pages",
    "page_sentences",
    "title_chunks",
]

_STOP = frozenset(
    "the and for you your are was were that this with from have has had not but can will its "
    "our out all any also into than then there their they them what when where which who why "
    "how about would could should may might must been being does did doing just only very "
    "more most some such yes here after before over under again once per each other i me my "
    "we us is it of to in on at be do a an or if so as by no get got want please hi hello "
    "thanks thank".split()
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


def load_pages() -> list[Page]:
    """The help-centre pages with their answer units."""
    from shared.vectordb import load_kb

    pages = []
    for doc in load_kb():
        body = re.sub(r"^#\s+.*\n", "", doc.text.strip(), count=1)
        pages.append(Page(doc.id, doc.title, doc.category, body, tuple(page_sentences(body))))
    return pages


def load_page_questions(name: str = "page_questions.jsonl") -> list[tuple[str, str]]:
    """``(page id, question)``: the questions customers ask that each help-centre page answers
    (``data/support/page_questions.jsonl``, ten per page), or, with
    ``name="page_unanswered.jsonl"``, questions next to each page's topic that no page answers
    (twelve per page: a carrier, a country or a detail the help centre never mentions)."""
    from shared.io import read_jsonl
    from shared.paths import data_path

    rows = read_jsonl(data_path("support", name), ("page", "question"))
    return [(r["page"], r["question"]) for r in rows]
