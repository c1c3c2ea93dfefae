"""shared.paths: the repository, data/ and the single cache."""

from __future__ import annotations

import os

import pytest

from shared import paths


def test_repo_layout() -> None:
    root = paths.repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "shared" / "paths.py").is_file()
    assert paths.data_dir() == root / "data" and paths.lessons_dir() == root / "lessons"


def test_cache_dir_follows_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path / "c"))
    target = paths.cache_dir("a", "b")
    assert target == tmp_path / "c" / "a" / "b" and target.is_dir()
    assert not paths.cache_dir("x", create=False).exists()


def test_default_cache_is_inside_the_repo_and_ignored(monkeypatch) -> None:
    monkeypatch.delenv("GENAI_CACHE_DIR", raising=False)
    assert paths.cache_dir(create=False) == paths.repo_root() / ".cache"
    ignored = (paths.repo_root() / ".gitignore").read_text().splitlines()
    assert {".cache/", ".env", ".venv/"} <= set(ignored)


def test_missing_data_file_names_the_path() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_file.csv"):
        paths.data_path("no_such_file.csv")


def test_cache_dir_can_only_name_a_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path / "c"))
    assert paths.cache_dir("x", create=False) == tmp_path / "c" / "x"
    assert not (tmp_path / "c").exists()  # create=False creates nothing, not even the root


def test_configure_environment_keeps_user_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", "/my/hf")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    changed = paths.configure_environment()
    assert os.environ["HF_HOME"] == "/my/hf" and "HF_HOME" not in changed
    assert changed["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")
    assert (tmp_path / "huggingface" / "hub").is_dir()
    assert paths.configure_environment() == {}  # a second call changes nothing
