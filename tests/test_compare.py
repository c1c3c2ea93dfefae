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


def test_test_set_is_balanced_frozen_and_shares_nothing_with_dev() -> None:
    test = compare.load_workload(paths.data_path("compare", "intents_test.jsonl"))
    assert len(test) == 120
    assert all(sum(it["label"] == lab for it in test) == 30 for lab in LABELS)
    texts = {it["text"] for it in test}
    assert len(texts) == 120
    assert not texts & {it["text"] for it in workload()}  # held out from the dev set


def test_intent_prompt_gives_every_label_with_its_description() -> None:
    descriptions = json.loads(paths.data_path("compare", "labels.json").read_text())
    prompt = compare.intent_prompt("Where is my parcel?", descriptions)
    for label, about in descriptions.items():
        assert f"{label}: {about}" in prompt
    assert "Message: Where is my parcel?" in prompt
    assert prompt.endswith("Category:")


# ------------------------------------------------------------------------ statistics
def test_wilson_interval_golden_values() -> None:
    lo, hi = compare.wilson_interval(8, 32)
    assert (round(lo, 2), round(hi, 2)) == (0.13, 0.42)  # the review's figure for 8/32
    lo, hi = compare.wilson_interval(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.324, abs=1e-3)
    assert compare.wilson_interval(30, 30)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        compare.wilson_interval(5, 4)


def test_mcnemar_exact() -> None:
    a = [True] * 10 + [False] * 10
    assert compare.mcnemar_exact(a, a) == (0, 0, 1.0)
    only_a, only_b, p = compare.mcnemar_exact([True] * 10, [False] * 10)
    assert (only_a, only_b) == (10, 0) and p == pytest.approx(2 / 2**10)
    _, _, p = compare.mcnemar_exact([True, False] * 5, [False, True] * 5)
    assert p == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same items"):
        compare.mcnemar_exact([True], [True, False])


# ------------------------------------------------------------------------ the report
def test_comparison_table_shows_na_counts_and_intervals() -> None:
    rows = [
        compare.Measurement(
            model="a", kind="dec", parameters=134_515_008, memory_mb=513.0, correct=30, items=120
        ),
        compare.not_configured(),
    ]
    table = compare.comparison_table(rows)
    assert list(table.index) == ["a", "cloud model"]
    assert table.loc["a", "parameters"] == "134.5 M"
    assert table.loc["a", "accuracy (95 % CI)"] == "0.25 (30/120, 0.18-0.33)"
    assert table.loc["cloud model", "accuracy (95 % CI)"] == "n/a"
    assert "not configured" in table.loc["cloud model", "note"]
    with pytest.raises(ValueError, match="at least one"):
        compare.comparison_table([])


def test_plot_comparison_draws_intervals_and_a_chance_line() -> None:
    import matplotlib

    matplotlib.use("Agg")
    rows = [
        compare.Measurement(model="a", kind="x", correct=6, items=12, tokens_per_s=10, memory_mb=1),
        compare.Measurement(model="b", kind="y", correct=11, items=12, memory_mb=80),
    ]
    axes = compare.plot_comparison(rows, chance=0.25)
    assert axes[0].get_title().startswith("accuracy")
    assert any(line.get_xdata()[0] == 0.25 for line in axes[0].get_lines())  # the chance line
    assert len(axes[1].patches) == 1  # "b" has no speed: not drawn


# ------------------------------------------------------------------------ exercise checks
def test_majority_baseline_check_rejects_wrong_answers() -> None:
    import random
    from collections import Counter

    test = compare.load_workload(paths.data_path("compare", "intents_test.jsonl"))
    rng = random.Random(0)
    subset = [it["label"] for it in test if it["label"] != "technical" or rng.random() < 0.3]
    right = Counter(subset).most_common(1)[0][1] / len(subset)
    assert compare.check_majority_baseline(0, right)
    assert not compare.check_majority_baseline(0, 0.25)  # the balanced-set answer
    assert not compare.check_majority_baseline(0, right + 0.01)
    assert not compare.check_majority_baseline(0, None)


def test_kv_cache_check_rejects_wrong_answers() -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(models.chat_model_dir())
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    right = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 8192 * 4 / 2**20
    assert compare.check_kv_cache_mb(cfg, 8192, right)
    with_all_heads = right * cfg.num_attention_heads / cfg.num_key_value_heads
    assert not compare.check_kv_cache_mb(cfg, 8192, with_all_heads)  # forgot GQA
    assert not compare.check_kv_cache_mb(cfg, 8192, right / 2)  # keys only
    assert not compare.check_kv_cache_mb(cfg, 8192, right * 2**20 / 1e6)  # MB, not MiB
    assert not compare.check_kv_cache_mb(cfg, 8192, "a lot")


# ------------------------------------------------------------------------ the real models
@pytest.mark.slow
def test_decode_speed_in_process(chat) -> None:
    tok, model = chat
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
    descriptions = json.loads(paths.data_path("compare", "labels.json").read_text())
    preds = compare.classify_with_client(client, local_server.model, texts, descriptions)
    assert len(preds) == 2 and set(preds) <= {*LABELS, "unknown"}
    assert compare.client_decode_speed(client, local_server.model, "Hello", max_tokens=4) > 0
    assert compare.process_memory_mb(local_server.pid) > 50
