"""Lesson 08 (customer-service capstone): what a message means in the conversation.

Model-free cues, read from the words of one message and the previous turn:

- :func:`is_follow_up` - a short message that leans on the previous one ("and to Canada?"), and
  :func:`rewrite_follow_up`, which turns it into a question that stands alone;
- :func:`asks_for_order` and :func:`order_ids` - a signed-in customer's question about their own
  orders, and the order numbers in a message;
- :func:`wants_recommendation`, :func:`wants_any_recommendation`, :func:`asks_if_stocked` - a
  request for products; :func:`price_request` - a price limit or order in one ("the cheapest
  lamp", "something under $50");
- :func:`is_yes` - a short yes (to the offer of a colleague).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.support.lang import normalize

__all__ = [
    "PriceRequest",
    "asks_for_order",
    "asks_if_stocked",
    "is_follow_up",
    "is_yes",
    "order_ids",
    "price_request",
    "rewrite_follow_up",
    "wants_any_recommendation",
    "wants_recommendation",
]

_RECOMMEND = re.compile(
    r"\b(recommend|suggest|advi[cs]e me|ideas?|(?<!as )(a|good|nice) (gift|present)(?! card)|"
    r"birthday|looking for|(need|want|after|i'?d like|i would like) (a|an|some|something)|"
    r"(something|anything) (to|for|that|nice|good|so|which|you (sell|have|stock)|"
    r"(on|in|from) (your|the) (site|website|shop|store|catalogue))|"
    r"what (should|could|would) (i|you) (buy|get|order|pick|choose)|which (one|product) should|"
    r"what (goes|would go) (well )?with|"
    r"good (option|choice) for|best .{0,20} for|which (one )?of your \w+)\b",
    re.I,
)


def wants_recommendation(text: str) -> bool:
    """A cue that the customer is looking for a product (the shop's catalogue then decides)."""
    return bool(_RECOMMEND.search(normalize(text)))


_FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|then|so|but|ok|okay)\b", re.I)
_PRONOUN = re.compile(r"\b(it|that|this|they|them|those|these|one|there)\b", re.I)
_ORDER_ID = re.compile(r"(?:\border\s*(?:number\s*|no\.?\s*)?#?\s*|#|\bMM-)(\d{4})\b", re.I)
_MY_ORDER = re.compile(
    r"\bmy\s+(?:\w+\s+){0,3}(orders?|parcels?|package|delivery|purchase)\b"
    r"|\bwhat did i (order|buy)\b|\bi (just )?ordered\b|\border did i\b"
    r"|\bi (just |recently |already )?(placed|made|put in|submitted) (an|a|the|my) (\w+ )?order\b"
    r"|\b(the|that) order i (just |recently )?(placed|made)\b"
    r"|\b(has|have|did|is|are|was|were) my\s+(?:[\w-]+\s+){0,3}(shipped|arrived|dispatched|left|"
    r"been (sent|shipped|delivered|dispatched)|on (its|their) way|out for delivery)\b",
    re.I,
)
_ORDER_ASK = re.compile(
    r"\b(status|where|track|arriv\w*|shipped|dispatch\w*|sent|come|coming|deliver\w*|"
    r"go(ne)? out|went out|get|got|happen\w*|going on|"
    r"what'?s (in|on)|what is (in|on)|contents?|items?|last|latest|recent|"
    r"placed|look ?up|check|update|when|on (its|their|the) way)\b",
    re.I,
)
_PROBLEM = re.compile(
    r"\b(damaged|broken|faulty|wrong|missing|return\w*|refund\w*|cancel\w*|send \w+ back|"
    r"exchange|change|warranty|wash|clean|cost|fee|pay)\b",
    re.I,
)
#: where an order that a product names has got to ("did my lantern arrive?")
_ITEM_STATUS = re.compile(
    r"\b(arriv\w*|deliver\w*|shipped|dispatch\w*|status|track\w*|go(ne)? out|went out|"
    r"left|on (its|their|the) way|all done|processed|where('s| is| are)|"
    r"(did|has|have)\b.{0,40}\b(come|go(ne)? through)(?! in\b))\b",
    re.I,
)
_NOT_RECEIVED = re.compile(
    r"\b(never|not|didn'?t|did not|haven'?t|hasn'?t|has not|have not) "
    r"(got|gotten|get|received?|arrived?|came|come|here)\b",
    re.I,
)
_STATUS_CUE = re.compile(r"\b(says?|shows?|showing|status|marked|listed as)\b", re.I)
_HOW_TO = re.compile(r"\b(how (do|can|should) i|can i|could i|policy)\b", re.I)
_BARE_NUMBER = re.compile(r"(?<![\d$.,-])\b(\d{4})\b(?![\d.,-])")
_ORDER_FOLLOW = re.compile(
    r"\b(arriv\w*|deliver\w*|ship\w*|dispatch\w*|track\w*|status|"
    r"where is it|get here|come)\b",
    re.I,
)
_YES = re.compile(r"^\s*(yes|yeah|yep|sure|ok|okay|please|yes please|go ahead|do it)\W*$", re.I)
_STOCK = re.compile(
    r"\b(do|does|will) (you|maple & mill|the shop) (sell|stock|carry|have|make)\b"
    r"|\bcan i (buy|order|get) (an?|any|some)\b",
    re.I,
)
#: "do you have a shop in ...?": the shop's own services and places, not products it sells
_SERVICE = re.compile(
    r"\b(do|does|will) (you|maple & mill|the shop) (have|run|offer|make) (an? |any )?"
    r"(physical |real |local |bricks and mortar |mobile |phone |smartphone )?"
    r"(shops?|stores?|showrooms?|outlets?|branch(es)?|locations?|warehouse|apps?|"
    r"pick-?up points?|collection points?|(live )?chat|hotline|helpline|phone line|newsletter)\b",
    re.I,
)
_GENERIC_RECOMMEND = re.compile(r"\b(recommend|suggest|ideas?|what should i (buy|get))", re.I)


