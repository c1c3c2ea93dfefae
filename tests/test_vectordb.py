"""Tests for shared.vectordb: knowledge base, embedding functions, clients, ingestion, checks.

Tests that embed with the real MiniLM (or start a llama.cpp server) are marked ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from shared import vectordb
from shared.processes import free_port


@pytest.fixture(scope="module")
def ef() -> vectordb.MiniLMEmbeddingFunction:
    return vectordb.MiniLMEmbeddingFunction()


def _empty(client) -> None:
    for collection in client.list_collections():
        client.delete_collection(collection.name)


@pytest.fixture()
def mem():
    # Ephemeral clients share one in-memory system per process (other tests use it too), so
    # empty it instead of reset(), which would need allow_reset everywhere.
    client = vectordb.ephemeral_client()
    _empty(client)
    yield client
    _empty(client)


def test_knowledge_base_is_complete_and_consistent() -> None:
    docs = vectordb.load_kb()
    assert len(docs) == 40
    assert len({d.id for d in docs}) == 40
    assert {d.category for d in docs} >= {
        "shipping",
        "returns",
        "refunds",
        "accounts",
        "warranty",
        "payments",
    }
    questions = vectordb.load_questions()
    assert len(questions) == 46
    ids = {d.id for d in docs}
    for q in vectordb.load_questions(answerable=True):
        assert q["doc_id"] in ids
        page = next(d for d in docs if d.id == q["doc_id"])
        assert q["answer_contains"] in page.text, q["id"]
    assert len(vectordb.load_questions(answerable=False)) == 4
    assert len(vectordb.load_questions("test")) == 18
    with pytest.raises(ValueError, match="split must be"):
        vectordb.load_questions("train")


def test_front_matter_parsing() -> None:
    meta, body = vectordb.parse_front_matter("---\nid: a\ntitle: T: x\n---\n# Body\n")
    assert meta == {"id": "a", "title": "T: x"} and body == "# Body"
    with pytest.raises(ValueError, match="no front matter"):
        vectordb.parse_front_matter("# just a body")


@pytest.mark.slow
def test_embedding_function_vectors(ef) -> None:
    vecs = np.array(ef(["Where is my parcel?", "How do I track my order?", "cast-iron pan care"]))
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3  # parcel ~ tracking, not cast iron
    lc = vectordb.MiniLMEmbeddings()
    np.testing.assert_allclose(lc.embed_query("Where is my parcel?"), vecs[0], atol=1e-6)
    assert vectordb.MiniLMEmbeddingFunction.name() == "course-minilm-l6-v2"


def test_embedding_function_choice_follows_settings() -> None:
    from shared.config import load_settings

    local = load_settings(environ={}, use_dotenv=False)
    assert isinstance(vectordb.embedding_function(local), vectordb.MiniLMEmbeddingFunction)
    assert isinstance(vectordb.langchain_embeddings(local), vectordb.MiniLMEmbeddings)
    # A chat provider with a key and a compatible base URL does not switch the embeddings.
    chat_only = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    s = load_settings(environ=chat_only, use_dotenv=False)
    assert s.provider == "openai" and s.embedding_provider == "local"
    assert isinstance(vectordb.embedding_function(s), vectordb.MiniLMEmbeddingFunction)


def test_embedding_settings_are_their_own() -> None:
    from langchain_openai import OpenAIEmbeddings

    from shared.config import ConfigError, load_settings

    env = {"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test"}
    s = load_settings(environ=env, use_dotenv=False)
    assert (s.embedding_model, s.embedding_base_url) == ("text-embedding-3-small", None)
    assert "sk-test" not in repr(s) and "sk-test" not in str(s.describe())
    lc = vectordb.langchain_embeddings(s)
    assert isinstance(lc, OpenAIEmbeddings) and lc.check_embedding_ctx_length  # OpenAI itself
    env = {
        "EMBEDDING_PROVIDER": "OpenAI",
        "EMBEDDING_MODEL": "m",
        "EMBEDDING_API_KEY": "k",
        "EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1",
    }
    s = load_settings(environ=env, use_dotenv=False)
    assert s.provider == "local"  # the chat provider is untouched
    assert (s.embedding_provider, s.embedding_model, s.embedding_api_key.reveal()) == (
        "openai",
        "m",
        "k",
    )
    before = dict(os.environ)
    openai_ef = vectordb.embedding_function(s)
    assert type(openai_ef).__name__ == "OpenAIEmbeddingFunction" and openai_ef.api_key == "k"
    assert dict(os.environ) == before  # the key is handed over, never written to os.environ
    assert not vectordb.langchain_embeddings(s).check_embedding_ctx_length  # sends plain text
    with pytest.raises(ConfigError, match="EMBEDDING_PROVIDER='cohere'"):
        load_settings(environ={"EMBEDDING_PROVIDER": "cohere"}, use_dotenv=False)
    with pytest.raises(ConfigError, match="EMBEDDING_API_KEY"):
        load_settings(environ={"EMBEDDING_PROVIDER": "openai"}, use_dotenv=False)


@pytest.mark.slow
def test_openai_style_embeddings_against_a_real_server() -> None:
    """llama.cpp's OpenAI-compatible server, embeddings on (mean pooling), on a free port."""
    import signal
    import time

    import httpx

    from shared.config import load_settings
    from shared.models import smollm2_gguf_path

    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path())]
    cmd += ["--model_alias", "smollm2-embed", "--embedding", "true"]
    cmd += ["--kv_overrides", "llama.pooling_type=int:1"]  # mean of the token vectors
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--verbose", "False"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the llama.cpp server exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the llama.cpp server did not answer"
            time.sleep(0.3)
        env = {
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": "smollm2-embed",
            "EMBEDDING_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "EMBEDDING_API_KEY": "not-needed",
        }
        s = load_settings(environ=env, use_dotenv=False)
        ef = vectordb.embedding_function(s)
        texts = ["Where is my parcel?", "Gift cards are valid for three years.", "Hello"]
        vecs = np.array(ef(texts))
        assert vecs.shape == (3, 576)  # SmolLM2-135M's hidden size
        assert np.isfinite(vecs).all() and (np.linalg.norm(vecs, axis=1) > 0).all()
        lc = vectordb.langchain_embeddings(s).embed_query(texts[1])
        np.testing.assert_allclose(lc, vecs[1], rtol=1e-4, atol=1e-4)
        client = vectordb.ephemeral_client()
        col = client.create_collection(
            "openai-style", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
        )
        col.add(ids=["a", "b", "c"], documents=texts)
        hit = col.query(query_texts=[texts[1]], n_results=1, include=["distances"])
        assert hit["ids"][0] == ["b"] and hit["distances"][0][0] < 1e-3
        client.delete_collection("openai-style")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_wilson_interval_and_digests() -> None:
    low, high = vectordb.wilson_interval(38, 48)
    assert (round(low, 2), round(high, 2)) == (0.66, 0.88)
    assert vectordb.wilson_interval(0, 10)[0] == 0.0 and vectordb.wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        vectordb.wilson_interval(3, 2)
    assert vectordb.answer_digest(0.90476) == vectordb.answer_digest(0.905)
    assert vectordb.answer_digest(["a", "b"]) != vectordb.answer_digest(["b", "a"])


