"""Tests for shared.compare: size arithmetic, file and memory measurements, the workload, label
parsing, the report table, and the classifiers on the real local models."""

from __future__ import annotations

import json
import os

import pytest
import torch

from shared import compare, metrics, models, paths

LABELS = ["payment", "delivery", "returns", "technical"]
SMOLLM2_PARAMS = 134_515_008


def workload() -> list[dict[str, str]]:
    return compare.load_workload(paths.data_path("compare", "intents.jsonl"))


# ------------------------------------------------------------------------ arithmetic and files
def test_weights_memory_gb_golden_values() -> None:
    assert compare.weights_memory_gb(6.2e9, 16) == pytest.approx(12.4)  # ChatGLM3-6B fp16
    assert compare.weights_memory_gb(6.2e9, 4) == pytest.approx(3.1)
    assert compare.weights_memory_gb(8e9, 16) == pytest.approx(16.0)
    with pytest.raises(ValueError, match="positive"):
        compare.weights_memory_gb(0, 16)
    with pytest.raises(ValueError, match="positive"):
        compare.weights_memory_gb(1e9, -4)


def test_path_size_of_files_and_folders(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 2**20)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 2**19)
    assert compare.path_size_mb(tmp_path / "a.bin") == pytest.approx(1.0)
    assert compare.path_size_mb(tmp_path) == pytest.approx(1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare.path_size_mb(tmp_path / "missing")


def test_tensor_and_process_memory() -> None:
    layer = torch.nn.Linear(256, 256)  # 65,536 weights + 256 biases, fp32
    assert compare.count_parameters(layer) == 65_792
    assert compare.tensor_memory_mb(layer) == pytest.approx(65_792 * 4 / 2**20)
    assert compare.process_memory_mb(os.getpid()) > 10  # this Python process


@pytest.mark.slow
def test_count_parameters_on_disk_of_packaged_models(tmp_path) -> None:
    folder = models.chat_model_dir()
    assert compare.count_parameters_on_disk(folder) == SMOLLM2_PARAMS
    assert compare.count_parameters_on_disk(models.smollm2_gguf_path()) == SMOLLM2_PARAMS
    with pytest.raises(ValueError, match="neither"):
        compare.count_parameters_on_disk(tmp_path)


def test_timed_returns_result_and_seconds() -> None:
    result, seconds = compare.timed(lambda: sum(range(1000)))
    assert result == 499_500 and 0 <= seconds < 5


# ------------------------------------------------------------------------ workload and labels
def test_workload_is_balanced() -> None:
    items = workload()
    assert len(items) == 32
    assert sorted({it["label"] for it in items}) == sorted(LABELS)
    assert all(sum(it["label"] == lab for it in items) == 8 for lab in LABELS)
    assert len({it["text"] for it in items}) == 32  # no duplicates
    descriptions = json.loads(paths.data_path("compare", "labels.json").read_text())
    assert list(descriptions) == LABELS


def test_load_workload_rejects_bad_files(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\n')
    with pytest.raises(ValueError, match="line 1: each item needs 'text' and 'label'"):
        compare.load_workload(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no items"):
        compare.load_workload(empty)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("payment", "payment"),
        ("Category: Delivery.", "delivery"),
        ("It is about returns, not payment", "returns"),  # the first label named wins
        ("TECHNICAL issue", "technical"),
        ("prepayments", "unknown"),  # whole words only
        ("I am not sure", "unknown"),
        ("", "unknown"),
    ],
)
def test_parse_label(answer: str, expected: str) -> None:
    assert compare.parse_label(answer, LABELS) == expected


def test_intent_prompt_lists_labels_and_ends_with_the_cue() -> None:
    prompt = compare.intent_prompt("Where is my parcel?", LABELS)
    assert "payment, delivery, returns, technical" in prompt
    assert "Message: Where is my parcel?" in prompt
    assert prompt.endswith("Category:")


# ------------------------------------------------------------------------ the report
def test_comparison_table_shows_na_and_formats_parameters() -> None:
    rows = [
        compare.Measurement("a", "decoder", 134_515_008, 513.2, 513.0, 1.2, 14.0, 83.5, 0.5),
        compare.not_configured(),
    ]
    table = compare.comparison_table(rows)
    assert list(table.index) == ["a", "cloud model"]
    assert table.loc["a", "parameters"] == "134.5 M"
    assert table.loc["cloud model", "accuracy"] == "n/a"
    assert "not configured" in table.loc["cloud model", "note"]
    with pytest.raises(ValueError, match="at least one"):
        compare.comparison_table([])


def test_plot_comparison_draws_three_panels() -> None:
    import matplotlib

    matplotlib.use("Agg")
    rows = [compare.Measurement("a", "x", accuracy=0.5, tokens_per_s=10, memory_mb=100),
            compare.Measurement("b", "y", accuracy=0.9, memory_mb=80)]  # fmt: skip
    axes = compare.plot_comparison(rows)
    assert [ax.get_title() for ax in axes] == ["task accuracy", "tokens / s", "memory (MiB)"]
    assert len(axes[1].patches) == 1  # "b" has no speed: not drawn


# ------------------------------------------------------------------------ the real models
@pytest.mark.slow
def test_label_tokens_are_distinct_single_tokens(chat) -> None:
    tok, _ = chat
    for space in (True, False):
        ids = compare.label_token_ids(tok, LABELS, leading_space=space)
        assert len(set(ids)) == 4
    with pytest.raises(ValueError, match="share a first token"):
        compare.label_token_ids(tok, ["billing", "bills"], leading_space=False)


@pytest.mark.slow
def test_decoder_classifiers_return_labels(chat) -> None:
    tok, model = chat
    items = workload()[:4]
    texts = [it["text"] for it in items]
    constrained = compare.classify_by_label_probs(model, tok, texts, LABELS, chat=False)
    assert len(constrained) == 4 and set(constrained) <= set(LABELS)  # never "unknown"
    again = compare.classify_by_label_probs(model, tok, texts, LABELS, chat=False, batch_size=3)
    assert again == constrained  # greedy and independent of batching
    free = compare.classify_with_lm(model, tok, texts[:2], LABELS, chat=True, max_new_tokens=3)
    assert len(free) == 2 and set(free) <= {*LABELS, "unknown"}
    assert compare.decode_speed(model, tok, "Hello", max_new_tokens=3) > 0


@pytest.mark.slow
def test_encoder_classifies_the_workload_well() -> None:
    embedder = models.load_embedder(device="cpu")
    items = workload()
    descriptions = json.loads(paths.data_path("compare", "labels.json").read_text())
    preds = compare.classify_with_embeddings(embedder, [it["text"] for it in items], descriptions)
    assert metrics.accuracy(preds, [it["label"] for it in items]) >= 0.85


@pytest.mark.slow
def test_client_measurements_against_a_real_local_server(local_server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=local_server.url, api_key="local")
    texts = [it["text"] for it in workload()[:2]]
    preds = compare.classify_with_client(client, local_server.model, texts, LABELS, max_tokens=3)
    assert len(preds) == 2 and set(preds) <= {*LABELS, "unknown"}
    assert compare.client_decode_speed(client, local_server.model, "Hello", max_tokens=4) > 0
    assert compare.process_memory_mb(local_server.pid) > 50
