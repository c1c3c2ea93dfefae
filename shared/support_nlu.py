"""Lesson 08 (customer-service capstone): understanding a message before anyone answers it.

Three fast, model-free steps run on every message, in this order:

1. :func:`check_input` — guardrails: non-text, empty and over-long input, prompt-injection and
   system-prompt-extraction attempts, and requests for another customer's data;
2. :class:`Router` — the intent, one of :data:`INTENTS`: a few high-precision keyword rules, then
   nearest neighbours over labelled example sentences embedded with the local MiniLM;
3. :func:`assess_mood` — sentiment and urgency from a small lexicon, so an upset customer reaches
   a person.

None of them depends on the chat model being smart: they are rules and one embedding lookup
(a few milliseconds), measured in the lesson on held-out conversations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "INTENTS",
    "KB_INTENTS",
    "Guard",
    "Mood",
    "Route",
    "Router",
    "assess_mood",
    "check_input",
    "load_examples",
]

#: the intent labels, shared with lesson 07's classifier.
INTENTS = (
    "order_status",
    "shipping",
    "returns_refunds",
    "account",
    "payments",
    "product_question",
    "talk_to_human",
    "out_of_scope",
)
#: intents answered from the knowledge base.
KB_INTENTS = frozenset({"shipping", "returns_refunds", "account", "payments", "product_question"})


# ---------------------------------------------------------------------------- guardrails
@dataclass(frozen=True)
class Guard:
    """A blocked message: which rule fired and the answer the customer sees."""

    kind: str  # not_text | empty | too_long | injection | prompt_extraction | other_customer
    reply: str


_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|prompt|guidelines)\b"
    r"|\byou are now\b|\bact as (an? )?(unrestricted|different|evil|admin)|\bjailbreak"
    r"|\bdeveloper mode\b|\bdo anything now\b|\bpretend (you|to) (are|be|have) no\b"
    r"|\bnew instructions?\s*:|\bsystem\s*:\s",
    re.I | re.S,
)
_EXTRACTION = re.compile(
    r"\b(system|hidden|initial|original|secret)\s+(prompt|instructions?|message)"
    r"|\b(reveal|show|print|repeat|tell me|what (is|are|were))\b.{0,30}\b(your|the)\s+"
    r"(prompt|instructions?|rules|configuration)"
    r"|\brepeat (the|everything) (text )?(above|before)\b",
    re.I | re.S,
)
_OTHER_CUSTOMER = re.compile(
    r"\b(another|other|different|someone else'?s?|somebody else'?s?)\s+(customer|user|person|"
    r"account|people)'?s?\b.{0,40}\b(orders?|address|email|phone|details|data|account|history)"
    r"|\b(orders?|address|email|phone|details|data|account|history)\b.{0,30}\bof (another|other|"
    r"a different) (customer|user|person)"
    r"|\b(list|show|give me|export)\b.{0,20}\b(all|every)\s+(customers?|users?|emails?)",
    re.I | re.S,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def check_input(message: Any, max_chars: int = 2000, own_email: str | None = None) -> Guard | None:
    """The guardrail that blocks ``message``, or None when it may go on to the assistant.

    ``own_email`` is the signed-in customer's address: any other address in the message counts
    as a request for someone else's data.
    """
    if not isinstance(message, str):
        return Guard("not_text", "I can only read typed text. Please write your question.")
    text = message.strip()
    if not text:
        return Guard("empty", "Your message was empty. What can I help you with?")
    if len(text) > max_chars:
        return Guard(
            "too_long",
            f"Your message has {len(text)} characters; I can read up to {max_chars}. "
            "Please shorten it to the question itself.",
        )
    if _EXTRACTION.search(text):
        return Guard(
            "prompt_extraction",
            "I can't share how I'm configured, but I'm happy to help with orders, "
            "shipping, returns, payments, your account or our products.",
        )
    if _INJECTION.search(text):
        return Guard(
            "injection",
            "I can't change how I work, but I can help with orders, shipping, returns, "
            "payments, your account or our products.",
        )
    emails = {e.lower().rstrip(".") for e in _EMAIL.findall(text)}
    foreign = emails - {own_email.lower()} if own_email else set()
    if _OTHER_CUSTOMER.search(text) or foreign:
        return Guard(
            "other_customer",
            "For privacy I can only discuss the account you are signed in with. The account "
            "holder can contact us directly.",
        )
    return None


# ---------------------------------------------------------------------------- mood
_NEGATIVE = {
    "angry": 2, "furious": 2, "unacceptable": 2, "ridiculous": 2, "terrible": 2, "worst": 2,
    "scam": 2, "disgusted": 2, "outraged": 2, "fed up": 2, "sick of": 2, "useless": 2,
    "awful": 1, "annoyed": 1, "disappointed": 1, "frustrated": 1, "upset": 1, "horrible": 1,
    "still": 1, "again": 1, "never": 1, "waste": 1, "broken": 1, "complaint": 1,
}  # fmt: skip
_POSITIVE = ("thank", "thanks", "great", "perfect", "love", "awesome", "helpful", "happy")
_URGENT = ("urgent", "asap", "immediately", "right now", "emergency", "today", "tonight")


@dataclass(frozen=True)
class Mood:
    """Sentiment (negative / neutral / positive), its score, urgency, and whether to escalate."""

    sentiment: str
    score: int  # negative cues minus positive ones; >= UPSET_SCORE means upset
    urgent: bool
    upset: bool


UPSET_SCORE = 3


def assess_mood(text: str) -> Mood:
    """Score ``text`` with the lexicon; shouting (CAPITALS, '!!') adds to the negative score."""
    low = text.lower()
    score = sum(w for cue, w in _NEGATIVE.items() if re.search(rf"\b{cue}\b", low))
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.6:
        score += 2
    score += min(text.count("!") // 2, 2)
    score -= sum(1 for cue in _POSITIVE if re.search(rf"\b{cue}", low))
    sentiment = "negative" if score >= 2 else "positive" if score < 0 else "neutral"
    urgent = any(re.search(rf"\b{cue}\b", low) for cue in _URGENT)
    return Mood(sentiment, score, urgent, score >= UPSET_SCORE)


# ---------------------------------------------------------------------------- routing
@dataclass(frozen=True)
class Route:
    """The router's decision: intent, confidence in [0, 1] and what decided it."""

    intent: str
    confidence: float
    method: str  # "rule" or "knn"


