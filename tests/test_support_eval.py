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
