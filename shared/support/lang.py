"""Lesson 08 (customer-service capstone): languages and personal data.

The assistant is English-only by design. :func:`detect_language` tells another language by its
script (a share of CJK, kana, hangul or non-Latin letters) or, for Latin-script languages, by
frequent function words; the bot then answers with a short bilingual note (:data:`NOT_ENGLISH`)
and hands over to a person. :func:`redact` removes card numbers (Luhn-checked), e-mail addresses
and phone numbers from everything the assistant stores.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["EMAIL", "NOT_ENGLISH", "detect_language", "luhn_ok", "normalize", "redact"]

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def normalize(text: str) -> str:
    """NFKC-normalised text: full-width "！" becomes "!", full-width letters become ASCII."""
    return unicodedata.normalize("NFKC", text)


# ---------------------------------------------------------------------------- privacy
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d ()./-]{6,}\d(?![\w-])")


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum that payment-card numbers satisfy."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def redact(text: str) -> str:
    """``text`` with card numbers, e-mail addresses and phone numbers replaced by placeholders.

    Order numbers (4 digits) and prices stay. Applied to everything the assistant stores.
    """

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        return "[card number]" if luhn_ok(digits) else m.group()

    text = _CARD.sub(card, text)
    text = EMAIL.sub("[email]", text)

    def phone(m: re.Match[str]) -> str:
        return "[phone]" if len(re.sub(r"\D", "", m.group())) >= 7 else m.group()

    return _PHONE.sub(phone, text)


# ---------------------------------------------------------------------------- language
#: frequent function words of the languages customers most often write in besides English.
_STOPWORDS = {
    "es": "el la los las que de por para con una un es estoy quiero mi pedido cuando donde hola "
    "gracias puedo tengo como pero muy esta este",
    "fr": "le la les des une un est je vous mon ma mes pour avec pas que qui bonjour merci est-ce "
    "peux puis commande quand comment sur dans",
    "de": "der die das und ist ich nicht mein meine ein eine wann wo wie bitte danke kann habe "
    "bestellung mit auf für noch",
    "it": "il lo la gli le che di per con una un sono vorrei mio mia ordine quando dove come "
    "grazie ciao posso ho sapere arriva",
    "pt": "o os as que de para com uma um estou quero meu minha pedido quando onde obrigado olá "
    "posso tenho como não",
    "nl": "de het een en ik niet mijn wanneer waar hoe bedankt kan heb bestelling met voor",
}
_ENGLISH = set(
    "the a an and is are i you my your to of for in on it what when where how can do does "
    "with order please not this that be have was will would should could there yes no".split()
)
#: the assistant's English-only notice, in the customer's language (a short bilingual reply).
NOT_ENGLISH = {
    "zh": "抱歉，我只能用英文回答。我已将您的对话转给人工客服，同事会尽快用您的语言回复您。",
    "ja": "申し訳ありませんが、英語でのみ対応しています。担当者におつなぎします。",
    "ko": "죄송합니다. 영어로만 답변할 수 있습니다. 상담원에게 연결해 드리겠습니다.",
    "es": "Lo siento, solo puedo responder en inglés. Le paso con un compañero que le responderá.",
    "fr": "Désolé, je ne peux répondre qu'en anglais. Je transmets votre demande à un collègue.",
    "de": "Leider kann ich nur auf Englisch antworten. Ich gebe Sie an einen Kollegen weiter.",
    "it": "Mi dispiace, posso rispondere solo in inglese. La passo a un collega.",
    "pt": "Desculpe, só posso responder em inglês. Vou passar para um colega.",
    "nl": "Sorry, ik kan alleen in het Engels antwoorden. Ik geef u door aan een collega.",
    "other": "(I can only answer in English; a colleague will reply to you.)",
}


def detect_language(text: str) -> str:
    """``"en"``, or a guess at the other language: by script first, then by function words."""
    text = normalize(text)
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"

    def share(lo: int, hi: int) -> float:
        return sum(lo <= ord(c) <= hi for c in letters) / len(letters)

    if share(0x3040, 0x30FF) > 0.1:
        return "ja"
    if share(0xAC00, 0xD7AF) > 0.2:
        return "ko"
    if share(0x4E00, 0x9FFF) > 0.2:
        return "zh"
    if sum(ord(c) < 0x250 for c in letters) / len(letters) < 0.5:
        return "other"  # Cyrillic, Arabic, Greek, Hebrew, Thai...
    if "¿" in text or "¡" in text:  # only Spanish opens a question or an exclamation
        return "es"
    words = re.findall(r"[^\W\d_]+(?:-[^\W\d_]+)?", text.lower())
    english = sum(w in _ENGLISH for w in words)
    best, hits = max(
        ((lang, sum(w in set(ws.split()) for w in words)) for lang, ws in _STOPWORDS.items()),
        key=lambda t: t[1],
    )
    if hits >= 2 and hits > 2 * english:
        return best
    return "en"
