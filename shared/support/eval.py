"""Lesson 08 (customer-service capstone): scoring the assistant on held-out questions and chats.

The evaluation sets in ``data/support`` were written blind, from the help-centre pages and the
shop data only: ``dev_*`` for tuning, ``test_*`` frozen and read once at the end.

- questions: ``{"id", "question", "answerable", "page", "facts", "style"}``;
- conversations: ``{"id", "customer_id", "turns": [{"user", "expect", "page", "facts"}]}`` with
  ``expect`` one of ``answer, decline, handoff, refuse, order, recommend``.

The rules (:func:`turn_correct`): an answer is right when every fact is in the reply
(case-insensitive) and the assistant answered; a decline is right when the assistant declined or
handed over (it invented nothing); hand-off, refusal, order and recommendation need that action,
plus the facts where there are any. Retrieval is right when the gold page is among the top 3.
Every rate comes with its count and a Wilson 95 % interval (:func:`wilson`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared import metrics

__all__ = [
    "format_rate",
    "load_jsonl",
    "percentile",
    "run_conversations",
    "run_questions",
    "score_conversations",
    "score_questions",
    "turn_correct",
    "wilson",
]


def load_jsonl(name: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (a bare name is looked up in ``data/support``)."""
    path = Path(name)
    if not path.is_file():
        from shared.paths import data_path

        path = data_path("support", str(name))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (:func:`shared.metrics.wilson`)."""
    return metrics.wilson(k, n, z)


def format_rate(k: int, n: int) -> str:
    """``0.79 (38/48, 95 % CI 0.66-0.88)``."""
    lo, hi = wilson(k, n)
    return f"{k / n:.2f} ({k}/{n}, 95 % CI {lo:.2f}-{hi:.2f})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, not {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _has_facts(text: str, facts: Sequence[str]) -> bool:
    low = text.lower()
    return all(f.lower() in low for f in facts)


def turn_correct(expect: str, facts: Sequence[str], action: str, text: str) -> bool:
    """Whether a reply with ``action`` and ``text`` is right for a turn labelled ``expect``."""
    if expect == "decline":
        return action in ("decline", "handoff")
    if expect in ("answer", "order", "recommend"):
        return action == expect and _has_facts(text, facts)
    return action == expect  # handoff, refuse


def run_questions(bot: Any, questions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ask every question in a fresh guest session; one row per question."""
    rows = []
    for q in questions:
        reply = bot.respond(bot.new_session(None), q["question"])
        # the pages retrieved; searched again when a rule answered before retrieval ran
        pages = list(reply.doc_ids) or [h.doc_id for h in bot.search(q["question"])[1]]
        rows.append(
            {
                "id": q["id"],
                "answerable": q["answerable"],
                "page": q["page"],
                "facts": q["facts"],
                "action": reply.action,
                "text": reply.text,
                "retrieved": pages,
                "used_model": reply.used_model,
                "score": reply.retrieval_score,
                "latency_s": reply.latency_s,
            }
        )
    return rows


def score_questions(rows: Sequence[dict[str, Any]], k: int = 3) -> dict[str, tuple[int, int]]:
    """``{measure: (right, total)}``: page in top k, answerable correct, unanswerable declined."""
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    return {
        "page in top 3": (sum(r["page"] in r["retrieved"][:k] for r in ans), len(ans)),
        "answerable correct": (
            sum(turn_correct("answer", r["facts"], r["action"], r["text"]) for r in ans),
            len(ans),
        ),
        "unanswerable declined": (
            sum(r["action"] in ("decline", "handoff") for r in una),
            len(una),
        ),
    }


def run_conversations(bot: Any, conversations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Play every conversation (fresh session, its customer signed in); one row per turn."""
    rows = []
    for conv in conversations:
        sid = bot.new_session(conv.get("customer_id"))
        for n, turn in enumerate(conv["turns"]):
            reply = bot.respond(sid, turn["user"])
            rows.append(
                {
                    "conversation": conv["id"],
                    "turn": n,
                    "user": turn["user"],
                    "expect": turn["expect"],
                    "facts": turn.get("facts") or [],
                    "page": turn.get("page"),
                    "action": reply.action,
                    "text": reply.text,
                    "retrieved": list(reply.doc_ids),
                    "used_model": reply.used_model,
                    "latency_s": reply.latency_s,
                    "correct": turn_correct(
                        turn["expect"], turn.get("facts") or [], reply.action, reply.text
                    ),
                }
            )
    return rows


def score_conversations(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """``{measure: (right, total)}``: all turns, then per expected action."""
    out = {"turns right": (sum(r["correct"] for r in rows), len(rows))}
    for expect in sorted({r["expect"] for r in rows}):
        mine = [r for r in rows if r["expect"] == expect]
        out[f"  {expect}"] = (sum(r["correct"] for r in mine), len(mine))
    return out