_AMOUNT = r"\$?\s*(\d+(?:\.\d{1,2})?)\s*(?:\$|dollars?|bucks)?"
_AT_MOST = re.compile(
    rf"\b(?:under|below|less than|cheaper than|no more than|up to|at most|max(?:imum)?|within)\s*"
    rf"{_AMOUNT}|{_AMOUNT}\s*(?:or less|or under|max|tops)\b",
    re.I,
)
_AT_LEAST = re.compile(rf"\b(?:over|above|more than|at least)\s*{_AMOUNT}", re.I)
_LOWEST = re.compile(r"\b(cheapest|least expensive|lowest[- ]priced|most affordable)\b", re.I)
_HIGHEST = re.compile(r"\b(most expensive|priciest|highest[- ]priced)\b", re.I)
#: a price in a question about the shop's rules ("free shipping over $150?"), not about products
_POLICY = re.compile(
    r"\b(ship\w*|deliver\w*|postage|orders?|baskets?|carts?|checkout|returns?|refund\w*|fees?|"
    r"pay\w*|instal\w*|splitpay|gift cards?|codes?|discounts?|vouchers?|membership|plus)\b",
    re.I,
)
#: a product request that names no kind of product ("the most expensive thing you sell?")
_ANY_PRODUCT = re.compile(
    r"^\W*(what('s| is)?|which|show me|tell me)?\W*(is |are )?(the |your |a )?\W*"
    r"(thing|things|item|items|product|products|one|anything|something)?\W*"
    r"((that )?(you|u) (sell|have|stock|carry|do))?\W*(here|in the shop|on the site)?\W*$",
    re.I,
)
#: an open request ("something under $50 for her flat"): the closest products within the budget
_OPEN = re.compile(r"\b(something|anything|ideas?|gifts?|presents?)\b", re.I)


