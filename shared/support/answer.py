"""Lesson 08 (customer-service capstone): checking what the customer is shown.

The assistant's answer is extractive (:meth:`shared.support.kb.KnowledgeBase.extract`). A chat
model may rephrase it (:func:`rephrase`), and the rephrasing is shown only when
:func:`accept_rephrasing` finds that it adds no number or name, drops none, and that most of its
content words are the source's (:func:`grounded_share`, :func:`unsupported_facts`).
"""

from __future__ import annotations

import re
from typing import Any

from shared.support.kb import content_words

__all__ = [
    "REPHRASE_PROMPT",
    "accept_rephrasing",
    "grounded_share",
    "rephrase",
    "unsupported_facts",
]

_NUMBER = re.compile(r"\$?\d+(?:[.,:]\d+)*(?:\s?%)?")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)*")


def grounded_share(answer: str, context: str) -> float:
    """Share of the answer's content words found in ``context`` (0.0 for an empty answer)."""
    said = content_words(answer)
    if not said:
        return 0.0
    return len(said & content_words(context)) / len(said)


def _numbers(text: str) -> set[str]:
    return {n.replace(" ", "").rstrip(".,:") for n in _NUMBER.findall(text)}


def unsupported_facts(answer: str, source: str) -> list[str]:
    """Numbers, prices and capitalised names in ``answer`` that ``source`` does not contain."""
    missing = sorted(n for n in _numbers(answer) if n not in _numbers(source))
    low = source.lower()
    names = {m.group() for m in _NAME.finditer(answer)}
    return missing + sorted(n for n in names if n.lower() not in low and n not in {"I", "Maple"})


REPHRASE_PROMPT = (
    "You are the customer-service assistant of Maple & Mill. Rewrite the help-centre sentences "
    "as a short, friendly answer to the customer's question. Keep every number, price and name "
    "exactly as written. Add nothing that is not in the sentences."
)


def accept_rephrasing(draft: str, source: str, min_grounded: float = 0.7) -> bool:
    """A model's rephrasing may be shown only if it adds no number or name, drops no number or
    name of ``source``, and at least ``min_grounded`` of its content words are the source's."""
    return (
        not unsupported_facts(source, draft)
        and not unsupported_facts(draft, source)
        and grounded_share(draft, source) >= min_grounded
    )


def rephrase(
    client: Any,
    model: str,
    question: str,
    sentences: str,
    max_tokens: int = 64,
    timeout_s: float = 20.0,
) -> str:
    """The chat model's rephrasing of ``sentences`` for ``question`` ('' when the call fails)."""
    messages = [
        {"role": "system", "content": REPHRASE_PROMPT},
        {"role": "user", "content": f"Question: {question}\n\nHelp-centre sentences: {sentences}"},
    ]
    try:
        out = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            timeout=timeout_s,
        )
    except Exception:  # noqa: BLE001 - a provider failure must not break the chat
        return ""
    return (out.choices[0].message.content or "").strip()
