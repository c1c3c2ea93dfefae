"""Lesson 08 (customer-service capstone): the web chat a person can use (Gradio).

:func:`build_ui` wires a :class:`shared.support.bot.SupportBot` into a Gradio page: a **demo
sign-in** picker (made-up accounts from the shop database, no password: a real deployment signs
customers in with its own login and passes the verified customer id), the conversation, a visible
hand-off banner with the ticket number, and one feedback mechanism: Gradio's thumbs on every
answer (the ``like`` event), with an optional comment typed before the click. Every browser tab
gets its own chat session. Replies appear only once they are final: a draft the grounding check
would withdraw is never on screen.

:func:`launch` binds to 127.0.0.1 and creates no public share link unless asked to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr

__all__ = ["GUEST", "build_ui", "launch", "main"]

TITLE = "Maple & Mill help chat"
GUEST = 0  # the picker's value for "not signed in"


def _new_state(bot: Any, customer: int | None) -> dict[str, Any]:
    cid = customer or None
    return {"sid": bot.new_session(cid), "customer": customer, "messages": []}


def build_ui(bot: Any) -> gr.Blocks:
    """The chat page for ``bot`` (not started: see :func:`launch`)."""
    customers = [("Guest (not signed in)", GUEST), *bot.shop.customers()]
    first = customers[1][1] if len(customers) > 1 else GUEST

    def ensure(state: dict[str, Any] | None, customer: int | None) -> dict[str, Any]:
        if not state or state.get("customer") != customer:
            return _new_state(bot, customer)
        return state

    def send(message: str, state: dict[str, Any] | None, customer: int | None) -> Iterator[Any]:
        state = ensure(state, customer)
        msgs = state["messages"]
        msgs += [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        yield "", msgs, state, gr.update()
        reply = bot.respond(state["sid"], message)  # final and checked: nothing to withdraw
        msgs[-1]["content"] = reply.text
        banner = gr.update()
        if reply.handoff:
            banner = gr.update(
                value=f"🧑‍💼 **Handed over to a person — ticket #{reply.ticket_id}.** "
                f"Reason: {reply.handoff_reason}.",
                visible=True,
            )
        yield "", msgs, state, banner

    def rated(state: dict[str, Any] | None, comment: str, data: gr.LikeData) -> tuple[str, str]:
        msgs = (state or {}).get("messages", [])
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn = sum(m["role"] == "assistant" for m in msgs[: index + 1]) - 1
        if not state or turn < 0:
            return "There is no answer to rate yet.", comment
        rating = "up" if data.liked is True else "down" if data.liked is False else None
        try:
            row = bot.feedback(state["sid"], turn, rating, comment or "")
        except Exception as exc:  # noqa: BLE001 - shown to the person, never a crash
            return f"Feedback not saved: {exc}", comment
        kind = {"up": "👍", "down": "👎", None: "comment"}[rating]
        return f"Thank you — your feedback ({kind}) on answer {turn + 1} is saved as #{row}.", ""

    def switch(customer: int | None) -> tuple[Any, ...]:
        return _new_state(bot, customer), [], gr.update(value="", visible=False), ""

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nAsk about your orders, shipping, returns and refunds, payments, your "
            "account or our products, in English. Type *talk to a person* at any time."
        )
        who = gr.Dropdown(
            customers,
            value=first,
            elem_id="signin",
            label="Demo sign-in: pick a made-up customer (no password; "
            "a real shop uses its own login)",
        )
        state = gr.State(None)
        banner = gr.Markdown(visible=False, elem_id="handoff-banner")
        chat = gr.Chatbot(label="Conversation", height=420, elem_id="chat")
        with gr.Row():
            box = gr.Textbox(
                placeholder="Type your message and press Enter",
                show_label=False,
                scale=5,
                elem_id="message",
            )
            go = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        comment = gr.Textbox(
            label="Optional comment, sent with your next 👍 / 👎 on an answer", elem_id="comment"
        )
        thanks = gr.Markdown(elem_id="feedback-status")

        outputs = [box, chat, state, banner]
        box.submit(send, [box, state, who], outputs)
        go.click(send, [box, state, who], outputs)
        chat.like(rated, [state, comment], [thanks, comment])
        who.change(switch, [who], [state, chat, banner, thanks])
    return demo


def launch(
    bot: Any, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = False
) -> gr.Blocks:
    """Serve the chat on ``http://host:port`` (localhost, no share link by default).

    With ``block=False`` it returns at once (call ``.close()`` on the result to stop it).
    """
    demo = build_ui(bot)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=False,
        prevent_thread_lock=not block,
        quiet=True,
    )
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.support.ui``: open the web chat on http://127.0.0.1:7860."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m shared.support.ui", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (off)")
    p.add_argument("--model", action="store_true", help="let the chat model rephrase answers")
    a = p.parse_args(argv)
    from shared.paths import configure_environment
    from shared.support.bot import BotConfig, build_bot

    configure_environment()  # the course's cache folders for the models, Chroma and Gradio

    print(f"Maple & Mill help chat on http://{a.host}:{a.port} (Ctrl+C stops it)")
    launch(
        build_bot(BotConfig(use_model=a.model)), host=a.host, port=a.port, share=a.share, block=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
