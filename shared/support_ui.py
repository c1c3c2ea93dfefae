"""Lesson 08 (customer-service capstone): the web chat a person can use (Gradio).

:func:`build_ui` wires a :class:`shared.support_bot.SupportBot` into a Gradio page: a sign-in
picker (demo accounts from the shop database), the conversation with streamed replies, a visible
hand-off banner with the ticket number, thumbs up / down on the last answer (and on any answer,
with the chat's own thumbs) and a comment box. Every browser tab gets its own chat session.

:func:`launch` binds to 127.0.0.1 and creates no public share link unless asked to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

__all__ = ["build_ui", "launch"]

TITLE = "Maple & Mill help chat"


def _new_state(bot: Any, customer_id: int | None) -> dict[str, Any]:
    return {"sid": bot.new_session(customer_id), "customer": customer_id, "messages": []}


def build_ui(bot: Any) -> gr.Blocks:
    """The chat page for ``bot`` (not started: see :func:`launch`)."""
    customers = bot.shop.customers()
    first = customers[0][1] if customers else None

    def ensure(state: dict[str, Any] | None, customer: int | None) -> dict[str, Any]:
        if not state or state.get("customer") != customer:
            return _new_state(bot, customer)
        return state

    def send(message: str, state: dict[str, Any] | None, customer: int | None) -> Iterator[Any]:
        state = ensure(state, customer)
        msgs = state["messages"]
        msgs += [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        yield "", msgs, state, gr.update()
        banner = gr.update()
        for item in bot.stream(state["sid"], message):
            if isinstance(item, str):
                msgs[-1]["content"] = item
                yield "", msgs, state, banner
            else:
                msgs[-1]["content"] = item.text
                if item.handoff:
                    banner = gr.update(
                        value=f"🧑‍💼 **Handed over to a person — ticket #{item.ticket_id}.** "
                        f"Reason: {item.handoff_reason}.",
                        visible=True,
                    )
                yield "", msgs, state, banner

    def rate(rating: str | None, state: dict[str, Any] | None, comment: str) -> tuple[str, str]:
        answers = sum(m["role"] == "assistant" for m in (state or {}).get("messages", []))
        if not answers:
            return "There is no answer to rate yet.", comment
        try:
            row = bot.feedback(state["sid"], answers - 1, rating, comment or "")
        except Exception as exc:  # noqa: BLE001 - shown to the person, never a crash
            return f"Feedback not saved: {exc}", comment
        kind = {"up": "👍", "down": "👎", None: "comment"}[rating]
        return f"Thank you — your feedback ({kind}) is saved as #{row}.", ""

    def liked(state: dict[str, Any] | None, data: gr.LikeData) -> str:
        msgs = (state or {}).get("messages", [])
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn = sum(m["role"] == "assistant" for m in msgs[: index + 1]) - 1
        if not state or turn < 0:
            return "There is no answer to rate yet."
        row = bot.feedback(state["sid"], turn, "up" if data.liked else "down")
        return f"Thank you — your feedback on answer {turn + 1} is saved as #{row}."

    def switch(customer: int | None) -> tuple[Any, ...]:
        return _new_state(bot, customer), [], gr.update(value="", visible=False), ""

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nAsk about your orders, shipping, returns and refunds, payments, your "
            "account or our products. Type *talk to a person* at any time."
        )
        who = gr.Dropdown(customers, value=first, label="Signed in as (demo accounts)")
        state = gr.State(None)
        banner = gr.Markdown(visible=False, elem_id="handoff-banner")
        chat = gr.Chatbot(label="Conversation", height=420, elem_id="chat")
        with gr.Row():
            box = gr.Textbox(placeholder="Type your message and press Enter", show_label=False,
                             scale=5, elem_id="message")  # fmt: skip
            go = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Row():
            up = gr.Button("👍 Helpful", elem_id="thumbs-up")
            down = gr.Button("👎 Not helpful", elem_id="thumbs-down")
            only = gr.Button("Send comment", elem_id="send-comment")
        comment = gr.Textbox(label="Comment on the last answer (optional)", elem_id="comment")
        thanks = gr.Markdown(elem_id="feedback-status")

        outputs = [box, chat, state, banner]
        box.submit(send, [box, state, who], outputs)
        go.click(send, [box, state, who], outputs)
        for button, rating in ((up, "up"), (down, "down"), (only, None)):
            button.click(lambda s, c, r=rating: rate(r, s, c), [state, comment], [thanks, comment])
        chat.like(liked, [state], [thanks])
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
    demo.launch(server_name=host, server_port=port, share=share, inbrowser=False,
                prevent_thread_lock=not block, quiet=True)  # fmt: skip
    return demo
