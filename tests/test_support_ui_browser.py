"""The capstone's web chat in a real browser: headless Debian Chromium driven by Playwright.

A person's view is what is checked: messages and answers in the chat, the hand-off banner with
its ticket number, the feedback confirmation — and behind it, the rows in the SQLite store.
The Gradio server runs on a free localhost port and is always stopped. Chromium comes from the
system (``scripts/install_browser.sh``, run by ``make test``); Playwright never downloads one.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from shared.chains import build_shop_db
from shared.models import load_embedder
from shared.paths import data_path
from shared.support import (
    BotConfig,
    Router,
    SupportBot,
    SupportStore,
    build_knowledge_base,
    load_examples,
    open_shop,
)
from shared.support.ui import launch

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 90_000  # generous: CI machines are slow and shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The web chat over the default (extractive) bot, on a free port."""
    tmp = tmp_path_factory.mktemp("ui")
    embedder = load_embedder()
    router = Router(load_examples(data_path("support", "router_train.jsonl")), embedder)
    kb = build_knowledge_base(embedder)
    shop = open_shop(build_shop_db(tmp / "shop.db"))
    bot = SupportBot(router, kb, shop, SupportStore(tmp / "support.db"), BotConfig())
    port = _free_port()
    demo = launch(bot, host="127.0.0.1", port=port, share=False, block=False)
    try:
        yield bot, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh` (make test does)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _say(page: Page, text: str, expect_text: str) -> None:
    box = page.locator("#message textarea")
    expect(box).to_have_value("", timeout=WAIT_MS)  # the previous turn has finished with the box
    expect(box).to_be_editable(timeout=WAIT_MS)
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#chat")).to_contain_text(text, timeout=WAIT_MS)
    expect(page.locator("#chat")).to_contain_text(expect_text, timeout=WAIT_MS)
    expect(box).to_have_value("", timeout=WAIT_MS)


def test_conversation_handoff_and_feedback_in_the_browser(served, browser) -> None:
    bot, url = served
    page = browser.new_page()
    page.goto(url, timeout=WAIT_MS)
    expect(page.get_by_text("Maple & Mill help chat").first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Demo sign-in").first).to_be_visible(timeout=WAIT_MS)
    banner = page.locator("#handoff-banner")
    expect(banner).to_be_hidden()

    # a multi-turn conversation: the follow-up "it" is the order from the first answer
    _say(page, "Where is my order?", "Your order 1047")  # signed in as Ava Thompson (#1)
    _say(page, "When will it arrive?", "two-person crew")
    _say(page, "How long do refunds take?", "Source: When you will get your refund")
    chat = page.locator("#chat")
    for seen in ["Where is my order?", "When will it arrive?", "How long do refunds take?"]:
        expect(chat).to_contain_text(seen)

    # feedback, one mechanism: the chat's own thumbs; a comment typed first goes with the click
    page.locator("#comment textarea").fill("Please say when my bank shows it")
    chat.get_by_role("button", name="Dislike", exact=True).last.click()
    status = page.locator("#feedback-status")
    expect(status).to_contain_text("saved as #1", timeout=WAIT_MS)
    chat.get_by_role("button", name="Like", exact=True).first.click()
    expect(status).to_contain_text("saved as #2", timeout=WAIT_MS)
    rows = bot.store.feedback()
    assert [(r["rating"], r["turn"]) for r in rows] == [("down", 2), ("up", 0)]
    assert rows[0]["comment"] == "Please say when my bank shows it" and rows[1]["comment"] == ""
    assert rows[0]["question"] == "How long do refunds take?"

    # hand-off: the person sees the banner with the ticket, the ticket holds the conversation
    _say(page, "I want to talk to a real person", "ticket #1")
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text("Handed over to a person — ticket #1")
    (ticket,) = bot.store.tickets()
    assert ticket.customer_id == 1 and len(ticket.transcript) == 7  # 3 exchanges + the request
    page.close()


def test_two_tabs_are_two_sessions(served, browser) -> None:
    _, url = served
    first, second = browser.new_page(), browser.new_page()
    for page in (first, second):
        page.goto(url, timeout=WAIT_MS)
        expect(page.locator("#message textarea")).to_be_visible(timeout=WAIT_MS)
    _say(first, "How long do refunds take?", "refund")
    _say(second, "and what about PayPal?", "PayPal")  # no earlier turn in this tab
    expect(second.locator("#chat")).not_to_contain_text("How long do refunds take?")
    first.close()
    second.close()