_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("talk_to_human", re.compile(
        r"\b(human|real person|live agent|an agent|representative|operator|your manager|"
        r"speak (to|with) (a|someone|somebody)|talk (to|with) (a|someone|somebody)|call me)\b",
        re.I)),
    ("order_status", re.compile(r"\b(where|status|track)\b.{0,25}\b(order|parcel|package)\b|"
                                r"\border\s*#?\s*\d{4}\b", re.I)),
    ("product_question", re.compile(r"\b(recommend|suggest)\w*\b.{0,40}\b(product|gift|"
                                    r"something|buy|kitchen|home|pan|for me)\b", re.I)),
)  # fmt: skip


def load_examples(path: str | Path) -> list[tuple[str, str]]:
    """``(text, intent)`` pairs from a JSON-lines file with ``text`` and ``intent`` fields."""
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["intent"] not in INTENTS:
            raise ValueError(f"{path}:{n}: unknown intent {row['intent']!r}")
        pairs.append((row["text"], row["intent"]))
    return pairs


class Router:
    """Intent router: keyword rules first, then a weighted vote of the k nearest examples.

    A message whose best example is less similar than ``min_similarity`` is ``out_of_scope``:
    nothing the shop handles looks like it.
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]],
        embedder: Any,
        k: int = 5,
        min_similarity: float = 0.35,
        use_rules: bool = True,
    ) -> None:
        if not examples:
            raise ValueError("the router needs labelled examples")
        self.embedder, self.k, self.min_similarity = embedder, k, min_similarity
        self.use_rules = use_rules
        self.texts = [t for t, _ in examples]
        self.labels = np.array([i for _, i in examples])
        self.matrix = self.embed(self.texts)  # (N, D), unit rows

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), D)."""
        vecs = self.embedder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def route(self, text: str) -> Route:
        """The intent of one message."""
        return self.route_many([text])[0]

    def route_many(self, texts: Sequence[str]) -> list[Route]:
        """Intents for many messages with one embedding batch."""
        sims = self.embed(texts) @ self.matrix.T  # (B, N) cosine similarities
        out = []
        for text, row in zip(texts, sims, strict=True):
            rule = next((i for i, p in _RULES if p.search(text)), None) if self.use_rules else None
            if rule:
                out.append(Route(rule, 1.0, "rule"))
                continue
            top = np.argsort(-row)[: self.k]
            best = float(row[top[0]])
            if best < self.min_similarity:
                out.append(Route("out_of_scope", round(1.0 - best, 3), "knn"))
                continue
            votes: dict[str, float] = {}
            for j in top:
                votes[self.labels[j]] = votes.get(self.labels[j], 0.0) + max(float(row[j]), 0.0)
            intent = max(votes, key=lambda key: votes[key])
            confidence = votes[intent] / sum(votes.values())
            out.append(Route(str(intent), round(confidence, 3), "knn"))
        return out