@dataclass(frozen=True)
class PriceRequest:
    """A price limit and/or order asked for in a product request."""

    most: float | None = None  # "under $50"
    least: float | None = None  # "over $100"
    order: str = ""  # "low" (the cheapest first), "high" (the most expensive first) or ""
    rest: str = ""  # the request without its price words ("what's your lamp?"), for matching
    any_product: bool = False  # it names no kind of product ("the cheapest thing you sell")
    open: bool = False  # an open request ("something under $50"): no similarity floor


def price_request(text: str) -> PriceRequest | None:
    """The price limit or order of a product request ("the cheapest lamp", "anything under
    $50?"), or None: no price asked for, or the price is about the shop's rules ("is shipping
    free over $150?", "can I pay in instalments under $150?")."""
    text = normalize(text)
    most, least = _AT_MOST.search(text), _AT_LEAST.search(text)
    order = "low" if _LOWEST.search(text) else "high" if _HIGHEST.search(text) else ""
    if not (most or least or order) or _POLICY.search(text):
        return None
    number = [float(next(g for g in m.groups() if g)) if m else None for m in (most, least)]
    rest = text
    for pattern in (_AT_MOST, _AT_LEAST, _LOWEST, _HIGHEST):
        rest = pattern.sub(" ", rest)
    rest = " ".join(rest.split())
    return PriceRequest(
        number[0], number[1], order, rest, bool(_ANY_PRODUCT.match(rest)), bool(_OPEN.search(rest))
    )


def is_follow_up(text: str, max_words: int = 8) -> bool:
    """A short message that leans on the previous turn ("and who pays for that?")."""
    words = text.split()
    return bool(_FOLLOW_UP.match(text)) or (len(words) <= max_words and bool(_PRONOUN.search(text)))


def asks_for_order(
    text: str, order_ids: list[int], after_order: bool = False, names_item: bool = False
) -> bool:
    """Whether a signed-in customer asks about their own order ("has my last order arrived?").

    A problem or policy question that mentions an order ("my order arrived damaged") is not an
    order lookup: the help centre answers it. ``after_order``: the previous answer was an order
    and this message is a follow-up ("when will it arrive?"). ``names_item``: the message names
    a product from one of the customer's orders ("is my lantern delivered?").
    """
    if order_ids and not _HOW_TO.search(text):
        return True  # an order number and no how-to question: look the order up
    if names_item and _ITEM_STATUS.search(text) and not _PROBLEM.search(text):
        return not _HOW_TO.search(text)
    mine = bool(order_ids or _MY_ORDER.search(text))
    if mine and (
        _STATUS_CUE.search(text) or (_ORDER_ASK.search(text) and not _PROBLEM.search(text))
    ):
        return True
    follow = after_order and is_follow_up(text) and bool(_ORDER_FOLLOW.search(text))
    return follow and not _NOT_RECEIVED.search(text)  # "it says delivered but I never got it"


def order_ids(text: str, known: frozenset[int] = frozenset()) -> list[int]:
    """The order numbers in ``text`` ("order 1042", "#1042", "MM-1042"), and bare four-digit
    numbers that are ``known`` order numbers ("what's going on with 1041?")."""
    found = [int(m) for m in _ORDER_ID.findall(text)]
    found += [int(m) for m in _BARE_NUMBER.findall(text) if int(m) in known]
    return list(dict.fromkeys(found))


def asks_if_stocked(text: str) -> bool:
    """ "Do you sell ...?" - a catalogue question ("do you have a shop in ...?" is not one)."""
    return bool(_STOCK.search(text)) and not _SERVICE.search(text)


def wants_any_recommendation(text: str) -> bool:
    """An open request for ideas ("any gift ideas?"), answered from the customer's history."""
    return bool(_GENERIC_RECOMMEND.search(text))


def is_yes(text: str) -> bool:
    """A short yes ("yes please", "sure")."""
    return bool(_YES.match(text))


