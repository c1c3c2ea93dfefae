"""Lesson 08 (customer-service capstone): evaluating the whole assistant on held-out conversations.

``data/support/eval_conversations.jsonl`` holds labelled multi-turn conversations that the
router never saw: per turn the expected intent, whether a person should take over, which
guardrail should fire, and which help-centre page answers it. :func:`run_conversations` plays
them through a :class:`~shared.support_bot.SupportBot` (fresh session per conversation, the
signed-in customer set) and :func:`summarize` turns the results into the numbers a team needs
before letting the assistant talk to customers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.metrics import accuracy, precision_recall_f1

__all__ = ["MEANING", "load_conversations", "percentile", "run_conversations", "summarize"]

#: what each number means for a real deployment (shown next to the table in the lesson).
MEANING = {
    "routing accuracy": "share of messages sent to the right intent; a wrong intent means the "
    "wrong database, help section or a needless hand-off",
    "retrieval hit rate@3": "share of knowledge-base questions whose answering page is among "
    "the 3 retrieved; a miss can only end in a hand-off or a wrong answer",
    "answer has expected fact": "share of answered knowledge-base turns whose reply contains "
    "the fact a correct answer needs (e.g. '3-5 business days')",
    "model drafts grounded": "share of the model's drafts whose content words are mostly "
    "(>= 60 %) in the retrieved text; the rest were replaced by a quote",
    "hand-off precision": "of the conversations handed to a person, the share that needed one "
    "(low = staff time wasted)",
    "hand-off recall": "of the conversations that needed a person, the share handed over "
    "(low = customers stuck with a bot)",
    "guardrail pass rate": "share of attack / bad-input messages answered by the right guardrail",
    "false blocks": "share of ordinary messages wrongly blocked by a guardrail",
    "latency median (s)": "typical wait per turn on this machine, model included",
    "latency p95 (s)": "the slow tail: 1 turn in 20 is slower than this",
}


def load_conversations(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The labelled conversations (default ``data/support/eval_conversations.jsonl``)."""
    if path is None:
        from shared.paths import data_path

        path = data_path("support", "eval_conversations.jsonl")
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, not {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_conversations(
    bot: Any, conversations: Sequence[dict[str, Any]], progress: bool = True
) -> list[dict[str, Any]]:
    """Play every conversation through ``bot``; one row per turn (expected vs got)."""
    from tqdm.auto import tqdm

    rows = []
    total = sum(len(c["turns"]) for c in conversations)
    with tqdm(total=total, desc="turns", disable=not progress) as bar:
        for conv in conversations:
            sid = bot.new_session(conv.get("customer_id"))
            for n, turn in enumerate(conv["turns"]):
                reply = bot.respond(sid, turn["user"])
                rows.append({
                    "conversation": conv["id"], "turn": n,
                    "expected_intent": turn["intent"], "intent": reply.intent,
                    "expected_handoff": turn["handoff"], "handoff": reply.handoff,
                    "expected_guardrail": turn["guardrail"], "guardrail": reply.guardrail,
                    "doc_id": turn.get("doc_id"), "retrieved": list(reply.doc_ids),
                    "answer_contains": turn.get("answer_contains"), "text": reply.text,
                    "grounded": reply.grounded, "used_model": reply.used_model,
                    "latency_s": reply.latency_s,
                })  # fmt: skip
                bar.update()
    return rows


def summarize(rows: Sequence[dict[str, Any]], k: int = 3) -> dict[str, float]:
    """The evaluation's numbers (see :data:`MEANING`), rounded to 3 decimals."""
    normal = [r for r in rows if r["expected_guardrail"] is None]
    attacks = [r for r in rows if r["expected_guardrail"] is not None]
    kb = [r for r in normal if r["doc_id"]]
    answered = [r for r in normal if r["answer_contains"] or (r["doc_id"] and not r["handoff"])]
    drafts = [r for r in rows if r["used_model"]]
    latencies = [r["latency_s"] for r in rows]
    _, recall_, _ = precision_recall_f1(
        [r["handoff"] for r in normal], [r["expected_handoff"] for r in normal], True
    )
    precision_, _, _ = precision_recall_f1(
        [r["handoff"] for r in normal], [r["expected_handoff"] for r in normal], True
    )

    def fact(r: dict[str, Any]) -> bool:
        needle = r["answer_contains"]
        return bool(needle) and needle.lower() in r["text"].lower()

    out = {
        "routing accuracy": accuracy(
            [r["intent"] for r in normal], [r["expected_intent"] for r in normal]
        ),  # fmt: skip
        "retrieval hit rate@3": (
            sum(r["doc_id"] in list(dict.fromkeys(r["retrieved"]))[:k] for r in kb) / len(kb)
            if kb
            else float("nan")
        ),  # fmt: skip
        "answer has expected fact": (
            sum(fact(r) for r in answered if r["answer_contains"])
            / max(1, sum(1 for r in answered if r["answer_contains"]))
        ),
        "model drafts grounded": (
            sum((r["grounded"] or 0) >= 0.6 for r in drafts) / len(drafts)
            if drafts
            else float("nan")
        ),  # fmt: skip
        "hand-off precision": precision_,
        "hand-off recall": recall_,
        "guardrail pass rate": (
            sum(r["guardrail"] == r["expected_guardrail"] for r in attacks) / len(attacks)
            if attacks
            else float("nan")
        ),  # fmt: skip
        "false blocks": sum(r["guardrail"] is not None for r in normal) / max(1, len(normal)),
        "latency median (s)": statistics.median(latencies),
        "latency p95 (s)": percentile(latencies, 95),
    }
    return {key: round(float(v), 3) for key, v in out.items()}
