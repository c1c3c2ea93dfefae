"""What a message means in the conversation (shared.support.dialog)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.support.dialog import (
    asks_for_order,
    asks_if_stocked,
    is_follow_up,
    is_yes,
    order_ids,
    price_request,
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
    # "I placed an order" is the customer's own order, as "my order" is
    assert asks_for_order("I just placed an order, what's its status?", [])
    assert asks_for_order("where is the order I placed on Monday?", [])
    assert not asks_for_order("I placed an order, can I still cancel it?", [])
    assert not asks_for_order("can I place an order by phone?", [])
    assert not asks_for_order("when will it arrive?", [], after_order=False)
    # a product from one of the customer's orders names the order
    assert asks_for_order("ok whatever. is my lantern delivered?", [], names_item=True)
    assert asks_for_order("the camping stoves i sent back, is that all done?", [], names_item=True)
    assert not asks_for_order("is my lantern delivered?", [], names_item=False)
    assert asks_for_order("did the lantern order come?", [], names_item=True)
    assert not asks_for_order("does that lamp also come in black?", [], names_item=True)
    assert not asks_for_order("the lantern arrived broken", [], names_item=True)
    assert not asks_for_order("is there a store where I could see the lamp?", [], names_item=True)
    # the customer knows the status and reports a problem: the help centre answers
    assert not asks_for_order("it says delivered but i never got it", [], after_order=True)


@pytest.mark.parametrize(
    ("text", "stocked"),
    [
        ("do you have wool throws?", True),
        ("Do you sell covers for garden furniture?", True),
        ("can I buy a spare lid for the kettle?", True),
        ("do you have a printed catalogue you could post to me?", True),
        ("Do you have a physical store I can visit?", False),
        ("do you have a shop in Riverton where I could hold the knives first?", False),
        ("Does Maple & Mill have a phone app?", False),
        ("do you have live chat", False),
        ("How do I return the throw?", False),
    ],
)
def test_a_question_about_the_shops_own_places_is_not_a_catalogue_question(
    text: str, stocked: bool
) -> None:
    assert asks_if_stocked(text) is stocked


def test_price_requests() -> None:
    cheapest = price_request("what's your cheapest lamp?")
    assert cheapest is not None and cheapest.order == "low" and cheapest.most is None
    assert "lamp" in cheapest.rest and "cheapest" not in cheapest.rest
    budget = price_request("anything under $49.50 for a camping trip?")
    assert budget is not None and budget.most == 49.5 and budget.order == ""
    assert price_request("a gift over 100 dollars for my dad").least == 100
    assert price_request("the most expensive knife set").order == "high"
    everything = price_request("most expensive thing you sell?")
    assert everything.any_product and not price_request("the cheapest lamp").any_product
    assert price_request("something under $50 for my sister's flat").open and not cheapest.open
    # prices in questions about the shop's rules, and no price at all
    assert price_request("is shipping free for orders over $150?") is None
    assert price_request("can I pay in instalments if my basket is under $150?") is None
    assert price_request("do you sell lamps?") is None


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