# ---------------------------------------------------------------------------- follow-ups
_ABOUT = re.compile(
    r"^\s*(?:(?:and|also|so|but|ok|okay|hmm)\b[\s,]*)*(?:(?:what|how) about\b\s*)?(.+?)[\s?.!]*$",
    re.I,
)
_LEAD = re.compile(r"^\s*(and|also|so|but|ok|okay|hmm|what about|how about)\b", re.I)
_PREP = ("to", "for", "in", "into", "on", "with", "from", "at", "by")
_DET = ("the", "a", "an", "my", "your", "our", "this", "that", "those", "these", "some")
_NOT_A_THING = re.compile(
    r"^(who|what|when|where|why|how|which|can|could|do|does|did|is|are|was|will|would|should|"
    r"if|i|it|that|this|they|there|then|yes|no|ok|okay|thanks?|please)\b",
    re.I,
)
_STOP_SPAN = re.compile(r"[?,.;!]|\b(and|or|but|if|when|because|so|without|before|after)\b", re.I)


def _phrase(text: str) -> str | None:
    """The thing a short follow-up names ("and to Canada?" -> "to Canada"), or None."""
    m = _ABOUT.match(normalize(text))
    if not m or not re.match(
        r"^\s*(and|also|so|but|ok|okay|hmm|what about|how about)\b", text, re.I
    ):
        return None
    phrase = m.group(1).strip()
    words = phrase.split()
    if not 1 <= len(words) <= 4 or _NOT_A_THING.match(phrase):
        return None
    return phrase


def rewrite_follow_up(
    previous: str, text: str, embed: Callable[[Sequence[str]], np.ndarray] | None = None
) -> str:
    """A follow-up that names a new thing, rewritten as the previous question about that thing.

    "how much is delivery to France?" + "and to Canada?" -> "how much is delivery to Canada?";
    "how do I wash the duvet?" + "what about the rug?" -> "how do I wash the rug?". A phrase
    that starts with a preposition replaces the previous question's phrase with the same
    preposition (or is added to it); otherwise the word of the previous question closest in
    meaning (cosine of ``embed``'s unit vectors) is replaced. Any other follow-up ("and who pays
    for that?") is the two messages joined, so the context helps without replacing the question.
    """
    joined = f"{previous.strip()} {text.strip()}"
    phrase = _phrase(text)
    if not previous.strip() or phrase is None:
        return joined
    base = previous.strip().rstrip("?.! ")
    head = phrase.split()[0].lower()
    if head in _PREP:
        spans = list(re.finditer(rf"\b{head}\b\s+", base, re.I))
        if not spans:
            return f"{base} {phrase}?"
        start, after = spans[-1].start(), spans[-1].end()
        stop = _STOP_SPAN.search(base, after)
        tail = base[after : stop.start() if stop else len(base)].split()
        if tail and tail[0][:1].isupper():  # a name: all of it ("to New York")
            n = next((i for i, w in enumerate(tail) if not w[:1].isupper()), len(tail))
        else:  # as many words as the new phrase has after its preposition
            n = min(len(tail), max(1, len(phrase.split()) - 1))
        end = after + len(" ".join(tail[:n]))
        return f"{base[:start]}{phrase}{base[end:]}?"
    if embed is None:
        return joined
    thing = " ".join(w for w in phrase.split() if w.lower() not in _DET) or phrase
    candidates = [m for m in re.finditer(r"[A-Za-z][\w'-]*", base) if m.group().lower() not in _DET]
    candidates = [m for m in candidates if not _NOT_A_THING.match(m.group()) and len(m.group()) > 2]
    if not candidates:
        return joined
    vecs = embed([thing, *(m.group() for m in candidates)])  # (1 + C, D), unit rows
    sims = vecs[1:] @ vecs[0]  # (C,)
    best = int(np.argmax(sims))
    if float(sims[best]) < 0.35:
        return joined
    m = candidates[best]
    return f"{base[: m.start()]}{thing}{base[m.end() :]}?"
