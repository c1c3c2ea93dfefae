"""Evaluation metrics shared by the lessons: accuracy and perplexity first (lesson 02), then
classification and text-overlap metrics (lesson 07), used again by the capstone (lesson 08).

Each metric is written out so a learner can read it; tests check them against reference
implementations (scikit-learn, and for text metrics ``rouge-score`` / ``sacrebleu``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = [
    "mcnemar_exact",
    "wilson",
    "ClassScores",
    "Overlap",
    "accuracy",
    "bleu",
    "bleu_tokenize",
    "chinese_tokenize",
    "confusion_matrix",
    "lcs_length",
    "macro_f1",
    "per_class_scores",
    "perplexity",
    "precision_recall_f1",
    "rouge",
    "rouge_l",
    "rouge_n",
    "rouge_tokenize",
]


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


# ---------------------------------------------------------------- classification (lesson 07)
class ClassScores(NamedTuple):
    """Precision, recall, F1 and support (number of references) of one class."""

    precision: float
    recall: float
    f1: float
    support: int


def per_class_scores(
    predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[Any]
) -> dict[Any, ClassScores]:
    """Precision, recall, F1 and support for every label in ``labels`` (one-vs-rest).

    A prediction that is not in ``labels`` (e.g. unparseable model output) counts as wrong for
    its reference class and as a false positive for no class.
    """
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    out = {}
    for label in labels:
        p, r, f = precision_recall_f1(predictions, references, label)
        out[label] = ClassScores(p, r, f, sum(ref == label for ref in references))
    return out


def macro_f1(predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[Any]) -> float:
    """The unweighted mean of the per-class F1 scores over ``labels``."""
    scores = per_class_scores(predictions, references, labels)
    return sum(s.f1 for s in scores.values()) / len(scores)


def confusion_matrix(
    predictions: Sequence[Any], references: Sequence[Any], labels: Sequence[Any]
) -> list[list[int]]:
    """``m[i][j]`` = how many items of true class ``labels[i]`` were predicted as ``labels[j]``.

    Predictions outside ``labels`` are not counted in any column (so a row can sum to less
    than the class's support); add an ``"invalid"`` label to see them.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p, r in zip(predictions, references, strict=True):
        if r not in index:
            raise ValueError(f"reference label {r!r} is not in labels")
        if p in index:
            matrix[index[r]][index[p]] += 1
    return matrix


# ---------------------------------------------------------------- text overlap (lesson 07)
class Overlap(NamedTuple):
    """Precision, recall and F1 of an overlap metric such as ROUGE."""

    precision: float
    recall: float
    f1: float


def rouge_tokenize(text: str) -> list[str]:
    """ROUGE's tokenizer (as in ``rouge-score``): lowercase, non-alphanumerics become spaces.

    It drops every Chinese character: use :func:`chinese_tokenize` for Chinese text.
    """
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs (and extension A)


def chinese_tokenize(text: str, mode: str = "char") -> list[str]:
    """Tokens for ROUGE on Chinese: each Han character (``mode="char"``) or jieba's words
    (``mode="jieba"``); runs of Latin letters or digits are lowercased words; punctuation is
    dropped. ``chinese_tokenize("退货30天!")`` is ``["退", "货", "30", "天"]``.
    """
    text = text.lower()
    if mode == "char":
        return re.findall(f"[{_HAN}]|[a-z0-9]+", text)
    if mode == "jieba":
        import logging

        import jieba

        from shared.paths import cache_dir

        jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" lines on stderr
        jieba.dt.tmp_dir = str(cache_dir("jieba"))  # its dictionary cache, not in /tmp
        return [w for w in jieba.lcut(text) if re.fullmatch(f"[{_HAN}a-z0-9]+", w)]
    raise ValueError(f"mode must be 'char' or 'jieba', not {mode!r}")


def _overlap(matches: int, n_pred: int, n_ref: int) -> Overlap:
    precision = matches / n_pred if n_pred else 0.0
    recall = matches / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Overlap(precision, recall, f1)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


Tokenizer = Callable[[str], list[str]]


def rouge_n(
    prediction: str, reference: str, n: int = 1, tokenize: Tokenizer | None = None
) -> Overlap:
    """ROUGE-N: overlap of n-grams, each counted at most as often as it occurs in the other text.

    The clipping (``min`` of the two counts) is what stops "cold cold cold cold" from scoring
    a perfect precision against "It is cold outside". ``tokenize`` defaults to
    :func:`rouge_tokenize`; pass :func:`chinese_tokenize` for Chinese.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    tokenize = tokenize or rouge_tokenize
    pred, ref = _ngrams(tokenize(prediction), n), _ngrams(tokenize(reference), n)
    matches = sum((pred & ref).values())  # Counter & Counter keeps the minimum count
    return _overlap(matches, sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, tokenize: Tokenizer | None = None) -> Overlap:
    """ROUGE-L: the longest common subsequence of tokens, over prediction / reference length."""
    tokenize = tokenize or rouge_tokenize
    pred, ref = tokenize(prediction), tokenize(reference)
    return _overlap(lcs_length(pred, ref), len(pred), len(ref))


def rouge(
    predictions: Sequence[str], references: Sequence[str], tokenize: Tokenizer | None = None
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over pairs: ``{"rouge1": .., "rouge2": .., "rougeL": ..}``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("ROUGE of an empty set is undefined")
    pairs = list(zip(predictions, references, strict=True))
    return {
        "rouge1": sum(rouge_n(p, r, 1, tokenize).f1 for p, r in pairs) / len(pairs),
        "rouge2": sum(rouge_n(p, r, 2, tokenize).f1 for p, r in pairs) / len(pairs),
        "rougeL": sum(rouge_l(p, r, tokenize).f1 for p, r in pairs) / len(pairs),
    }


_BLEU_SPLITS = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # a period/comma not after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # a period/comma not before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
)


def bleu_tokenize(text: str) -> list[str]:
    """The ``13a`` tokenizer of WMT / ``sacrebleu``: split off punctuation, keep case."""
    text = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for old, new in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        text = text.replace(old, new)
    text = f" {text} "
    for pattern, repl in _BLEU_SPLITS:
        text = pattern.sub(repl, text)
    return text.split()


def bleu(
    predictions: Sequence[str], references: Sequence[str], max_n: int = 4, tokenize: str = "13a"
) -> float:
    """Corpus BLEU (0-100) with one reference per prediction, as ``sacrebleu.corpus_bleu``.

    ``tokenize="13a"`` (the default, :func:`bleu_tokenize`) suits English; for Chinese use
    ``"zh"``, sacrebleu's Chinese tokenizer (every Han character is a token), as
    ``sacrebleu.corpus_bleu(..., tokenize="zh")``.

    Clipped n-gram precisions for n = 1..4 are pooled over the corpus, combined by a geometric
    mean and multiplied by the brevity penalty exp(1 - ref_len / pred_len) when the predictions
    are shorter. An n-gram order with no match is smoothed as in mteval-v13a ("exp").
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("BLEU of an empty set is undefined")
    if tokenize == "13a":
        split: Tokenizer = bleu_tokenize
    elif tokenize == "zh":
        from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

        zh = TokenizerZh()
        split = lambda text: zh(text.rstrip()).split()  # noqa: E731
    else:
        raise ValueError(f"tokenize must be '13a' or 'zh', not {tokenize!r}")
    correct, total = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for prediction, reference in zip(predictions, references, strict=True):
        pred, ref = split(prediction), split(reference)
        pred_len, ref_len = pred_len + len(pred), ref_len + len(ref)
        for n in range(1, max_n + 1):
            p_grams, r_grams = _ngrams(pred, n), _ngrams(ref, n)
            correct[n - 1] += sum((p_grams & r_grams).values())
            total[n - 1] += sum(p_grams.values())
    if not any(correct):
        return 0.0
    log_precisions, smooth = [], 1.0
    for c, t in zip(correct, total, strict=True):
        if t == 0:
            break  # as sacrebleu: orders the predictions are too short for are left out
        if c == 0:
            smooth *= 2
            log_precisions.append(math.log(1 / (smooth * t)))
        else:
            log_precisions.append(math.log(c / t))
    log_precisions += [-9999999999.0] * (max_n - len(log_precisions))  # sacrebleu's log(0)
    brevity = 1.0 if pred_len >= ref_len else math.exp(1 - ref_len / pred_len) if pred_len else 0.0
    return 100 * brevity * math.exp(sum(log_precisions) / max_n)


# ---------------------------------------------------------------------------- rates and pairs
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n`` (95 % with the default ``z``).

    The one definition the lessons' helpers use (EVALUATION.md: every rate with its interval).
    """
    if n <= 0:
        raise ValueError("the interval of an empty sample is undefined (n must be > 0)")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n (k successes out of n), got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on paired outcomes: ``(only a right, only b right, two-sided p)``.

    Only discordant items count; under "no difference" each is a fair coin, so the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``.
    """
    if len(a_right) != len(b_right):
        raise ValueError(
            f"{len(a_right)} outcomes paired with {len(b_right)}: score the same items"
        )
    only_a = sum(bool(a) and not bool(b) for a, b in zip(a_right, b_right, strict=True))
    only_b = sum(bool(b) and not bool(a) for a, b in zip(a_right, b_right, strict=True))
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    return only_a, only_b, min(1.0, 2 * tail)
