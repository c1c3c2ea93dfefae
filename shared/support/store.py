"""Lesson 08 (customer-service capstone): feedback and hand-off tickets, stored in SQLite.

Card numbers, e-mail addresses and phone numbers are redacted (:func:`shared.support.lang.redact`)
before anything is written: comments, questions, answers and ticket transcripts.

Every thumbs up/down, comment and hand-off ticket is one row in a small SQLite database under the
course cache (``cache_dir("support")``). The database runs in WAL mode with a busy timeout, and
each call opens its own short-lived connection, so several chat sessions (threads or processes)
can write at the same time and every write is stored. :meth:`SupportStore.feedback_report`
turns the rows into the numbers a support team looks at.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.config import FriendlyError
from shared.paths import cache_dir
from shared.support.lang import redact

__all__ = ["RATINGS", "FeedbackError", "SupportStore", "Ticket", "default_store_path"]

#: the ratings a person can give an answer (thumbs up / thumbs down).
RATINGS = ("up", "down")
MAX_COMMENT = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    session_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    rating TEXT CHECK (rating IN ('up', 'down')),
    comment TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL DEFAULT '',
    answer TEXT NOT NULL DEFAULT '',
    intent TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    session_id TEXT NOT NULL,
    customer_id INTEGER,
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    transcript TEXT NOT NULL
);
"""


class FeedbackError(FriendlyError):
    """Feedback that cannot be stored as given (unknown rating, nothing to store)."""


@dataclass(frozen=True)
class Ticket:
    """A hand-off to a human colleague, with the conversation so far."""

    id: int
    session_id: str
    customer_id: int | None
    reason: str
    status: str
    transcript: list[dict[str, str]]


def default_store_path() -> Path:
    """Where the lesson keeps its feedback and tickets: ``.cache/support/support.db``."""
    return cache_dir("support") / "support.db"


class SupportStore:
    """Feedback and tickets in one SQLite file (WAL mode, safe for concurrent writers)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per call: one transaction, committed on success, always closed."""
        with closing(sqlite3.connect(self.path, timeout=self.timeout_s)) as con:
            con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            with con:  # commits, or rolls back on an exception
                yield con

    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``'wal'`` once the store is created)."""
        with self._connect() as con:
            return con.execute("PRAGMA journal_mode").fetchone()[0]

    # ------------------------------------------------------------------ feedback
    def add_feedback(
        self,
        session_id: str,
        turn: int,
        rating: str | None,
        comment: str = "",
        question: str = "",
        answer: str = "",
        intent: str = "",
    ) -> int:
        """Store one rating and/or comment on the answer of ``turn``; returns the row id."""
        if rating is not None and rating not in RATINGS:
            raise FeedbackError(f"Unknown rating {rating!r}: use 'up', 'down' or None.")
        comment = (comment or "").strip()
        if rating is None and not comment:
            raise FeedbackError("Nothing to store: give a thumbs up/down or write a comment.")
        if len(comment) > MAX_COMMENT:
            raise FeedbackError(
                f"The comment has {len(comment)} characters; the limit is {MAX_COMMENT}. "
                "Please shorten it."
            )
        comment, question, answer = redact(comment), redact(question), redact(answer)
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO feedback (created, session_id, turn, rating, comment, question, "
                "answer, intent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), session_id, int(turn), rating, comment, question, answer, intent),
            )
            return int(cur.lastrowid or 0)

    def feedback(self, session_id: str | None = None) -> list[dict[str, object]]:
        """Every feedback row (oldest first), optionally for one session."""
        sql = "SELECT id, session_id, turn, rating, comment, question, answer, intent FROM feedback"
        args: Sequence[object] = ()
        if session_id is not None:
            sql, args = sql + " WHERE session_id = ?", (session_id,)
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql + " ORDER BY id", args)]

    def feedback_report(self) -> dict[str, object]:
        """Counts a team reads: ratings, satisfaction (share of thumbs up), downvotes per intent."""
        with self._connect() as con:
            up, down, comments, total = con.execute(
                "SELECT COALESCE(SUM(rating = 'up'), 0), COALESCE(SUM(rating = 'down'), 0), "
                "COALESCE(SUM(comment != ''), 0), COUNT(*) FROM feedback"
            ).fetchone()
            by_intent = dict(
                con.execute(
                    "SELECT intent, COUNT(*) FROM feedback WHERE rating = 'down' "
                    "GROUP BY intent ORDER BY COUNT(*) DESC, intent"
                ).fetchall()
            )
        rated = up + down
        return {
            "rows": total,
            "up": up,
            "down": down,
            "comments": comments,
            "satisfaction": round(up / rated, 3) if rated else None,
            "down_by_intent": by_intent,
        }

    # ------------------------------------------------------------------ tickets
    def open_ticket(
        self,
        session_id: str,
        reason: str,
        transcript: Sequence[dict[str, str]],
        customer_id: int | None = None,
    ) -> int:
        """Record a hand-off with the conversation so far (personal data redacted); returns the
        ticket number."""
        if not reason:
            raise ValueError("a ticket needs a reason")
        transcript = [{**m, "content": redact(str(m.get("content", "")))} for m in transcript]
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO tickets (created, session_id, customer_id, reason, transcript) "
                "VALUES (?, ?, ?, ?, ?)",
                (time.time(), session_id, customer_id, reason, json.dumps(list(transcript))),
            )
            return int(cur.lastrowid or 0)

    def tickets(self, status: str | None = None) -> list[Ticket]:
        """Tickets, oldest first, optionally only those with ``status`` (e.g. ``'open'``)."""
        sql = "SELECT id, session_id, customer_id, reason, status, transcript FROM tickets"
        args: Sequence[object] = ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [Ticket(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def close_ticket(self, ticket_id: int) -> None:
        """Mark a ticket as handled; raises ``KeyError`` for an unknown number."""
        with self._connect() as con:
            cur = con.execute("UPDATE tickets SET status = 'closed' WHERE id = ?", (ticket_id,))
        if cur.rowcount == 0:
            raise KeyError(f"no ticket #{ticket_id}")

    def clear(self) -> None:
        """Delete every row and restart the numbering (a fresh start for a demo or a lesson run)."""
        with self._connect() as con:
            con.execute("DELETE FROM feedback")
            con.execute("DELETE FROM tickets")
            con.execute("DELETE FROM sqlite_sequence WHERE name IN ('feedback', 'tickets')")
