"""What a message means in the conversation (shared.support.dialog)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.support.dialog import (
    asks_for_order,
    is_follow_up,
    is_yes,
    order_ids,
    rewrite_follow_up,
    wants_recommendation,
)


def test_recommendation_and_order_cues() -> None:
    assert wants_recommendation("I need something to light up my desk for late-night reading")
    assert wants_recommendation("any good gift ideas for a keen cook?")
    assert not wants_recommendation("Where do I type the code on my gift slip?")
    assert order_ids("status of order 1005 and #1006, MM-1007") == [1005, 1006, 1007]
    assert order_ids("what's going on with 1041? not 2026", frozenset({1041})) == [1041]
    assert asks_for_order("Did order 1048 go out yet?", [1048])
    assert not asks_for_order("Can I return order 1048?", [1048])
    assert asks_for_order("Why does my order from February say cancelled?", [])
    assert asks_for_order("has my most recent order arrived?", [])
    assert asks_for_order("has my dining table shipped yet", [])
    assert asks_for_order("is my new lamp on its way?", [])
    assert not asks_for_order("my new lamp arrived damaged, what now?", [])
    assert not asks_for_order("my order arrived damaged, what now?", [])
    assert asks_for_order("when will it arrive?", [], after_order=True)
    assert not asks_for_order("when will it arrive?", [], after_order=False)


def test_follow_up_detection() -> None:
    assert is_follow_up("and how long does that take?")
    assert is_follow_up("What about express?")
    assert not is_follow_up("How do I reset my password for the new account I made?")
    assert is_yes("yes please!") and not is_yes("yes, but how much is it?")


@pytest.mark.parametrize(
    ("previous", "text", "rewritten"),
    [
        ("How much is delivery to France?", "and to Canada?", "How much is delivery to Canada?"),
        ("how much is delivery?", "and to Canada?", "how much is delivery to Canada?"),
        (
            "is shipping to New York free?",
            "what about to Mexico City",
            "is shipping to Mexico City free?",
        ),
        (
            "How long does delivery to Berlin take, and what does it cost?",
            "and to Oslo?",
            "How long does delivery to Oslo take, and what does it cost?",
        ),
        # not a new thing: the two messages joined
        (
            "How do I return a lamp?",
            "and who pays for that?",
            "How do I return a lamp? and who pays for that?",
        ),
        (
            "How do I return a lamp?",
            "what if it is broken?",
            "How do I return a lamp? what if it is broken?",
        ),
    ],
)
def test_follow_ups_that_name_a_new_place_or_thing(previous, text, rewritten) -> None:
    assert rewrite_follow_up(previous, text) == rewritten


def test_a_new_thing_replaces_the_closest_word() -> None:
    words = ["rug", "wash", "duvet", "ruining"]
    table = {w: np.eye(4)[i] for i, w in enumerate(words)}
    table["rug"] = np.array([0.0, 0.1, 0.9, 0.0])  # a rug is most like a duvet

    def embed(texts):
        rows = [table.get(t, np.zeros(4)) for t in texts]
        return np.array([r / (np.linalg.norm(r) or 1.0) for r in rows])

    previous = "how do I wash the duvet without ruining it?"
    assert rewrite_follow_up(previous, "what about the rug?", embed) == (
        "how do I wash the rug without ruining it?"
    )
    assert rewrite_follow_up(previous, "what about the rug?") == f"{previous} what about the rug?"
