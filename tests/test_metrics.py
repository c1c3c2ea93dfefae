"""Tests for shared.metrics: every metric against a reference implementation or hand arithmetic."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from shared import metrics

# The source notes' ROUGE examples: (reference, model output).
NOTES_EXAMPLES = [
    ("The cat sat on the mat.", "The mouse watched the cat on the mat."),
    ("It is cold outside.", "cold,cold,cold,cold."),
    (
        "The sun sets in the west, and the moon rises in the east.",
        "The sun dips in the direction of the setting west, as the moon climbs in the opposite "
        "direction from the rising east.",
    ),
    ("It is cold outside.", "It is very cold outside."),
]
MORE_PAIRS = [
    ("Your refund was sent to your card.", "The refund was sent to your Visa card today."),
    ("Please share your order number.", "Could you share the order number, please?"),
    ("I will connect you with a colleague.", "totally unrelated words here"),
    ("a a a b", "a b a b a"),
    (
        "Order A1234 ships on 3.5 days, cost $12.50 - ok?",
        "Order A1234 ships in 3-5 days (cost: $12.50).",
    ),
]
ALL_PAIRS = NOTES_EXAMPLES + MORE_PAIRS


def test_accuracy_and_errors() -> None:
    assert metrics.accuracy(["a", "b", "c"], ["a", "b", "b"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])


PREDS = ["x", "y", "y", "z", "x", "bad", "z", "y"]
REFS = ["x", "y", "x", "z", "z", "y", "z", "x"]
LABELS = ["x", "y", "z"]


def test_per_class_scores_match_sklearn() -> None:
    ours = metrics.per_class_scores(PREDS, REFS, LABELS)
    p, r, f, s = precision_recall_fscore_support(REFS, PREDS, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        assert ours[label].precision == pytest.approx(p[i])
        assert ours[label].recall == pytest.approx(r[i])
        assert ours[label].f1 == pytest.approx(f[i])
        assert ours[label].support == s[i]
    assert metrics.macro_f1(PREDS, REFS, LABELS) == pytest.approx(
        f1_score(REFS, PREDS, labels=LABELS, average="macro", zero_division=0)
    )
    with pytest.raises(ValueError, match="unique"):
        metrics.per_class_scores(PREDS, REFS, ["x", "x"])


def test_confusion_matrix_matches_sklearn() -> None:
    ours = metrics.confusion_matrix(PREDS, REFS, LABELS)
    assert ours == sk_confusion(REFS, PREDS, labels=LABELS).tolist()
    assert ours == [[1, 2, 0], [0, 1, 0], [1, 0, 2]]  # golden; "bad" is in no column
    with pytest.raises(ValueError, match="not in labels"):
        metrics.confusion_matrix(["x"], ["w"], LABELS)


@pytest.mark.parametrize(("reference", "prediction"), ALL_PAIRS)
def test_rouge_matches_rouge_score(reference: str, prediction: str) -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    ref = scorer.score(reference, prediction)
    for ours, key in (
        (metrics.rouge_n(prediction, reference, 1), "rouge1"),
        (metrics.rouge_n(prediction, reference, 2), "rouge2"),
        (metrics.rouge_l(prediction, reference), "rougeL"),
    ):
        assert ours.precision == pytest.approx(ref[key].precision)
        assert ours.recall == pytest.approx(ref[key].recall)
        assert ours.f1 == pytest.approx(ref[key].fmeasure)


def test_notes_rouge_examples_with_correct_arithmetic() -> None:
    # Example 1: 5 of the 6 reference words are matched ("the" twice), the output has 8 words.
    r1 = metrics.rouge_n(NOTES_EXAMPLES[0][1], NOTES_EXAMPLES[0][0], 1)
    assert (r1.recall, r1.precision) == (5 / 6, 5 / 8)
    assert r1.f1 == pytest.approx(0.7143, abs=1e-4)
    # Examples 2/3: clipping counts "cold" once, so recall AND precision are 1/4.
    r1 = metrics.rouge_n(NOTES_EXAMPLES[1][1], NOTES_EXAMPLES[1][0], 1)
    assert r1 == (0.25, 0.25, 0.25)
    # Example 4: 4 shared bigrams (the sun, in the x2, the moon) of 12 reference / 21 output.
    r2 = metrics.rouge_n(NOTES_EXAMPLES[2][1], NOTES_EXAMPLES[2][0], 2)
    assert (r2.recall, r2.precision) == (4 / 12, 4 / 21)
    assert r2.f1 == pytest.approx(0.2424, abs=1e-4)
    # Example 5: ROUGE-L counts words, not characters: LCS 4, reference 4, output 5.
    rl = metrics.rouge_l(NOTES_EXAMPLES[3][1], NOTES_EXAMPLES[3][0])
    assert (rl.recall, rl.precision) == (1.0, 0.8)
    assert rl.f1 == pytest.approx(8 / 9)


def test_rouge_corpus_mean_and_errors() -> None:
    preds, refs = [p for _, p in ALL_PAIRS], [r for r, _ in ALL_PAIRS]
    scores = metrics.rouge(preds, refs)
    mean_l = sum(metrics.rouge_l(p, r).f1 for p, r in zip(preds, refs, strict=True)) / len(refs)
    assert scores["rougeL"] == pytest.approx(mean_l)
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    with pytest.raises(ValueError, match="n must be"):
        metrics.rouge_n("a", "a", 0)
    with pytest.raises(ValueError, match="empty"):
        metrics.rouge([], [])
    assert metrics.rouge_n("", "something", 1) == (0.0, 0.0, 0.0)
    assert metrics.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4


def test_bleu_tokenizer_matches_13a() -> None:
    tok = sacrebleu.BLEU().tokenizer
    for reference, prediction in ALL_PAIRS:
        for text in (reference, prediction):
            assert metrics.bleu_tokenize(text) == tok(text.rstrip()).split()


@pytest.mark.parametrize(("reference", "prediction"), ALL_PAIRS)
def test_sentence_level_bleu_matches_sacrebleu(reference: str, prediction: str) -> None:
    expected = sacrebleu.corpus_bleu([prediction], [[reference]]).score
    assert metrics.bleu([prediction], [reference]) == pytest.approx(expected, abs=1e-9)


def test_corpus_bleu_matches_sacrebleu() -> None:
    preds, refs = [p for _, p in ALL_PAIRS], [r for r, _ in ALL_PAIRS]
    assert metrics.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert metrics.bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.bleu(["nothing shared"], ["completely different"]) == 0.0
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        metrics.bleu(["a"], ["a", "b"])


def test_perplexity_is_exp_of_mean_nll() -> None:
    import torch

    class Uniform(torch.nn.Module):  # a "model" that gives every token of a 10-word vocab p=1/10
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, labels):  # noqa: ANN001 - mimics the HF signature
            logits = torch.zeros(*input_ids.shape, 10)
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
            return type("Out", (), {"loss": loss})()

    def tok(text, **_):  # noqa: ANN001, ANN202
        return {"input_ids": torch.tensor([[int(c) for c in text]])}

    assert metrics.perplexity(Uniform(), tok, ["1234", "56"]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="too short"):
        metrics.perplexity(Uniform(), tok, ["1"])
    assert math.isfinite(metrics.perplexity(Uniform(), tok, ["12"]))