@pytest.mark.slow
def test_exercise_checks_fail_on_wrong_answers(mem) -> None:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from chromadb.utils.embedding_functions import register_embedding_function

    assert vectordb.check_exercise("electrical over $90", ["EL-GRN", "EL-HTR", "EL-LMP"])
    assert not vectordb.check_exercise("electrical over $90", ["EL-GRN", "EL-HTR"])
    assert not vectordb.check_exercise("electrical over $90", None)
    assert vectordb.check_exercise("50-word chunks, hit@3", 38 / 42)
    assert not vectordb.check_exercise("50-word chunks, hit@3", 39 / 42)

    def make(cut: bool) -> type:
        class FirstWords(EmbeddingFunction[Documents]):
            def __init__(self, max_words: int = 20) -> None:
                self.max_words = max_words

            def __call__(self, input: Documents) -> Embeddings:
                n = self.max_words if cut else None
                return vectordb.MiniLMEmbeddingFunction()([" ".join(t.split()[:n]) for t in input])

            @staticmethod
            def name() -> str:
                return "first-words-minilm"

            def get_config(self) -> dict:
                return {"max_words": self.max_words}

            @staticmethod
            def build_from_config(config: dict) -> EmbeddingFunction:
                return FirstWords(config["max_words"])

        return FirstWords

    wrong = make(cut=False)  # embeds the whole text
    assert not vectordb.check_embedding_exercise(register_embedding_function(wrong))
    assert not vectordb.check_embedding_exercise(make(cut=True))  # right, but never registered
    assert vectordb.check_embedding_exercise(register_embedding_function(make(cut=True)))

    def with_add(col, entries):
        col.add(ids=[f"faq-{i}" for i in range(len(entries))], documents=entries)

    def random_ids(col, entries):
        col.upsert(ids=[str(uuid.uuid4()) for _ in entries], documents=entries)

    def with_upsert(col, entries):
        col.upsert(ids=[f"faq-{i}" for i in range(len(entries))], documents=entries)

    assert not vectordb.check_faq_exercise(with_add, mem)  # keeps the old wording
    assert not vectordb.check_faq_exercise(random_ids, mem)  # duplicates
    assert vectordb.check_faq_exercise(with_upsert, mem)


