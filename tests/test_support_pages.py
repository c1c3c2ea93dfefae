"""The help-centre pages as text (shared.support.pages): tokens, synonyms, customer questions."""

from __future__ import annotations

from collections import Counter

from shared.support.pages import (
    content_words,
    expand_query,
    lexical_tokens,
    load_page_questions,
    load_pages,
    title_chunks,
)


def test_lexical_tokens_drop_stop_words_and_stem() -> None:
    assert lexical_tokens("Where are my parcels? It's shipping to the U.K.") == ["parcel", "shipp"]
    assert lexical_tokens("Orders over $150 ship free") == ["order", "150", "ship", "free"]
    assert content_words("a PO box, 3 days") == {"box", "3", "days"}


def test_synonyms_add_the_help_centres_words_and_keep_the_customers() -> None:
    expanded = expand_query("can I send it back for my money back?")
    assert (
        expanded.startswith("can I send it back") and "return" in expanded and "refund" in expanded
    )
    assert expand_query("how do I season a pan") == "how do I season a pan"


def test_every_page_has_ten_questions_customers_ask() -> None:
    questions = load_page_questions()
    per_page = Counter(page for page, _ in questions)
    assert set(per_page) == {p.id for p in load_pages()}
    assert set(per_page.values()) == {10}
    assert len({q.lower() for _, q in questions}) == len(questions)  # no duplicates
    assert all(q.rstrip().endswith("?") for _, q in questions)


def test_title_chunks_head_every_chunk_with_its_page_title() -> None:
    pages = load_pages()
    ids, texts, metas = title_chunks(pages, max_words=80)
    assert len(ids) == len(set(ids)) == len(texts) == len(metas)
    title = {p.id: p.title for p in pages}
    assert all(t.startswith(title[m["doc_id"]] + "\n") for t, m in zip(texts, metas, strict=True))
