"""Lesson 04 helpers: segmentation, BPE, real tokenizers, embeddings math, attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from shared import tokens as T
from shared.models import chat_model_dir, embedding_model_path
from shared.paths import data_path

D = T.DEMO_DICTIONARY
CODE = "def add(a, b):\n    return a + b\n"


# ---------------------------------------------------------------------------- segmentation
def test_max_matching_golden_outputs_on_the_chinese_examples() -> None:
    assert T.forward_max_match("老四川菜馆", D) == ["老四", "川菜", "馆"]
    assert T.backward_max_match("老四川菜馆", D) == ["老", "四川", "菜馆"]
    assert T.forward_max_match("这苹果不大好吃", D) == ["这", "苹果", "不", "大好", "吃"]
    assert T.backward_max_match("这苹果不大好吃", D) == ["这", "苹果", "不", "大", "好吃"]


def test_a_bigger_dictionary_changes_the_result() -> None:
    bigger = D | {"川菜馆", "不大"}
    assert T.forward_max_match("老四川菜馆", bigger) == ["老四", "川菜馆"]
    assert T.backward_max_match("这苹果不大好吃", bigger) == ["这", "苹果", "不大", "好吃"]


def test_unknown_characters_become_single_pieces_and_nothing_is_lost() -> None:
    text = "老王的四川菜馆"
    for seg in (T.forward_max_match(text, D), T.backward_max_match(text, D)):
        assert "".join(seg) == text
    assert T.forward_max_match("", D) == []
    assert T.forward_max_match("abc", []) == ["a", "b", "c"]


def test_all_segmentations_lists_every_dictionary_split() -> None:
    segs = T.all_segmentations("老四川菜馆", D)
    assert len(segs) == 9
    assert segs[0] == ["老", "四川", "菜馆"]  # fewest pieces first
    assert ["老四", "川菜", "馆"] in segs and ["老", "四", "川", "菜", "馆"] in segs
    assert all("".join(s) == "老四川菜馆" for s in segs)
    assert T.all_segmentations("xyz", D) == []  # "x" is not in the dictionary


# ---------------------------------------------------------------------------- BPE
@pytest.fixture(scope="module")
def course_bpe():
    lines = data_path("tokens", "bpe_corpus.txt").read_text().splitlines()
    return T.train_bpe(lines, vocab_size=400)


def test_bpe_round_trip_is_exact_even_for_unseen_text(course_bpe) -> None:
    for text in [
        "The tokenizer learns merges.",
        "完全没见过的句子 😀",
        CODE,
        "  spaces\tand\ttabs ",
    ]:
        assert course_bpe.decode(course_bpe.encode(text).ids) == text


def test_bpe_training_is_deterministic_and_learns_frequent_pieces(course_bpe) -> None:
    again = T.train_bpe(data_path("tokens", "bpe_corpus.txt").read_text().splitlines(), 400)
    merges = T.bpe_merges(course_bpe)
    assert merges == T.bpe_merges(again)
    assert course_bpe.get_vocab_size() == 400
    assert len(merges) == 400 - 256
    assert merges[0] == ("Ġ", "t")  # the most frequent pair in the corpus
    assert [T.readable_piece(p) for p in course_bpe.encode(" the").tokens] == [" the"]


def test_bpe_rejects_a_vocabulary_smaller_than_the_bytes() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        T.train_bpe(["abc"], vocab_size=100)


def test_readable_piece() -> None:
    assert T.readable_piece("Ġworld") == " world"
    assert T.readable_piece("Ċ") == "\n"
    assert T.readable_piece("å·") == "<E5><B7>"  # half of a Chinese character
    assert T.readable_piece("##ing") == "##ing"  # WordPiece tokens are left alone


# ---------------------------------------------------------------------------- real tokenizers
@pytest.fixture(scope="module")
def real_tokenizers() -> dict[str, T.NamedTokenizer]:
    return {
        "cl100k": T.tiktoken_tokenizer(),
        "smollm2": T.hf_tokenizer("SmolLM2", AutoTokenizer.from_pretrained(chat_model_dir())),
        "minilm": T.hf_tokenizer("MiniLM", AutoTokenizer.from_pretrained(embedding_model_path())),
    }


@pytest.mark.parametrize(
    ("text", "golden"),
    [
        ("Hello, world!", {"cl100k": 4, "smollm2": 4, "minilm": 4}),
        ("老四川菜馆", {"cl100k": 8, "smollm2": 12, "minilm": 5}),
        (CODE, {"cl100k": 12, "smollm2": 13, "minilm": 12}),
    ],
)
def test_token_counts_are_golden(real_tokenizers, text: str, golden: dict[str, int]) -> None:
    assert {k: tok.count(text) for k, tok in real_tokenizers.items()} == golden


def test_round_trip_and_pieces(real_tokenizers) -> None:
    cl, smol, mini = (
        real_tokenizers["cl100k"],
        real_tokenizers["smollm2"],
        real_tokenizers["minilm"],
    )
    for tok in (cl, smol):  # byte-level BPE: exact round trip, for any text
        assert tok.decode(tok.encode(CODE)) == CODE
        assert tok.decode(tok.encode("老四川菜馆")) == "老四川菜馆"
    assert cl.pieces("Hello, world!") == ["Hello", ",", " world", "!"]
    assert smol.pieces("Hello, world!") == ["Hello", ",", " world", "!"]
    # WordPiece lower-cases, drops spacing and maps unknown characters to [UNK]: lossy
    assert mini.pieces("Hello, world!") == ["hello", ",", "world", "!"]
    assert mini.pieces("老四川菜馆").count("[UNK]") == 3


def test_estimate_cost() -> None:
    assert T.estimate_cost(1_000_000, 2.5) == pytest.approx(2.5)
    assert T.estimate_cost(1234, 0.15) == pytest.approx(0.0001851)
    with pytest.raises(ValueError, match="must not be negative"):
        T.estimate_cost(-1, 1.0)


# ---------------------------------------------------------------------------- embeddings
def test_cosine_similarity_properties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    assert T.cosine_similarity(a, a) == pytest.approx(1.0)
    assert T.cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert T.cosine_similarity(a, b) == pytest.approx(T.cosine_similarity(b, a))
    assert T.cosine_similarity(a, 3.0 * b) == pytest.approx(T.cosine_similarity(a, b))  # scale-free
    assert T.cosine_similarity([1, 0], [0, 2]) == pytest.approx(0.0)
    m = T.cosine_similarity(rng.normal(size=(4, 8)), rng.normal(size=(3, 8)))
    assert m.shape == (4, 3) and np.all(np.abs(m) <= 1 + 1e-12)
    with pytest.raises(ValueError, match="zero vector"):
        T.cosine_similarity(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="different sizes"):
        T.cosine_similarity(np.ones(3), np.ones(4))


def test_nearest_and_projection() -> None:
    m = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    hits = T.nearest(np.array([1.0, 0.1]), m, k=2)
    assert [i for i, _ in hits] == [0, 2]
    assert hits[0][1] > hits[1][1]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 5))
    p = T.project_2d(x)
    assert p.shape == (10, 2)
    assert np.allclose(p.mean(axis=0), 0.0)
    assert np.allclose(T.project_2d(x), p)  # same signs every time
    assert p[:, 0].var() >= p[:, 1].var()  # first axis keeps the most variance


# ---------------------------------------------------------------------------- attention
def test_sinusoidal_positions() -> None:
    pe = T.sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    assert torch.allclose(pe[0, 0::2], torch.zeros(8)) and torch.allclose(
        pe[0, 1::2], torch.ones(8)
    )
    assert pe[3, 0].item() == pytest.approx(np.sin(3.0))
    assert pe[3, 3].item() == pytest.approx(np.cos(3.0 / 10000 ** (2 / 16)), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        T.sinusoidal_positions(4, 5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_the_torch_reference(causal: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))  # (B, H, T, d)
    out, weights = T.scaled_dot_product_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 7), atol=1e-6)
    if causal:
        assert weights[..., 0, 1:].abs().max() == 0  # the first token sees only itself


def test_multi_head_attention_equals_torch_multiheadattention() -> None:
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1))  # (B, T, C)
    mine = T.MultiHeadSelfAttention(16, 4, seed=0)
    ref = torch.nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mine.w_qkv)
        ref.out_proj.weight.copy_(mine.w_out)
    mask = torch.ones(6, 6, dtype=torch.bool).triu(1)  # True = may not look
    ref_out, ref_w = ref(x, x, x, attn_mask=mask, average_attn_weights=False)
    out, w = mine(x, causal=True)
    assert out.shape == (2, 6, 16) and w.shape == (2, 4, 6, 6)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        T.MultiHeadSelfAttention(10, 4)


@pytest.mark.slow
def test_attention_maps_from_the_chat_model() -> None:
    tok, model = T.load_attention_model()
    tokens, maps = T.attention_maps(model, tok, "many people dislike steve jobs")
    assert tokens == ["many", " people", " dislike", " ste", "ve", " jobs"]
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert maps.shape == (n_layers, n_heads, 6, 6)
    assert torch.allclose(maps.sum(-1), torch.ones(n_layers, n_heads, 6), atol=1e-4)
    assert maps[..., 0, 1:].abs().max() == 0  # a decoder never looks ahead
