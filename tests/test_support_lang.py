"""Language detection and redaction of personal data (shared.support.lang)."""

from __future__ import annotations

import pytest

from shared.support.lang import NOT_ENGLISH, detect_language, luhn_ok, normalize, redact


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("我要找人工客服！", "zh"),
        ("请问退货要付运费吗？", "zh"),
        ("注文はいつ届きますか", "ja"),
        ("Ciao, vorrei sapere quando arriva il mio ordine.", "it"),
        ("Est-ce que je peux payer en plusieurs fois ?", "fr"),
        ("¿Dónde está mi pedido? Lo quiero para el viernes", "es"),
        ("Hola, ¿cuánto tarda el envío a Italia?", "es"),
        ("Wo ist meine Bestellung? Ich warte seit einer Woche", "de"),
        ("Где мой заказ?", "other"),
        ("sorry - in English: what is the status of order 1005?", "en"),
        ("Do you deliver to a PO box in Lyon?", "en"),
        ("ok english. what's the status of my last order", "en"),
    ],
)
def test_language_detection(text, language) -> None:
    assert detect_language(text) == language


def test_redaction_of_personal_data() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    text = "card 4111 1111 1111 1111, mail jo@example.org, phone +44 20 7946 0958, order 1042"
    assert redact(text) == "card [card number], mail [email], phone [phone], order 1042"
    assert redact("tracking 1234567890123 costs $12.95") == "tracking [phone] costs $12.95"
    assert redact("nothing personal here") == "nothing personal here"


def test_full_width_text_is_normalised_and_every_notice_is_short() -> None:
    assert normalize("ＨＥＬＰ！") == "HELP!"
    assert all(0 < len(note) < 200 for note in NOT_ENGLISH.values())
