"""The checks on what a customer is shown (shared.support.answer)."""

from __future__ import annotations

from shared.support.answer import accept_rephrasing, grounded_share, unsupported_facts
from shared.support.kb import content_words


def test_grounding_checks() -> None:
    source = "Standard delivery takes 3-5 business days. Express costs $12.95."
    assert content_words("The parcels take 3-5 days!") == {"parcel", "take", "3-5", "days"}
    assert grounded_share("Standard delivery takes 3-5 business days.", source) == 1.0
    assert grounded_share("", source) == 0.0
    assert unsupported_facts("Express costs $15 and takes 20 months.", source) == ["$15", "20"]
    assert unsupported_facts("Express costs $12.95.", source) == []
    assert unsupported_facts("Ask Klarna for help.", source) == ["Klarna"]


def test_a_rephrasing_is_accepted_only_with_the_same_facts() -> None:
    extract = "Express, delivery time after dispatch: 1-2 business days, price: $12.95."
    assert accept_rephrasing("Express delivery costs $12.95 and takes 1-2 business days.", extract)
    assert not accept_rephrasing("Express delivery takes 1-2 business days.", extract)  # no price
    assert not accept_rephrasing("Express costs $15 and takes 1-2 business days.", extract)
