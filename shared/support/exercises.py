"""Lesson 08 (customer-service capstone): the checks of the lesson's exercises.

The notebook and its solutions call the same functions, and ``tests/test_support_exercises.py``
shows that each one rejects a plausible wrong answer, so a check can never pass by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shared.checks import CheckResult, check
from shared.metrics import wilson

__all__ = [
    "CARD_CASES",
    "PAY_LATER",
    "check_card_guard_exercise",
    "check_router_exercise",
    "check_wilson_exercise",
]

#: exercise 2: messages about pay-later services, which must route to ``payments``.
PAY_LATER = ("Can I use Klarna at checkout?", "Is Afterpay an option?")
#: exercise 3: text -> what ``card_guard`` must return.
CARD_CASES: dict[str, str | None] = {
    "my card is 4111 1111 1111 1111, why was it declined?": "card_number",
    "Visa 4012-8888-8888-1881 please charge again": "card_number",
    "order 1047 has not arrived": None,
    "call me on 555-0134-2219-8876": None,  # 16 digits, fails the Luhn check
    "tracking 1234567890123": None,
    "pay with 5555555555554444 and ship to order 1003": "card_number",  # no separators
}


def check_wilson_exercise(low: Any, high: Any, k: int = 26, n: int = 31) -> CheckResult:
    """Exercise 1: ``(low, high)`` is the 95 % Wilson interval for ``k`` out of ``n``."""
    return check(
        f"Wilson interval for {k}/{n}",
        lambda: bool(np.allclose((float(low), float(high)), wilson(k, n), atol=1e-6)),
        hint=f"p = {k}/{n}, n = {n}; low = centre - half, high = centre + half",
    )


def check_router_exercise(
    router: Any, texts: Sequence[str], labels: Sequence[str], baseline_right: int
) -> CheckResult:
    """Exercise 2: pay-later messages route to ``payments``, and the held-out accuracy
    (``texts``/``labels``) stays within one message of ``baseline_right`` (two checks; the
    result passes when both do)."""
    routed = check(
        "pay-later messages route to payments",
        lambda: [r.intent for r in router.route_many(list(PAY_LATER))] == ["payments"] * 2,
        hint="add 3-4 examples such as ('Do you offer buy now, pay later?', 'payments')",
    )

    def kept() -> bool:
        right = sum(r.intent == y for r, y in zip(router.route_many(texts), labels, strict=True))
        return right >= baseline_right - 1

    held = check("held-out accuracy kept", kept, hint="add payment examples only")
    return CheckResult(bool(routed) and bool(held))


def check_card_guard_exercise(card_guard: Callable[[str], str | None]) -> CheckResult:
    """Exercise 3: ``card_guard`` finds Luhn-valid card numbers and nothing else."""
    return check(
        "card_guard finds card numbers and only them",
        lambda: all(card_guard(text) == want for text, want in CARD_CASES.items()),
        hint="strip spaces/dashes inside digit runs; Luhn: double every 2nd digit from the "
        "right, subtract 9 if > 9, sum % 10 == 0",
    )
