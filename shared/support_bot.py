"""Lesson 08 (customer-service capstone): the Maple & Mill support assistant, end to end.

:class:`SupportBot` answers one message of one chat session in a fixed order, so that every step
can be tested and measured on its own and none depends on the chat model being smart:

1. guardrails (:func:`check_input`, plus: an order number that is not the customer's is refused);
2. intent (:class:`Router`), sentiment and urgency (:func:`assess_mood`), follow-up detection;
3. hand-off to a person (a ticket with the conversation) when the customer asks for one, is
   upset, the topic is out of scope, or the assistant is unsure;
4. account questions from the shop's SQLite database (read-only, parameterised queries):
   order status and recommendations from the customer's history;
5. everything else from the knowledge base (Chroma via LangChain): below a similarity threshold
   the assistant does not guess; above it the chat model (any provider, via :mod:`shared.llm`)
   answers from the retrieved text, and an answer whose words are not supported by that text is
   replaced by the passage itself. Sources are always shown.

Feedback and tickets live in :mod:`shared.support_store`; the web chat is :mod:`shared.support_ui`
(``python -m shared.support_bot`` or ``make demo``); the evaluation is :mod:`shared.support_eval`.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import FriendlyError
from shared.support_eval import (
    MEANING,
    load_conversations,
    percentile,
    run_conversations,
    summarize,
)
from shared.support_kb import (
    INTENT_CATEGORIES,
    Hit,
    KnowledgeBase,
    build_knowledge_base,
    content_words,
    grounded_share,
)
from shared.support_nlu import (
    INTENTS,
    KB_INTENTS,
    Guard,
    Mood,
    Route,
    Router,
    assess_mood,
    check_input,
    load_examples,
)
from shared.support_shop import ShopDB, open_shop
from shared.support_store import FeedbackError, SupportStore, Ticket

__all__ = [
    "INTENTS",
    "KB_INTENTS",
    "MEANING",
    "SYSTEM_PROMPT",
    "BotConfig",
    "FeedbackError",
    "Guard",
    "Hit",
    "KnowledgeBase",
    "Mood",
    "Reply",
    "Route",
    "Router",
    "SessionError",
    "ShopDB",
    "SupportBot",
    "SupportStore",
    "Ticket",
    "assess_mood",
    "build_bot",
    "build_knowledge_base",
    "build_ui",
    "check_input",
    "content_words",
    "grounded_share",
    "is_follow_up",
    "launch",
    "load_conversations",
    "load_examples",
    "open_shop",
    "percentile",
    "run_conversations",
    "summarize",
]

SYSTEM_PROMPT = (
    "You are the customer-service assistant of Maple & Mill, an online shop for home goods. "
    "Answer in one or two short sentences, using only the help-centre text in the message. "
    "If that text does not contain the answer, say that you don't know."
)
_FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|then|so)\b", re.I)
_PRONOUN = re.compile(r"\b(it|that|this|they|them|those)\b", re.I)
_RECOMMEND = re.compile(r"\b(recommend|suggest|go(es)? with|gift idea)", re.I)
_ORDER_ID = re.compile(r"(?:\border\s*(?:number\s*|no\.?\s*)?#?\s*|#|\bMM-)(\d{4})\b", re.I)


class SessionError(FriendlyError):
    """A chat session that does not exist (expired, or never started)."""


@dataclass(frozen=True)
class BotConfig:
    """The assistant's thresholds and budgets (tune them on the evaluation set, not by eye)."""

    max_chars: int = 2000  # longer messages are refused
    min_route_confidence: float = 0.4  # below: "unsure what you need" -> hand-off
    min_retrieval_score: float = 0.40  # cosine similarity of the best chunk; below: do not guess
    k: int = 3  # chunks retrieved
    max_tokens: int = 48  # the local model writes ~20 tokens/s: keep answers short
    min_grounded: float = 0.6  # share of the answer's content words found in the sources
    history_turns: int = 2  # earlier exchanges sent to the model with the new question
    use_model: bool = True  # False: answer with the best retrieved sentences only (no LLM)
    model_timeout_s: float = 30.0  # a slower model answer is replaced by the quote


