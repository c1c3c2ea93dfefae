"""Lesson 04 helpers: segmentation, token pieces, embeddings maths, exercise checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tiktoken
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from shared import tokens as T
from shared.models import chat_model_dir, embedding_model_path, prepare_tiktoken

D = T.DEMO_DICTIONARY


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


# ---------------------------------------------------------------------------- pieces
def test_readable_piece() -> None:
    assert T.readable_piece("Ġworld") == " world"
    assert T.readable_piece("Ċ") == "\n"
    assert T.readable_piece("å·") == "<E5><B7>"  # half of a Chinese character
    assert T.readable_piece("##ing") == "##ing"  # WordPiece tokens are left alone


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


# ---------------------------------------------------------------------------- exercise checks
def test_token_count_check_accepts_the_true_counts_only() -> None:
    prepare_tiktoken()
    n_cl = len(tiktoken.get_encoding("cl100k_base").encode(T.EXERCISE_SENTENCE))
    smol = AutoTokenizer.from_pretrained(chat_model_dir())
    n_smol = len(smol.encode(T.EXERCISE_SENTENCE, add_special_tokens=False))
    assert T.check_token_counts(n_cl, n_smol)
    assert not T.check_token_counts(n_cl + 1, n_smol)
    assert not T.check_token_counts(n_cl, n_smol - 1)
    assert not T.check_token_counts(n_smol, n_cl)  # swapped
    assert not T.check_token_counts(len(T.EXERCISE_SENTENCE), n_smol)  # characters, not tokens
    assert not T.check_token_counts(None, None)


def test_real_tokenizers_golden_counts_and_minilm_unknowns() -> None:
    prepare_tiktoken()
    cl = tiktoken.get_encoding("cl100k_base")
    smol = AutoTokenizer.from_pretrained(chat_model_dir())
    mini = AutoTokenizer.from_pretrained(embedding_model_path())
    assert len(cl.encode("Hello, world!")) == 4
    assert len(smol.encode("老四川菜馆", add_special_tokens=False)) == 12
    assert cl.decode(cl.encode("老四川菜馆")) == "老四川菜馆"  # byte-level: lossless
    assert mini.tokenize("Hello, world!") == ["hello", ",", "world", "!"]  # uncased normaliser
    assert mini.tokenize("老四川菜馆").count("[UNK]") == 3  # most Chinese characters are unknown


def test_search_check_rejects_a_wrong_search() -> None:
    import numpy as np

    from shared.models import load_embedder

    embedder = load_embedder(device="cpu")
    faq_vecs = embedder.encode(list(T.FAQ))

    def right(question: str) -> int:
        return T.nearest(embedder.encode([question])[0], faq_vecs, k=1)[0][0]

    def worst(question: str) -> int:  # the least similar entry
        sims = T.cosine_similarity(embedder.encode([question]), faq_vecs)[0]
        return int(np.argmin(sims))

    assert T.check_search(right)
    assert not T.check_search(worst)
    assert not T.check_search(lambda q: 0)
    assert not T.check_search(lambda q: None)


def test_padded_attention_check_rejects_unmasked_and_wrong_masks() -> None:
    def right(q, k, v, lengths):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        pad = torch.arange(k.shape[1])[None, :] >= lengths[:, None]
        return scores.masked_fill(pad[:, None, :], float("-inf")).softmax(-1) @ v

    def no_mask(q, k, v, lengths):
        return F.scaled_dot_product_attention(q, k, v)

    def query_mask(q, k, v, lengths):  # masks the queries instead of the keys
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        pad = torch.arange(k.shape[1])[None, :] >= lengths[:, None]
        return scores.masked_fill(pad[:, :, None], -1e9).softmax(-1) @ v

    assert T.check_padded_attention(right)
    assert not T.check_padded_attention(no_mask)
    assert not T.check_padded_attention(query_mask)
    assert not T.check_padded_attention(lambda q, k, v, lengths: None)
