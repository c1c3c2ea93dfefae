"""`make lab` works: JupyterLab starts (as root too), answers its API, and runs lesson 00's code.

The smoke test starts the same script `make lab` runs (scripts/lab.sh), headless, on a free port;
waits for `/api/status`; checks the news pop-up is off; starts a kernel through the server's REST
API and runs lesson 00's setup cell over the kernel's websocket; then stops everything.
The devcontainer tests check that both Codespaces configurations install in
`updateContentCommand` (so prebuilds carry the venv) with the same command `make lab` starts with.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVCONTAINERS = [
    ROOT / ".devcontainer/devcontainer.json",
    ROOT / ".devcontainer/gpu/devcontainer.json",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jsonc(path: Path) -> dict:
    """devcontainer.json is JSON with // comments."""
    text = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)
    return json.loads(text)


@pytest.mark.parametrize("path", DEVCONTAINERS, ids=["cpu", "gpu"])
def test_devcontainer_installs_in_update_content_command(path: Path) -> None:
    config = _jsonc(path)
    assert config["updateContentCommand"] == "make prepare", (
        f"{path.name}: install in updateContentCommand so Codespaces prebuilds carry it"
    )
    assert "postCreateCommand" not in config, "the install runs once, in updateContentCommand"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab: prepare$", makefile, re.M), "make lab runs the same setup first"
    assert re.search(r"^prepare: bootstrap$", makefile, re.M)


def _wait_for_status(base: str, token: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {proc.returncode}")
        try:
            r = httpx.get(f"{base}/api/status", headers={"Authorization": f"token {token}"})
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("JupyterLab did not answer /api/status in time")


def _run_code(base: str, token: str, code: str, timeout: float = 180) -> list[dict]:
    """Start a kernel, run ``code`` over its websocket, return the iopub messages, delete it."""
    import websocket  # websocket-client, a dependency of jupyter_server

    headers = {"Authorization": f"token {token}"}
    kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}).json()
    ws = websocket.create_connection(
        f"ws{base[4:]}/api/kernels/{kernel['id']}/channels?token={token}", timeout=timeout
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": True},
                    "channel": "shell",
                }
            )
        )
        seen, reply = [], None
        while reply is None:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "iopub":
                seen.append(msg)
            elif msg["msg_type"] == "execute_reply":
                reply = msg["content"]
        assert reply["status"] == "ok", reply
        return seen
    finally:
        ws.close()
        httpx.delete(f"{base}/api/kernels/{kernel['id']}", headers=headers)


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_and_runs_lesson_00() -> None:
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            "bash",
            str(ROOT / "scripts" / "lab.sh"),
            "--no-browser",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "LAB_IP": "127.0.0.1"},
    )
    try:
        status = _wait_for_status(base, token, proc)
        assert "started" in status
        news = httpx.get(
            f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification",
            headers={"Authorization": f"token {token}"},
        ).json()
        defaults = {k: v.get("default") for k, v in news["schema"]["properties"].items()}
        assert defaults["fetchNews"] == "false", "the news pop-up is off (overrides.json)"
        assert defaults["checkForUpdates"] is False
        lesson = nbformat.read(ROOT / "lessons/00_setup/00_setup.ipynb", as_version=4)
        setup = next(c.source for c in lesson.cells if c.cell_type == "code")
        out = _run_code(base, token, setup + "\nprint(config.load_settings().provider)")
        printed = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
        assert printed.strip().splitlines()[-1] in {"local", "openai", "azure"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the lab server is stopped"
