"""Lesson 08 (customer-service capstone): understanding a message before anyone answers it.

Three fast, model-free steps run on every message, in this order:

1. :func:`check_input` — guardrails: non-text, empty and over-long input, prompt-injection and
   system-prompt-extraction attempts, and requests for another customer's data;
2. :class:`Router` — the intent, one of :data:`INTENTS`: a few high-precision keyword rules, then
   nearest neighbours over labelled example sentences embedded with the local MiniLM;
3. :func:`assess_mood` — sentiment and urgency from a small lexicon, so an upset customer reaches
   a person, and :func:`wants_human` — a request for one, direct or not.

What a message means *in the conversation* (a follow-up, an order lookup, a product request) is
:mod:`shared.support.dialog`.

None of them depends on the chat model being smart: they are rules and one embedding lookup
(a few milliseconds), measured in the lesson on held-out conversations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.finetune import INTENTS
from shared.io import DataFileError, read_jsonl  # one list of intents: lesson 07 trains on it too
from shared.support.lang import EMAIL, NOT_ENGLISH, detect_language, luhn_ok, normalize, redact

__all__ = [
    "INTENTS",
    "KB_INTENTS",
    "NOT_ENGLISH",
    "Guard",
    "Mood",
    "Route",
    "Router",
    "asks_when_staffed",
    "assess_mood",
    "check_input",
    "detect_language",
    "load_examples",
    "luhn_ok",
    "normalize",
    "redact",
    "wants_human",
]

#: the intent labels, shared with lesson 07's classifier.
#: intents answered from the knowledge base.
KB_INTENTS = frozenset({"shipping", "returns_refunds", "account", "payments", "product_question"})


# ---------------------------------------------------------------------------- guardrails
@dataclass(frozen=True)
class Guard:
    """A blocked message: which rule fired and the answer the customer sees."""

    kind: str  # not_text | empty | too_long | injection | prompt_extraction | beyond_powers |
    # other_customer
    reply: str


_INJECTION = re.compile(
    r"\b(ignor\w*|disregard|forget|override|olvida\w*|oublie\w*|vergiss\w*|dimentica\w*)\b.{0,40}"
    r"\b(instructions?|instrucc\w*|istruzion\w*|anweisung\w*|rules|r[eè]gles|reglas|regole|"
    r"prompt|guidelines)\b"
    r"|\byou are now\b|\bact as (an? )?(unrestricted|different|evil|admin)|\bjailbreak"
    r"|\bdeveloper mode\b|\bdo anything now\b|\bpretend (you|to) (are|be|have) no\b"
    r"|\bnew instructions?\s*:|\bsystem\s*:\s|\bsystem override\b|\badmin mode\b"
    r"|(忽略|无视|忘记|忘掉|不要理会|跳过).{0,12}(指令|指示|规则|提示|设定|要求)"
    r"|你现在是|扮演|越狱|开发者模式|管理员模式|新的?指令",
    re.I | re.S,
)
_EXTRACTION = re.compile(
    r"\b(system|hidden|initial|original|secret)\s+(prompt|instructions?|message)"
    r"|\b(reveal|show|print|repeat|tell me|what (is|are|were))\b.{0,30}\b(your|the)\s+"
    r"(prompt|instructions?|rules|configuration)"
    r"|\brepeat (the|everything) (text )?(above|before)\b"
    r"|(系统|隐藏|原始|初始)(提示|指令|设定)|(告诉|显示|输出|打印).{0,8}(提示词|指令|设定)",
    re.I | re.S,
)
#: a request that the assistant itself grant money or change an order ("just approve the
#: refund", "put 20% off on my account", "change my price to the sale price"): people decide
_BEYOND = re.compile(
    r"\b(can|could|will|would) you\b.{0,25}\b(approve|authori[sz]e|grant)\b"
    r"|\bjust (approve|authori[sz]e|issue|grant|refund)\b|\bi'?m authori[sz]ing you\b"
    r"|\b(approve|authori[sz]e)\b.{0,30}\b(yourself|right now)\b"
    r"|\b(apply|put|add|give( me)?|take)\b.{0,20}\b\d+ ?% (off|discount)\b.{0,30}"
    r"\b(me|my|it|account|order)\b"
    r"|\b(change|lower|adjust|set)\b.{0,15}\b(my|the) price\b",
    re.I | re.S,
)
_OTHER_CUSTOMER = re.compile(
    r"\b(another|other|different|someone else'?s?|somebody else'?s?)\s+(customer|user|person|"
    r"account|people)'?s?\b.{0,40}\b(orders?|address|email|phone|details|data|account|history)"
    r"|\b(orders?|address|email|phone|details|data|account|history)\b.{0,30}\bof (another|other|"
    r"a different) (customer|user|person)"
    r"|\b(list|show|give me|export)\b.{0,20}\b(all|every)\s+(customers?|users?|emails?)"
    r"|\b(belongs?|belonging) to (my|a|his|her|their) \w+|\bmy (friend|wife|husband|partner|"
    r"mum|mom|dad|brother|sister|neighbou?r|colleague|boss)'?s (order|account|parcel|address)"
    r"|\bmy (friend|wife|husband|partner|mum|mom|dad|brother|sister|neighbou?r|colleague|boss)\b"
    r".{0,40}\b(his|her|their) (order|account|parcel|package|address)"
    r"|\b(e-?mail|address|phone|name|details)\b.{0,40}\b(of|for) (whoever|the (person|customer|"
    r"buyer|people) who|someone who|somebody who|anyone who)\b|\bwho else (bought|ordered)\b"
    r"|\b(e-?mail|address|phone|orders?|order (list|history)|details|account)\b.{0,40}"
    r"\b(of|for) (the )?(customer|user|client|account holder|person)( called| named)? "
    r"(?-i:[A-Z][a-z]+)"
    # "What's Ava Thompson's email?": a named person's contact details or orders
    r"|(?-i:\b(?!Maple |Mill |Copper |Riverton )[A-Z][a-z]+ (?!Mill|Forge|Line|Plus)[A-Z][a-z]+)"
    r"'s (e-?mail|address|phone|number|orders?|account|details)"
    r"|(其他|别的|别人|其它)(客户|顾客|用户|人)?的(订单|地址|账户|信息|邮箱|电话)",
    re.I | re.S,
)


def check_input(message: Any, max_chars: int = 2000, own_email: str | None = None) -> Guard | None:
    """The guardrail that blocks ``message``, or None when it may go on to the assistant.

    ``own_email`` is the signed-in customer's address: any other address in the message counts
    as a request for someone else's data. Rules apply to the NFKC-normalised text, in English
    and Chinese.
    """
    if not isinstance(message, str):
        return Guard("not_text", "I can only read typed text. Please write your question.")
    text = normalize(message).strip()
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
    if _BEYOND.search(text):
        return Guard(
            "beyond_powers",
            "I can't approve refunds, change prices or add discounts myself: our team decides "
            "those under the policies in the help centre. I can explain a policy, or pass this "
            "to a colleague if you say so.",
        )
    emails = {e.lower().rstrip(".") for e in EMAIL.findall(text)}
    foreign = emails - {own_email.lower()} if own_email else emails
    if _OTHER_CUSTOMER.search(text) or foreign:
        return Guard(
            "other_customer",
            "For privacy I can only discuss the account you are signed in with. The account "
            "holder can contact us directly.",
        )
    return None


# ---------------------------------------------------------------------------- mood
_NEGATIVE = {
    "angry": 2,
    "furious": 2,
    "unacceptable": 2,
    "ridiculous": 2,
    "terrible": 2,
    "worst": 2,
    "scam": 2,
    "disgusted": 2,
    "outraged": 2,
    "fed up": 2,
    "sick of": 2,
    "useless": 2,
    "pathetic": 2,
    "rubbish": 2,
    "incompetent": 2,
    "hopeless": 2,
    "nightmare": 2,
    "appalling": 2,
    "disgrace(ful)?": 2,
    "unbelievable": 1,
    "late": 1,
    "joke": 1,
    "sick and tired": 2,
    "had enough": 2,
    "wtf": 2,
    "shocking": 2,
    "awful": 1,
    "annoyed": 1,
    "disappointed": 1,
    "frustrated": 1,
    "upset": 1,
    "horrible": 1,
    "still": 1,
    "again": 1,
    "never": 1,
    "waste": 1,
    "broken": 1,
    "complaint": 1,
    "keeps?": 1,
}
_NEGATIVE_ZH = ("生气", "愤怒", "气死", "太差", "垃圾", "投诉", "骗子", "差劲", "受够", "离谱")
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
    """Score ``text`` with the lexicon; shouting (CAPITALS, '!!', full-width '！') adds to it."""
    text = normalize(text)
    low = text.lower()
    score = sum(w for cue, w in _NEGATIVE.items() if re.search(rf"\b{cue}\b", low))
    score += 2 * sum(cue in text for cue in _NEGATIVE_ZH)
    letters = [c for c in text if c.isalpha() and c.isascii()]
    if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.6:
        score += 2
    score += min(text.count("!") // 2, 2)
    score -= sum(1 for cue in _POSITIVE if re.search(rf"\b{cue}", low))
    sentiment = "negative" if score >= 2 else "positive" if score < 0 else "neutral"
    urgent = any(re.search(rf"\b{cue}\b", low) for cue in _URGENT) or "紧急" in text
    return Mood(sentiment, score, urgent, score >= UPSET_SCORE)


_HUMAN = re.compile(
    r"\b(human|real person|actual person|live (agent|person)|an agent|a person|agent|"
    r"representative|operator|supervisor|manager|somebody real|someone real|"
    r"(speak|talk|chat) (to|with) (a|an|someone|somebody|anyone|your|staff|support)|"
    r"call me|phone me|ring me|call (me )?back|someone (from your|on your|in your) (team|staff)|"
    r"someone (who can|that can) (actually )?help|not (a|this|your) (bot|robot|machine)|"
    r"stop the bot|no more bots?|put me through|transfer me|connect me|escalate)\b"
    r"|人工|真人|客服人员|转接|找人|工作人员",
    re.I,
)


#: a question about when people can be reached ("which days can I chat with a person?"),
#: which the help centre answers; unless the customer also asks for one now ("I want ...")
_WHEN_STAFFED = re.compile(
    r"\b(what (time|times|hours|days)|which days|opening hours|open (on|at|until|till)|staffed|"
    r"(on|at) (weekends?|(mon|tues|wednes|thurs|fri|satur|sun)days?|night)|in the evening)\b",
    re.I,
)
_NOW = re.compile(r"\b(i want|i'?d like|i need|let me|put me|get me|give me|now|please)\b", re.I)


def asks_when_staffed(text: str) -> bool:
    """A question about when people can be reached ("is live chat open on Saturdays?"): the
    help centre answers it, even though it names a person."""
    text = normalize(text)
    return bool(_WHEN_STAFFED.search(text)) and not _NOW.search(text)


def wants_human(text: str, router_says: bool = False) -> bool:
    """Whether the message asks for a person, directly or not ("is there anyone I can call?"),
    or the router says so (``router_says``); never a question about when one can be reached
    (:func:`asks_when_staffed`)."""
    return not asks_when_staffed(text) and (router_says or bool(_HUMAN.search(normalize(text))))


# ---------------------------------------------------------------------------- routing
@dataclass(frozen=True)
class Route:
    """The router's decision: intent, confidence in [0, 1] and what decided it."""

    intent: str
    confidence: float
    method: str  # "rule" or "knn"


