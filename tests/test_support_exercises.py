"""Lesson 08's exercise checks (shared.support.exercises) pass solutions, reject wrong answers."""

from __future__ import annotations

import math
import re

import pytest

from shared import checks
from shared.support import exercises
from shared.support.lang import luhn_ok
from shared.support.nlu import Route


@pytest.fixture(autouse=True)
def _fresh_checks():
    checks.reset()
    yield
    checks.reset()


# ---------------------------------------------------------------------------- exercise 1
def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def test_wilson_check_accepts_the_solution() -> None:
    assert exercises.check_wilson_exercise(*_wilson(26, 31))


@pytest.mark.parametrize(
    "wrong",
    [
        (None, None),  # not attempted
        (
            26 / 31 - 1.96 * math.sqrt(26 / 31 * 5 / 31 / 31),
            26 / 31 + 1.96 * math.sqrt(26 / 31 * 5 / 31 / 31),
        ),  # Wald
        _wilson(26, 31)[::-1],  # swapped ends
        _wilson(26, 31, z=1.64),  # a 90 % interval
        _wilson(26, 30),  # the wrong n
    ],
)
def test_wilson_check_rejects_wrong_intervals(wrong) -> None:
    assert not exercises.check_wilson_exercise(*wrong)


# ---------------------------------------------------------------------------- exercise 2
class _Router:
    """A router that answers from a table (unknown messages go to ``default``)."""

    def __init__(self, table: dict[str, str], default: str = "shipping") -> None:
        self.table, self.default = table, default

    def route_many(self, texts):
        return [Route(self.table.get(t, self.default), 1.0, "table") for t in texts]


HELD_OUT = ["where is my parcel", "refund please", "card declined", "reset my password"]
LABELS = ["shipping", "returns_refunds", "payments", "account"]
RIGHT = dict(zip(HELD_OUT, LABELS, strict=True))
PAY_LATER = dict.fromkeys(exercises.PAY_LATER, "payments")


def _router_checks(router) -> list[bool]:
    """The two checks of exercise 2, as recorded (the function returns both together)."""
    together = exercises.check_router_exercise(router, HELD_OUT, LABELS, 4)
    (_, routed), (_, kept) = checks.results()[-2:]
    assert bool(together) == (routed and kept)
    return [routed, kept]


def test_router_check_accepts_a_router_that_learned_pay_later() -> None:
    assert _router_checks(_Router(RIGHT | PAY_LATER)) == [True, True]


def test_router_check_rejects_a_router_that_did_not_learn() -> None:
    assert _router_checks(_Router(RIGHT)) == [False, True]


def test_router_check_rejects_a_router_that_sends_everything_to_payments() -> None:
    # 1 of 4 held-out messages right, down from 4
    assert _router_checks(_Router(PAY_LATER, default="payments")) == [True, False]


def test_router_check_fails_when_nothing_was_built() -> None:
    assert _router_checks(None) == [False, False]


# ---------------------------------------------------------------------------- exercise 3
def solution(text: str) -> str | None:
    for match in re.finditer(r"\d(?:[ -]?\d){12,18}", text):
        if luhn_ok(re.sub(r"\D", "", match.group())):
            return "card_number"
    return None


def no_luhn(text: str) -> str | None:
    return "card_number" if re.search(r"\d(?:[ -]?\d){12,18}", text) else None


def separators_only(text: str) -> str | None:
    for match in re.finditer(r"\d{4}(?:[ -]\d{4}){3}", text):
        if luhn_ok(re.sub(r"\D", "", match.group())):
            return "card_number"
    return None


def test_card_guard_check_accepts_the_solution() -> None:
    assert exercises.check_card_guard_exercise(solution)


@pytest.mark.parametrize("wrong", [no_luhn, separators_only, lambda text: None])
def test_card_guard_check_rejects_wrong_guards(wrong) -> None:
    assert not exercises.check_card_guard_exercise(wrong)
