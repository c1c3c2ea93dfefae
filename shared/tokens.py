"""Lesson 04: tokenizers and embeddings: the small pieces the lesson reuses and its checks.

The lesson notebook writes the mechanisms itself (BPE training with ``tokenizers``, sinusoidal
positional encoding, multi-head attention, attention read from SmolLM2). This module keeps:

* dictionary segmentation: forward and backward maximum matching, and every possible
  segmentation of a string (the notebook writes FMM and asserts it agrees with this one);
* ``readable_piece``: byte-level BPE pieces ("Ġworld", half a Chinese character) as text;
* embedding maths in NumPy: cosine similarity, nearest neighbours, a 2-D projection;
* a small FAQ for the semantic-search demo, and the exercise checks (they never print answers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = [
    "DEMO_DICTIONARY",
    "EXERCISE_SENTENCE",
    "FAQ",
    "all_segmentations",
    "backward_max_match",
    "check_padded_attention",
    "check_search",
    "check_token_counts",
    "cosine_similarity",
    "estimate_cost",
    "forward_max_match",
    "nearest",
    "project_2d",
    "readable_bytes",
    "readable_piece",
]

#: A tiny dictionary for the segmentation examples "老四川菜馆" and "这苹果不大好吃".
#: "川菜馆" and "不大" are left out on purpose: add them and watch the results change.
DEMO_DICTIONARY: frozenset[str] = frozenset(
    ["老", "四", "川", "菜", "馆", "老四", "四川", "川菜", "菜馆", "四川菜"]
    + ["这", "苹", "果", "苹果", "不", "大", "好", "吃", "大好", "好吃"]
)

#: The FAQ of the semantic-search demo (index = answer id).
FAQ: tuple[str, ...] = (
    "Refunds are paid within five working days after we receive the returned item.",
    "Standard delivery takes two to four days; express delivery arrives the next day.",
    "You can reset your password from the login page with the 'Forgot password' link.",
    "Our stores open at 9 am and close at 7 pm from Monday to Saturday.",
    "Gift cards are valid for two years and can be used online and in stores.",
    "To change your delivery address, open the order and choose 'Edit address'.",
    "We accept credit cards, PayPal and bank transfer.",
    "Damaged items can be returned free of charge within 30 days.",
)

#: The sentence of exercise 1 (token counts with two real tokenizers).
EXERCISE_SENTENCE = (
    "Tokenizers turn text into numbers; 分词器把文本变成数字。 for i in range(3): pass"
)


# ---------------------------------------------------------------------------- segmentation
def _longest(vocab: Iterable[str]) -> int:
    return max((len(w) for w in vocab), default=1)


def forward_max_match(text: str, vocab: Iterable[str], max_len: int | None = None) -> list[str]:
    """Segment left to right, always taking the longest dictionary word (or one character)."""
    words = set(vocab)
    n = max_len or _longest(words)
    out, i = [], 0
    while i < len(text):
        for size in range(min(n, len(text) - i), 0, -1):
            if size == 1 or text[i : i + size] in words:
                out.append(text[i : i + size])
                i += size
                break
    return out


def backward_max_match(text: str, vocab: Iterable[str], max_len: int | None = None) -> list[str]:
    """Segment right to left, always taking the longest dictionary word (or one character)."""
    words = set(vocab)
    n = max_len or _longest(words)
    out, j = [], len(text)
    while j > 0:
        for size in range(min(n, j), 0, -1):
            if size == 1 or text[j - size : j] in words:
                out.append(text[j - size : j])
                j -= size
                break
    return out[::-1]


def all_segmentations(text: str, vocab: Iterable[str]) -> list[list[str]]:
    """Every way to cut ``text`` into dictionary words, fewest pieces first, then in order."""
    words = set(vocab)
    if not text:
        return [[]]
    results: list[list[str]] = []
    for end in range(1, len(text) + 1):
        if text[:end] in words:
            results += [[text[:end], *rest] for rest in all_segmentations(text[end:], words)]
    return sorted(results, key=lambda seg: (len(seg), seg))


# ---------------------------------------------------------------------------- token pieces
def _byte_decoder() -> dict[str, int]:
    """GPT-2's map from the printable stand-ins of byte-level BPE ("Ġ" = space) back to bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


_BYTES = _byte_decoder()