@dataclass(frozen=True)
class Reply:
    """What the assistant answered, and every decision behind it (for the UI and the evaluation)."""

    text: str
    intent: str
    confidence: float = 0.0
    sentiment: str = "neutral"
    urgent: bool = False
    handoff: bool = False
    handoff_reason: str | None = None
    ticket_id: int | None = None
    guardrail: str | None = None
    sources: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()  # pages of the retrieved chunks, best first
    retrieval_score: float | None = None
    grounded: float | None = None  # of the model's draft, before any fallback
    used_model: bool = False
    follow_up: bool = False
    latency_s: float = 0.0


@dataclass
class _Session:
    customer_id: int | None
    history: list[dict[str, str]] = field(default_factory=list)
    last_intent: str | None = None
    last_query: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def is_follow_up(text: str) -> bool:
    """A short message that leans on the previous turn ("and how long does that take?")."""
    words = text.split()
    return bool(_FOLLOW_UP.match(text)) or (len(words) <= 8 and bool(_PRONOUN.search(text)))


class SupportBot:
    """The assistant: one instance serves many concurrent chat sessions, each with own memory."""

    def __init__(
        self,
        router: Router,
        kb: KnowledgeBase,
        shop: ShopDB,
        store: SupportStore,
        config: BotConfig | None = None,
        llm_client: Any = None,
        model: str | None = None,
    ) -> None:
        self.router, self.kb, self.shop, self.store = router, kb, shop, store
        self.config = config or BotConfig()
        self._client, self._model = llm_client, model
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ sessions
    def new_session(self, customer_id: int | None = None) -> str:
        """Start a chat for a signed-in customer (or a guest); returns the session id."""
        if customer_id is not None and self.shop.customer(customer_id) is None:
            raise SessionError(f"There is no customer {customer_id}; sign in with a known account.")
        sid = uuid.uuid4().hex
        with self._lock:
            self._sessions[sid] = _Session(customer_id)
        return sid

    def _session(self, session_id: str) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionError(
                f"Unknown chat session {session_id!r}: start one with new_session()."
            )
        return session

    def history(self, session_id: str) -> list[dict[str, str]]:
        """The session's messages so far, as ``{"role", "content"}`` dicts."""
        return [dict(m) for m in self._session(session_id).history]

    # ------------------------------------------------------------------ answering
    def respond(self, session_id: str, message: Any) -> Reply:
        """Answer one message and return the final :class:`Reply`."""
        reply = None
        for item in self.stream(session_id, message):
            reply = item
        assert isinstance(reply, Reply)
        return reply

    def stream(self, session_id: str, message: Any) -> Iterator[str | Reply]:
        """Answer one message: yields the text so far while the model writes, then the Reply."""
        session = self._session(session_id)
        with session.lock:  # one message at a time per session; sessions run in parallel
            yield from self._answer(session, session_id, message)

    def _answer(self, s: _Session, sid: str, message: Any) -> Iterator[str | Reply]:
        t0, cfg = time.perf_counter(), self.config
        customer = self.shop.customer(s.customer_id) if s.customer_id is not None else None
        guard = check_input(message, cfg.max_chars, customer["email"] if customer else None)
        if guard is None:
            foreign = [o for o in self._order_ids(message) if not self.shop.owns(s.customer_id, o)]
            if foreign:
                msg = f"I can't find order {foreign[0]} in your account; for privacy I can "
                guard = Guard("other_customer", msg + "only discuss your own orders.")
        text = message.strip() if isinstance(message, str) else f"<{type(message).__name__}>"
        s.history.append({"role": "user", "content": text[: cfg.max_chars]})
        if guard is not None:
            s.history[-1]["guardrail"] = (
                guard.kind
            )  # kept for the transcript, never sent to the model
            yield self._finish(s, t0, Reply(guard.reply, "blocked", guardrail=guard.kind))
            return

        mood, route = assess_mood(text), self.router.route(text)
        follow = is_follow_up(text) and s.last_intent is not None and route.method != "rule"
        intent = s.last_intent if follow and s.last_intent else route.intent
        base = Reply("", intent, route.confidence, mood.sentiment, mood.urgent, follow_up=follow)
        query = f"{s.last_query} {text}" if follow else text

        reason = None
        if intent == "talk_to_human":
            reason = "you asked to talk to a person"
        elif mood.upset:
            reason = "I can tell this has been frustrating, and a person can do more than I can"
        elif intent == "out_of_scope":
            reason = "your question is outside what I can help with"
        elif route.confidence < cfg.min_route_confidence and not follow:
            reason = "I am not sure I understood what you need"
        if reason:
            yield self._finish(s, t0, self._handoff(s, sid, base, reason))
            return

        s.last_intent, s.last_query = intent, query
        if intent == "order_status":
            ids = self._order_ids(text) or self._order_ids(s.last_query)
            text_out = self.shop.order_summary(s.customer_id, ids[0] if ids else None)
            yield self._finish(s, t0, _replace(base, text=text_out, sources=("orders database",)))
            return
        if intent == "product_question" and _RECOMMEND.search(text):
            text_out = self.shop.recommend_text(s.customer_id)
            yield self._finish(s, t0, _replace(base, text=text_out, sources=("orders database",)))
            return
        # a follow-up is searched alone and joined to the previous question; the best match wins
        queries = [text, query] if follow else [text]
        yield from self._kb_answer(s, sid, t0, base, queries)

    def _kb_answer(self, s: _Session, sid: str, t0: float, base: Reply, queries: list[str]
                   ) -> Iterator[str | Reply]:  # fmt: skip
        cfg = self.config
        sections = INTENT_CATEGORIES.get(base.intent)
        hits = max((self.kb.search(q, cfg.k, sections) for q in queries), key=_top)
        if _top(hits) < cfg.min_retrieval_score:  # the router may be wrong: search everything
            hits = max([hits, *(self.kb.search(q, cfg.k) for q in queries)], key=_top)
        top = hits[0].score if hits else 0.0
        ids = tuple(h.doc_id for h in hits)
        base = _replace(base, retrieval_score=round(top, 3), doc_ids=ids)
        if top < cfg.min_retrieval_score:
            reason = "I could not find this in our help centre and would rather not guess"
            yield self._finish(s, t0, self._handoff(s, sid, base, reason))
            return
        context = "\n\n".join(f"[{h.title}]\n{h.text}" for h in hits[:2])
        question, draft, used, note = queries[0], "", False, ""
        try:
            for draft in self._generate(s, question, context) if cfg.use_model else ():
                used = True
                yield draft
        except Exception:  # noqa: BLE001 - a provider failure must not break the chat
            draft, used = "", False
            note = "(The language model did not answer in time; this is from our help centre.) "
        grounded = grounded_share(draft, context) if draft.strip() else 0.0
        answer = draft.strip()
        if grounded < cfg.min_grounded:  # not supported by the sources: quote them instead
            answer = note + self.kb.extract(question, hits[0], self.router.embed)
        sources = tuple(dict.fromkeys(h.title for h in hits[:2]))
        text_out = f"{answer}\n\nSources: " + "; ".join(sources)
        final = _replace(base, text=text_out, sources=sources, grounded=round(grounded, 3),
                         used_model=used)  # fmt: skip
        yield self._finish(s, t0, final)

    def _generate(self, s: _Session, question: str, context: str) -> Iterator[str]:
        """Stream the chat model's answer from the retrieved text; yields the text so far."""
        if self._client is None:
            from shared import llm

            self._client, self._model = llm.client(), self._model or llm.model_name()
        turns = [{"role": m["role"], "content": m["content"]} for m in s.history[:-1]
                 if "guardrail" not in m]  # fmt: skip
        past = turns[-2 * self.config.history_turns :] if self.config.history_turns else []
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *past,
                    {"role": "user", "content": f"Help-centre text:\n{context}\n\n"
                                                f"Question: {question}"}]  # fmt: skip
        stream = self._client.chat.completions.create(
            model=self._model, messages=messages, max_tokens=self.config.max_tokens,
            temperature=0.0, stream=True, timeout=self.config.model_timeout_s,
        )  # fmt: skip
        text, deadline = "", time.perf_counter() + self.config.model_timeout_s
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                yield text
            if time.perf_counter() > deadline:
                stream.close()
                raise TimeoutError(f"no complete answer within {self.config.model_timeout_s} s")

    def _handoff(self, s: _Session, sid: str, base: Reply, reason: str) -> Reply:
        ticket = self.store.open_ticket(sid, reason, s.history, s.customer_id)
        text = (f"I'm handing this conversation to a colleague (ticket #{ticket}) because "
                f"{reason}. A person will reply by email within 1 business day; live chat is "
                "staffed Monday to Saturday, 8 am - 8 pm.")  # fmt: skip
        return _replace(base, text=text, handoff=True, handoff_reason=reason, ticket_id=ticket)

    def _finish(self, s: _Session, t0: float, reply: Reply) -> Reply:
        message = {"role": "assistant", "content": reply.text, "intent": reply.intent}
        if reply.guardrail:
            message["guardrail"] = reply.guardrail
        s.history.append(message)
        return _replace(reply, latency_s=time.perf_counter() - t0)

    @staticmethod
    def _order_ids(text: Any) -> list[int]:
        return [int(m) for m in _ORDER_ID.findall(text)] if isinstance(text, str) else []

    # ------------------------------------------------------------------ feedback
    def feedback(self, session_id: str, turn: int, rating: str | None, comment: str = "") -> int:
        """Store a thumbs up/down and/or comment on the assistant's answer ``turn`` (0-based)."""
        history = self._session(session_id).history
        answers = [i for i, m in enumerate(history) if m["role"] == "assistant"]
        if not 0 <= turn < len(answers):
            raise FeedbackError(f"There is no answer number {turn} in this chat to rate.")
        i = answers[turn]
        question = history[i - 1]["content"] if i else ""
        answer, intent = history[i]["content"], history[i].get("intent", "")
        return self.store.add_feedback(session_id, turn, rating, comment, question, answer, intent)


