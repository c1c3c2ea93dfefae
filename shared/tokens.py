"""Lesson 04: tokenizers and embeddings, looked at from the inside.

* segmentation with a dictionary: forward and backward maximum matching, and every possible
  segmentation of a string (to see why Chinese text is ambiguous for a word-level tokenizer);
* a small byte-level BPE tokenizer trained with the ``tokenizers`` library, and its merges;
* real tokenizers side by side (tiktoken ``cl100k_base``, SmolLM2's BPE, MiniLM's WordPiece)
  behind one small interface, with token counts and a cost estimate;
* embedding utilities in NumPy: cosine similarity, nearest neighbours, a 2-D projection;
* sinusoidal positional encoding, scaled dot-product and multi-head self-attention in torch,
  and the attention weights of the real chat model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEMO_DICTIONARY",
    "NamedTokenizer",
    "MultiHeadSelfAttention",
    "all_segmentations",
    "attention_maps",
    "backward_max_match",
    "bpe_merges",
    "cosine_similarity",
    "estimate_cost",
    "forward_max_match",
    "hf_tokenizer",
    "load_attention_model",
    "nearest",
    "project_2d",
    "readable_piece",
    "scaled_dot_product_attention",
    "sinusoidal_positions",
    "tiktoken_tokenizer",
    "train_bpe",
]

#: A tiny dictionary for the segmentation examples "老四川菜馆" and "这苹果不大好吃".
#: "川菜馆" and "不大" are left out on purpose: add them and watch the results change.
DEMO_DICTIONARY: frozenset[str] = frozenset(
    ["老", "四", "川", "菜", "馆", "老四", "四川", "川菜", "菜馆", "四川菜",
     "这", "苹", "果", "苹果", "不", "大", "好", "吃", "大好", "好吃"]
)  # fmt: skip


# ---------------------------------------------------------------------------- segmentation
def _longest(vocab: Iterable[str]) -> int:
    return max((len(w) for w in vocab), default=1)


def forward_max_match(text: str, vocab: Iterable[str], max_len: int | None = None) -> list[str]:
    """Segment left to right, always taking the longest dictionary word (or one character)."""
    words, n = set(vocab), max_len or _longest(vocab)
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
    words, n = set(vocab), max_len or _longest(vocab)
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


# ---------------------------------------------------------------------------- BPE
def train_bpe(texts: Iterable[str], vocab_size: int = 400, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer (``tokenizers.Tokenizer``) on ``texts``.

    Byte-level means any string can be encoded (no unknown token) and decoding gives the input
    back exactly. The trainer is deterministic: the same texts give the same merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + 1 merge), not {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def bpe_merges(tokenizer: Any) -> list[tuple[str, str]]:
    """The merge rules of a trained BPE tokenizer, in the order they were learned."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


# ---------------------------------------------------------------------------- real tokenizers
@dataclass(frozen=True)
class NamedTokenizer:
    """One interface over tiktoken and Hugging Face tokenizers: ids, pieces, decode."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    piece: Callable[[int], str]  # how one token id looks on its own

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (no special tokens added)."""
        return len(self.encode(text))

    def pieces(self, text: str) -> list[str]:
        """The tokens of ``text`` as readable strings."""
        return [self.piece(i) for i in self.encode(text)]


def tiktoken_tokenizer(encoding: str = "cl100k_base") -> NamedTokenizer:
    """OpenAI's tokenizer, offline (``shared.models.prepare_tiktoken`` seeds its cache)."""
    import tiktoken

    from shared.models import prepare_tiktoken

    prepare_tiktoken()
    enc = tiktoken.get_encoding(encoding)

    def piece(i: int) -> str:  # a token may hold part of a UTF-8 character: show its bytes then
        raw = enc.decode_single_token_bytes(i)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<{b:02X}>" for b in raw)

    return NamedTokenizer(f"tiktoken {encoding}", lambda t: enc.encode(t), enc.decode, piece)


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