def readable_bytes(raw: bytes) -> str:
    """Bytes as text; a piece that is only part of a UTF-8 character shows as <hex> bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02X}>" for b in raw)


def readable_piece(token: str) -> str:
    """Show a byte-level BPE token as text ("Ġworld" -> " world"); partial UTF-8 as <hex> bytes."""
    if not all(ch in _BYTES for ch in token):
        return token  # not a byte-level token (WordPiece, special tokens)
    return readable_bytes(bytes(_BYTES[ch] for ch in token))


def estimate_cost(n_tokens: int, usd_per_million: float) -> float:
    """Price of ``n_tokens`` at ``usd_per_million`` dollars per million tokens."""
    if n_tokens < 0 or usd_per_million < 0:
        raise ValueError("token count and price must not be negative")
    return n_tokens * usd_per_million / 1_000_000


# ---------------------------------------------------------------------------- embeddings
def cosine_similarity(a: Any, b: Any) -> np.ndarray | float:
    """Cosine similarity of two vectors (a float) or of every row of ``a`` with every row of ``b``.

    Shapes: (D,) and (D,) -> float; (N, D) and (M, D) -> (N, M). Zero vectors raise ValueError.
    """
    a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"vectors have different sizes: {a2.shape[1]} and {b2.shape[1]}")
    na, nb = np.linalg.norm(a2, axis=1, keepdims=True), np.linalg.norm(b2, axis=1, keepdims=True)
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("cosine similarity is undefined for a zero vector")
    sims = (a2 / na) @ (b2 / nb).T  # (N, M)
    return float(sims[0, 0]) if np.ndim(a) == 1 and np.ndim(b) == 1 else sims


def nearest(query: np.ndarray, matrix: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` rows of ``matrix`` most like ``query``: ``[(row, cosine), ...]``, best first."""
    sims = cosine_similarity(np.atleast_2d(query), matrix)[0]  # (M,)
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(i), float(sims[i])) for i in order]


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """PCA to 2-D with NumPy's SVD; signs fixed so the picture is the same on every run. (N, 2)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]  # (2, D)
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    return x @ (comps * signs[:, None]).T


# ---------------------------------------------------------------------------- exercise checks
def check_token_counts(n_cl100k: Any, n_smollm2: Any) -> bool:
    """Exercise 1: are these the token counts of ``EXERCISE_SENTENCE``? (prints no answer)."""
    import tiktoken
    from transformers import AutoTokenizer

    from shared.models import chat_model_dir, prepare_tiktoken

    prepare_tiktoken()
    want_cl = len(tiktoken.get_encoding("cl100k_base").encode(EXERCISE_SENTENCE))
    smol = AutoTokenizer.from_pretrained(chat_model_dir())
    want_smol = len(smol.encode(EXERCISE_SENTENCE, add_special_tokens=False))
    return n_cl100k == want_cl and n_smollm2 == want_smol


#: Held-out questions for exercise 2 and the FAQ entry that answers each.
_SEARCH_CASES: tuple[tuple[str, int], ...] = (
    ("my item arrived broken, can I send it back?", 7),
    ("what time do you shut on saturdays?", 3),
    ("how long until the money for my return reaches me", 0),
    ("I moved house, can the parcel go to my new place?", 5),
    ("is a voucher I got last year still good?", 4),
)


def check_search(search: Callable[[str], Any]) -> bool:
    """Exercise 2: does ``search(question)`` return the right FAQ index for held-out questions?"""
    return all(search(question) == want for question, want in _SEARCH_CASES)


def check_padded_attention(fn: Callable[..., Any], seed: int = 0) -> bool:
    """Exercise 3: ``fn(q, k, v, lengths)`` must mask padded keys and match PyTorch's kernel."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(3, 7, 8, generator=gen) for _ in range(3))  # (B, T, d)
    lengths = torch.tensor([7, 4, 1])
    keep = torch.arange(7)[None, :] < lengths[:, None]  # (B, T): True for real tokens
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, :])
    got = fn(q, k, v, lengths)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    # changing what sits in the padding must change nothing
    k2, v2 = k.clone(), v.clone()
    k2[~keep], v2[~keep] = 100.0, -100.0
    again = fn(q, k2, v2, lengths)
    return bool(torch.allclose(got, expected, atol=1e-5) and torch.allclose(again, got, atol=1e-5))
