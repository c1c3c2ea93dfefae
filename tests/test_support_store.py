"""Feedback and tickets (shared.support.store): durable, reported, safe for concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.support.store import FeedbackError, SupportStore


@pytest.fixture
def store(tmp_path):
    return SupportStore(tmp_path / "support.db")


def test_store_uses_wal_and_survives_reopening(store, tmp_path) -> None:
    assert store.journal_mode() == "wal"
    row = store.add_feedback("s1", 0, "up", "  quick answer  ", "Where is my order?", "Shipped.")
    again = SupportStore(tmp_path / "support.db")  # a new process would see the same
    assert again.feedback() == [
        {
            "id": row,
            "session_id": "s1",
            "turn": 0,
            "rating": "up",
            "comment": "quick answer",
            "question": "Where is my order?",
            "answer": "Shipped.",
            "intent": "",
        }
    ]


def test_feedback_report_counts(store) -> None:
    store.add_feedback("a", 0, "up", intent="shipping")
    store.add_feedback("a", 1, "down", "wrong page", intent="payments")
    store.add_feedback("b", 0, "down", intent="payments")
    store.add_feedback("b", 1, None, "please add PayPal Pay Later")
    report = store.feedback_report()
    assert report == {
        "rows": 4,
        "up": 1,
        "down": 2,
        "comments": 2,
        "satisfaction": 0.333,
        "down_by_intent": {"payments": 2},
    }
    assert [r["turn"] for r in store.feedback("b")] == [0, 1]


def test_feedback_errors(store) -> None:
    with pytest.raises(FeedbackError, match="Unknown rating 'meh'"):
        store.add_feedback("s", 0, "meh")
    with pytest.raises(FeedbackError, match="Nothing to store"):
        store.add_feedback("s", 0, None, "   ")
    with pytest.raises(FeedbackError, match="limit is 2000"):
        store.add_feedback("s", 0, "down", "x" * 2001)
    assert store.feedback_report()["rows"] == 0


def test_tickets_keep_the_transcript(store) -> None:
    transcript = [{"role": "user", "content": "I want a person"}]
    n = store.open_ticket("s9", "you asked to talk to a person", transcript, customer_id=3)
    (ticket,) = store.tickets("open")
    assert (ticket.id, ticket.customer_id, ticket.transcript) == (n, 3, transcript)
    store.close_ticket(n)
    assert store.tickets("open") == [] and store.tickets()[0].status == "closed"
    with pytest.raises(KeyError, match="no ticket #999"):
        store.close_ticket(999)
    with pytest.raises(ValueError, match="needs a reason"):
        store.open_ticket("s9", "", transcript)


def test_concurrent_thread_writes_are_all_stored(store) -> None:
    def write(i: int) -> int:
        return store.add_feedback(f"session-{i % 8}", i, "up" if i % 3 else "down", f"c{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(write, range(200)))
    assert len(set(ids)) == 200
    rows = store.feedback()
    assert len(rows) == 200 and {r["comment"] for r in rows} == {f"c{i}" for i in range(200)}


def _write_many(path: str, worker: int, n: int) -> None:
    store = SupportStore(path)
    for i in range(n):
        store.add_feedback(f"proc-{worker}", i, "down", f"w{worker}-{i}")
        store.open_ticket(f"proc-{worker}", "test", [{"role": "user", "content": str(i)}])


def test_concurrent_process_writes_are_all_stored(store) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(store.path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert store.feedback_report()["rows"] == 100
    assert len(store.tickets()) == 100


def test_personal_data_is_redacted_before_it_is_stored(store) -> None:
    store.add_feedback(
        "s",
        0,
        "down",
        "my card 4111-1111-1111-1111 was charged twice",
        "mail me at jo@example.org",
        "Call 555-013-4221 for help.",
    )
    (row,) = store.feedback()
    assert row["comment"] == "my card [card number] was charged twice"
    assert row["question"] == "mail me at [email]" and row["answer"] == "Call [phone] for help."
    store.open_ticket(
        "s",
        "asked for a person",
        [{"role": "user", "content": "card 4111 1111 1111 1111, phone +1 555 013 4221"}],
    )
    (ticket,) = store.tickets()
    assert ticket.transcript == [{"role": "user", "content": "card [card number], phone [phone]"}]