def readable_piece(token: str) -> str:
    """Show a byte-level BPE token as text ("Ġworld" -> " world"); partial UTF-8 as <hex> bytes."""
    if not all(ch in _BYTES for ch in token):
        return token  # not a byte-level token (WordPiece, special tokens)
    raw = bytes(_BYTES[ch] for ch in token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02X}>" for b in raw)


def hf_tokenizer(name: str, tokenizer: Any) -> NamedTokenizer:
    """Wrap a Hugging Face tokenizer; special tokens ([CLS], <|im_start|>...) are not added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and "ByteLevel" in backend.to_str()

    def piece(i: int) -> str:
        token = tokenizer.convert_ids_to_tokens(i)
        return readable_piece(token) if byte_level else token

    return NamedTokenizer(
        name,
        lambda t: tokenizer.encode(t, add_special_tokens=False),
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        piece,
    )


def estimate_cost(n_tokens: int, usd_per_million: float) -> float:
    """Price of ``n_tokens`` at ``usd_per_million`` dollars per million tokens."""
    if n_tokens < 0 or usd_per_million < 0:
        raise ValueError("token count and price must not be negative")
    return n_tokens * usd_per_million / 1_000_000


# ---------------------------------------------------------------------------- embeddings
def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of two vectors (a float) or of every row of ``a`` with every row of ``b``.

    Shapes: (D,) and (D,) -> float; (N, D) and (M, D) -> (N, M). Zero vectors raise ValueError.
    """
    a2, b2 = (
        np.atleast_2d(np.asarray(a, dtype=np.float64)),
        np.atleast_2d(np.asarray(b, dtype=np.float64)),
    )
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


# ---------------------------------------------------------------------------- attention
def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """The Transformer's positional encoding, (n_positions, dim): sin even, cos odd columns."""
    if dim % 2:
        raise ValueError(f"dim must be even, not {dim}")
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n_positions, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d)) V.

    q, k, v: (..., T, d). Returns (output (..., T, d), weights (..., T, T)).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, T)
    if causal:
        t_q, t_k = scores.shape[-2:]
        mask = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention from scratch: project to Q, K, V, split heads, attend, merge."""

    def __init__(self, d_model: int, n_heads: int, seed: int = 0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        gen = torch.Generator().manual_seed(seed)
        scale = 1 / math.sqrt(d_model)
        self.w_qkv = nn.Parameter(torch.randn(3 * d_model, d_model, generator=gen) * scale)
        self.w_out = nn.Parameter(torch.randn(d_model, d_model, generator=gen) * scale)

    def forward(self, x: torch.Tensor, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) -> (output (B, T, C), weights (B, H, T, T))."""
        b, t, c = x.shape
        q, k, v = (x @ self.w_qkv.T).split(c, dim=-1)  # 3 x (B, T, C)
        q, k, v = (z.view(b, t, self.n_heads, self.d_head).transpose(1, 2) for z in (q, k, v))
        out, weights = scaled_dot_product_attention(q, k, v, causal=causal)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(b, t, c)  # heads side by side again
        return out @ self.w_out.T, weights


def load_attention_model(name: str | None = None) -> tuple[Any, Any]:
    """The chat model with the "eager" attention code path, so it can return attention weights."""
    from shared.models import load_chat_model

    tokenizer, model = load_chat_model(name, device="cpu")
    model.set_attn_implementation("eager")
    return tokenizer, model


def attention_maps(model: Any, tokenizer: Any, text: str) -> tuple[list[str], torch.Tensor]:
    """Tokens of ``text`` and the model's attention weights, (layers, heads, T, T), float32."""
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise ValueError(
            "the model returned no attention weights: load it with load_attention_model()"
        )
    maps = torch.stack([a[0] for a in out.attentions]).float()  # (L, H, T, T)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return [t.replace("Ġ", " ") for t in tokens], maps
