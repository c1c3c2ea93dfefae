"""The capstone's scorer (shared.support.eval): Wilson intervals and the rules for a right turn."""

from __future__ import annotations

import pytest

from shared.support.eval import (
    format_rate,
    percentile,
    score_conversations,
    score_questions,
    turn_correct,
    wilson,
)


def test_wilson_interval_golden_values() -> None:
    lo, hi = wilson(38, 48)
    assert (round(lo, 3), round(hi, 3)) == (0.657, 0.883)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert format_rate(38, 48) == "0.79 (38/48, 95 % CI 0.66-0.88)"
    with pytest.raises(ValueError, match="empty sample"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 4)


def test_percentile_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile(list(range(1, 21)), 90) == 18
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


@pytest.mark.parametrize(
    ("expect", "facts", "action", "text", "right"),
    [
        ("answer", ["$12.95"], "answer", "Express costs $12.95.", True),
        ("answer", ["$12.95"], "answer", "Express is cheap.", False),
        ("answer", ["3-5 Business Days"], "answer", "takes 3-5 business days", True),
        ("answer", ["$12.95"], "handoff", "Express costs $12.95.", False),
        ("decline", [], "decline", "I don't know.", True),
        ("decline", [], "handoff", "A colleague will help.", True),
        ("decline", [], "answer", "Black Friday starts on the 27th.", False),
        ("handoff", [], "handoff", "ticket #3", True),
        ("handoff", [], "decline", "I don't know.", False),
        ("refuse", [], "refuse", "I can't.", True),
        ("order", ["1024", "delivered"], "order", "Order 1024 is **delivered**", True),
        ("order", ["1024"], "answer", "Order 1024", False),
        ("recommend", ["Brass Reading Lamp"], "recommend", "- Brass Reading Lamp ($95.00)", True),
    ],
)
def test_turn_rules(expect, facts, action, text, right) -> None:
    assert turn_correct(expect, facts, action, text) is right


def test_scores_count_right_and_total() -> None:
    rows = [
        {
            "answerable": True,
            "page": "a",
            "facts": ["x"],
            "action": "answer",
            "text": "x",
            "retrieved": ["b", "c", "a"],
        },
        {
            "answerable": True,
            "page": "a",
            "facts": ["x"],
            "action": "answer",
            "text": "y",
            "retrieved": ["b", "c", "d", "a"],
        },
        {
            "answerable": False,
            "page": None,
            "facts": [],
            "action": "decline",
            "text": "",
            "retrieved": [],
        },
    ]
    assert score_questions(rows) == {
        "page in top 3": (1, 2),
        "answerable correct": (1, 2),
        "unanswerable declined": (1, 1),
    }
    turns = [{"expect": "order", "correct": True}, {"expect": "refuse", "correct": False}]
    assert score_conversations(turns) == {
        "turns right": (1, 2),
        "  order": (1, 1),
        "  refuse": (0, 1),
    }


_SETS = ("dev", "dev2", "dev3", "dev4", "dev5", "dev6", "test")


@pytest.mark.parametrize("name", _SETS)
def test_evaluation_sets_are_consistent_with_the_pages_and_the_shop(name: str) -> None:
    """Every label can be met: gold pages exist, facts are on the gold page (whitespace folded),
    order numbers in the facts are the customer's own, products are sold and in stock."""
    import csv
    import re

    from shared.paths import data_path
    from shared.support.eval import load_jsonl
    from shared.support.kb import load_pages

    def fold(text: str) -> str:
        return re.sub(r"\s+", " ", text).lower()

    pages = {p.id: fold(p.body) for p in load_pages()}
    orders = {
        int(r["order_id"]): (int(r["customer_id"]), r["status"])
        for r in csv.DictReader(data_path("shop", "orders.csv").open())
    }
    stocked = {
        r["name"]
        for r in csv.DictReader(data_path("shop", "products.csv").open())
        if int(r["stock"]) > 0
    }
    questions = load_jsonl(f"{name}_questions.jsonl")
    assert len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        if q["answerable"]:
            assert q["page"] in pages and q["facts"], q["id"]
            assert all(fold(f) in pages[q["page"]] for f in q["facts"]), q["id"]
        else:
            assert q["page"] is None and q["facts"] == [], q["id"]
    conversations = load_jsonl(f"{name}_conversations.jsonl")
    assert len({c["id"] for c in conversations}) == len(conversations)
    for c in conversations:
        for t in c["turns"]:
            facts = t.get("facts") or []
            assert t["expect"] in ("answer", "decline", "handoff", "refuse", "order", "recommend")
            if t["expect"] == "answer":
                assert all(fold(f) in pages[t["page"]] for f in facts), (c["id"], t["user"])
            if t["expect"] == "order":
                assert c["customer_id"] is not None, c["id"]
                for order in [int(f) for f in facts if f.isdigit()]:  # the customer's own
                    assert orders[order][0] == c["customer_id"], (c["id"], t["user"])
            if t["expect"] == "recommend":
                assert set(facts) <= stocked, (c["id"], t["user"])
