"""Evaluation metrics shared by the lessons: accuracy and perplexity first (lesson 02), then
classification and text-overlap metrics (lesson 07), used again by the capstone (lesson 08).

Each metric is written out so a learner can read it; tests check them against reference
implementations (scikit-learn, and for text metrics ``rouge-score`` / ``sacrebleu``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["accuracy", "perplexity", "precision_recall_f1"]


def accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Fraction of positions where prediction equals reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def precision_recall_f1(
    predictions: Sequence[Any], references: Sequence[Any], positive: Any
) -> tuple[float, float, float]:
    """Precision, recall and F1 for one class (``positive``); 0.0 where a ratio is undefined."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pairs = list(zip(predictions, references, strict=True))
    tp = sum(p == positive and r == positive for p, r in pairs)
    fp = sum(p == positive and r != positive for p, r in pairs)
    fn = sum(p != positive and r == positive for p, r in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512) -> float:
    """Perplexity of a causal LM on ``texts``: exp(mean negative log-likelihood per token).

    Every token after the first of each text is predicted from the ones before it; the mean is
    over all predicted tokens of all texts (not a mean of per-text perplexities).
    """
    import torch

    if not texts:
        raise ValueError("perplexity needs at least one text")
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
        input_ids = ids["input_ids"].to(device)  # (1, T)
        if input_ids.shape[1] < 2:
            continue
        with torch.no_grad():
            out = model(input_ids=input_ids, labels=input_ids)
        n = input_ids.shape[1] - 1  # the loss is the mean over the T-1 predicted tokens
        total_nll += out.loss.item() * n
        total_tokens += n
    if total_tokens == 0:
        raise ValueError("texts are too short: each needs at least two tokens")
    return math.exp(total_nll / total_tokens)