_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("talk_to_human", _HUMAN),
    (
        "order_status",
        re.compile(
            r"\b(where|status|track)\b.{0,25}\bmy (order|parcel|package)\b|"
            r"\border\s*(number\s*|no\.?\s*)?#?\s*\d{4}\b",
            re.I,
        ),
    ),
)


def load_examples(path: str | Path) -> list[tuple[str, str]]:
    """``(text, intent)`` pairs from a JSON-lines file with ``text`` and ``intent`` fields."""
    rows = read_jsonl(path, ("text", "intent"))
    for row in rows:
        if row["intent"] not in INTENTS:
            raise DataFileError(f"{Path(path).name}: unknown intent {row['intent']!r} in {row}")
    return [(row["text"], row["intent"]) for row in rows]


class Router:
    """Intent router: keyword rules first, then a classifier over MiniLM sentence embeddings.

    ``method="knn"``: a similarity-weighted vote of the ``k`` nearest examples; a message whose
    best example is less similar than ``min_similarity`` is ``out_of_scope``.
    ``method="logreg"``: scikit-learn's ``LogisticRegression`` trained on the example embeddings
    (the confidence is its class probability).
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]],
        embedder: Any,
        k: int = 5,
        min_similarity: float = 0.35,
        use_rules: bool = True,
        method: str = "knn",
        seed: int = 0,
    ) -> None:
        if not examples:
            raise ValueError("the router needs labelled examples")
        if method not in ("knn", "logreg"):
            raise ValueError(f"method must be 'knn' or 'logreg', not {method!r}")
        self.embedder, self.k, self.min_similarity = embedder, k, min_similarity
        self.use_rules, self.method = use_rules, method
        self.texts = [t for t, _ in examples]
        self.labels = np.array([i for _, i in examples])
        self.matrix = self.embed(self.texts)  # (N, D), unit rows
        self.model = None
        if method == "logreg":
            from sklearn.linear_model import LogisticRegression

            self.model = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
            self.model.fit(self.matrix, self.labels)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), D)."""
        vecs = self.embedder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def route(self, text: str) -> Route:
        """The intent of one message."""
        return self.route_many([text])[0]

    def route_many(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> list[Route]:
        """Intents for many messages with one embedding batch (or their ``vectors``, (B, D))."""
        texts = [normalize(t) for t in texts]
        vecs = self.embed(texts) if vectors is None else vectors  # (B, D)
        sims = vecs @ self.matrix.T  # (B, N) cosine similarities
        probs = self.model.predict_proba(vecs) if self.model is not None else None  # (B, C)
        out = []
        for b, (text, row) in enumerate(zip(texts, sims, strict=True)):
            rule = next((i for i, p in _RULES if p.search(text)), None) if self.use_rules else None
            if rule:
                out.append(Route(rule, 1.0, "rule"))
                continue
            if probs is not None:
                j = int(np.argmax(probs[b]))
                out.append(
                    Route(str(self.model.classes_[j]), round(float(probs[b][j]), 3), "logreg")
                )
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
