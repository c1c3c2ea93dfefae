"""shared.models: the packaged models are found, prepared once and load offline.

Tests that convert or load a model are marked ``slow``.
"""

from __future__ import annotations

import os

import pytest

from shared import models


def test_packaged_files_are_found() -> None:
    gguf = models.smollm2_gguf_path()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 90e6
    assert (models.embedding_model_path() / "config.json").is_file()


@pytest.mark.slow
def test_prepare_is_idempotent() -> None:
    first = models.prepare_chat_model()
    files = {p.name: p.stat().st_ino for p in first.iterdir()}
    again = models.prepare_chat_model()
    assert first == again == models.chat_model_dir()
    assert {p.name: p.stat().st_ino for p in again.iterdir()} == files  # nothing converted twice
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= set(files)
    assert "quantization_config" not in (first / "config.json").read_text()  # a plain model


def test_unprepared_model_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LOCAL_CHAT_MODEL", raising=False)
    with pytest.raises(models.ModelNotPreparedError, match="python -m shared.models prepare"):
        models.chat_model_source()


def test_local_chat_model_setting(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_CHAT_MODEL", "Qwen/Qwen2.5-1.5B-Instruct")
    assert models.chat_model_source() == "Qwen/Qwen2.5-1.5B-Instruct"
    assert models.chat_model_source(str(tmp_path)) == str(tmp_path)


def test_tiktoken_cl100k_works_offline() -> None:
    import tiktoken

    models.prepare_tiktoken()
    enc = tiktoken.get_encoding("cl100k_base")
    assert enc.encode("hello world") == [15339, 1917]
    assert enc.decode(enc.encode("Tokens are the unit of cost.")) == "Tokens are the unit of cost."


def test_pick_device() -> None:
    assert models.pick_device("cpu") == "cpu"
    assert models.pick_device() in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="tpu"):
        models.pick_device("tpu")


@pytest.mark.slow
def test_chat_model_answers_greedily(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tok, model = models.load_chat_model(device="cpu")
    assert "HF_HUB_OFFLINE" not in os.environ  # loading offline does not make the process offline
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_embeddings_put_similar_meanings_close(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    emb = models.load_embedder(device="cpu")
    assert "HF_HUB_OFFLINE" not in os.environ
    v = emb.encode(["cat", "dog", "invoice"], normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