@pytest.mark.slow
def test_registered_function_reopens_in_a_new_process(ef) -> None:
    store = vectordb.persistent_client("pytest-reopen")
    col = store.get_or_create_collection("reopen", embedding_function=ef)
    col.upsert(
        ids=["a", "b"], documents=["free shipping over fifty dollars", "reset your password"]
    )
    code = (
        "from shared import vectordb\n"
        "col = vectordb.persistent_client('pytest-reopen').get_collection('reopen')\n"
        "hit = col.query(query_texts=['forgot my password'], n_results=1)['ids'][0][0]\n"
        "print(col.count(), hit)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "b"]


def test_chunking() -> None:
    text = "one two three\n\nfour five\n\n" + " ".join(f"w{i}" for i in range(25))
    chunks = vectordb.chunk_text(text, max_words=10, overlap=2)
    assert chunks[0] == "one two three four five"
    assert all(len(c.split()) <= 10 for c in chunks)
    assert chunks[1].split()[:2] == ["w0", "w1"] and chunks[2].split()[:2] == ["w8", "w9"]
    with pytest.raises(ValueError, match="overlap"):
        vectordb.chunk_text("x", max_words=5, overlap=5)
    ids, texts, metas = vectordb.kb_chunks(vectordb.load_kb(), max_words=120, overlap=20)
    assert len(ids) == len(set(ids)) == len(texts) == 51
    assert ids[0].endswith("#0") and metas[0]["doc_id"] == ids[0].split("#")[0]


@pytest.mark.slow
def test_ingestion_is_idempotent(mem, ef) -> None:
    col = mem.create_collection("kb-test", embedding_function=ef)
    docs = vectordb.load_kb()[:6]
    ids, texts, metas = vectordb.kb_chunks(docs)
    first = vectordb.ingest(col, ids, texts, metas, batch_size=4, progress=False)
    second = vectordb.ingest(col, ids, texts, metas, batch_size=4, progress=False)
    assert first == second == len(ids)
    with pytest.raises(ValueError, match="unique"):
        vectordb.ingest(col, ["x", "x"], ["a", "b"], progress=False)
    with pytest.raises(ValueError, match="same length"):
        vectordb.ingest(col, ["x"], ["a", "b"], progress=False)


def test_hit_rate_at_k() -> None:
    ranked = [["x", "x", "y"], ["y", "z", "x"], ["q"]]
    gold = ["y", "x", None]
    assert vectordb.hit_rate_at_k(ranked, gold, k=1) == 0.0
    assert vectordb.hit_rate_at_k(ranked, gold, k=2) == 0.5  # duplicates of 'x' collapse
    assert vectordb.hit_rate_at_k(ranked, gold, k=3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        vectordb.hit_rate_at_k(ranked, gold, k=0)
    with pytest.raises(ValueError, match="no answerable"):
        vectordb.hit_rate_at_k([["a"]], [None])


def test_persistent_client_stays_inside_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENAI_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="plain folder name"):
        vectordb.persistent_client("../outside")
    assert not (tmp_path / "cache").exists()  # refused before anything was created
    vectordb.persistent_client("inside").heartbeat()
    assert (tmp_path / "cache" / "chroma" / "inside").is_dir()