def _top(hits: list[Hit]) -> float:
    return hits[0].score if hits else 0.0


def _replace(reply: Reply, **changes: Any) -> Reply:
    from dataclasses import replace

    return replace(reply, **changes)


def build_bot(
    config: BotConfig | None = None,
    store_path: str | Path | None = None,
    examples: Sequence[tuple[str, str]] | None = None,
    llm_client: Any = None,
    model: str | None = None,
) -> SupportBot:
    """The assistant over the course data: router, knowledge base, shop database, feedback store."""
    from shared.models import load_embedder
    from shared.paths import data_path

    embedder = load_embedder()
    router = Router(examples or load_examples(data_path("support", "router_examples.jsonl")),
                    embedder)  # fmt: skip
    return SupportBot(router, build_knowledge_base(), open_shop(), SupportStore(store_path),
                      config, llm_client, model)  # fmt: skip


def build_ui(bot: SupportBot) -> Any:
    """The Gradio web chat for ``bot`` (see :mod:`shared.support_ui`; gradio loads on first use)."""
    from shared import support_ui

    return support_ui.build_ui(bot)


def launch(bot: SupportBot, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = False) -> Any:  # fmt: skip
    """Serve the web chat on ``http://host:port``: localhost and no public link by default."""
    from shared import support_ui

    return support_ui.launch(bot, host=host, port=port, share=share, block=block)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.support_bot``: open the web chat on http://127.0.0.1:7860."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m shared.support_bot", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (off)")
    a = p.parse_args(argv)
    print(f"Maple & Mill help chat on http://{a.host}:{a.port} (Ctrl+C stops it)")
    launch(build_bot(), host=a.host, port=a.port, share=a.share, block=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
