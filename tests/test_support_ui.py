"""The web chat's page (shared.support.ui), without a browser: what it shows and wires up.

The browser test (``test_support_ui_browser.py``) drives the running page; this one only builds it.
"""

from __future__ import annotations

import gradio as gr
import pytest

from shared.support import ui


class _Shop:
    def customers(self) -> list[tuple[str, int]]:
        return [("Ava Thompson (#1)", 1), ("Liam Chen (#2)", 2)]


class _Bot:
    """The two things the page asks of a bot before the first message."""

    shop = _Shop()

    def new_session(self, customer_id: int | None = None) -> str:
        return f"session-{customer_id}"


def test_the_page_labels_the_demo_sign_in_and_has_one_feedback_mechanism() -> None:
    app = ui.build_ui(_Bot())
    blocks = list(app.blocks.values())
    labels = [getattr(b, "label", None) or "" for b in blocks]
    assert any(label.startswith("Demo sign-in") and "no password" in label for label in labels)
    (picker,) = [b for b in blocks if isinstance(b, gr.Dropdown)]
    assert [c[1] for c in picker.choices] == [ui.GUEST, 1, 2]  # guest first, then the demo accounts
    assert sum(isinstance(b, gr.Chatbot) for b in blocks) == 1
    likes = [d for d in app.config["dependencies"] if any(t[1] == "like" for t in d["targets"])]
    assert len(likes) == 1  # Gradio's thumbs, and no second set of buttons


def test_the_command_line_binds_localhost_by_default(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        ui.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "python -m shared.support.ui" in out and "127.0.0.1" in out


def test_module_runs_as_the_demo_command() -> None:
    """``make demo`` runs ``python -m shared.support.ui``: the module must call ``main``."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "shared.support.ui", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m shared.support.ui" in done.stdout
