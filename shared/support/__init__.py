"""Lesson 08 (customer-service capstone): the Maple & Mill support assistant, as a subpackage.

What lives where (each module names its part of the lesson):

- :mod:`~shared.support.bot` - :class:`SupportBot`, the order in which a message is handled
  (guardrails -> language -> hand-off -> orders -> products -> help centre), its
  :class:`BotConfig` and :func:`build_bot`;
- :mod:`~shared.support.nlu` - guardrails, the intent :class:`Router`, mood, order and
  follow-up cues;
- :mod:`~shared.support.lang` - language detection, the English-only notice, redaction;
- :mod:`~shared.support.kb` - the help centre: title-prefixed chunks, hybrid page search
  (Chroma + BM25 + rank fusion), the extractive answer and the rephrasing check;
- :mod:`~shared.support.shop` - read-only, parameterised SQL on the shop database;
- :mod:`~shared.support.store` - tickets and feedback in SQLite, redacted before storage;
- :mod:`~shared.support.ui` - the Gradio web chat (``python -m shared.support.ui``);
- :mod:`~shared.support.eval` - scoring on the blind question and conversation sets.

Only what the lesson builds on is re-exported here; the rest is imported from its module
(``from shared.support import kb``).
"""

from __future__ import annotations

from shared.support.bot import BotConfig, Reply, SupportBot, build_bot, build_ui
from shared.support.kb import build_knowledge_base
from shared.support.nlu import Router, load_examples
from shared.support.shop import open_shop
from shared.support.store import SupportStore

__all__ = [
    "BotConfig",
    "Reply",
    "Router",
    "SupportBot",
    "SupportStore",
    "build_bot",
    "build_knowledge_base",
    "build_ui",
    "load_examples",
    "open_shop",
]
