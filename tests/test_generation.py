"""Tests for shared.generation: the selection rules on hand-made distributions, then the loop on
the real local model (greedy output identical to ``model.generate``)."""

from __future__ import annotations

import math

import pytest
import torch

from shared import generation as g

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(logits)).flatten().tolist()


# ------------------------------------------------------------------------ distributions
def test_entropy_golden_values() -> None:
    assert g.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
    assert g.entropy(torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(0.0)
    assert g.entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(1.0)


def test_temperature_sharpens_and_flattens() -> None:
    low = g.selection_probs(LOGITS, temperature=0.1)
    one = g.selection_probs(LOGITS, temperature=1.0)
    high = g.selection_probs(LOGITS, temperature=100.0)
    assert torch.allclose(one, PROBS, atol=1e-6)  # T = 1 is the model's own distribution
    assert low[0] > 0.99  # nearly all mass on the most likely token
    assert torch.allclose(high, torch.full((4,), 0.25), atol=0.01)  # nearly uniform
    entropies = [g.entropy(g.selection_probs(LOGITS, temperature=t)).item() for t in (0.3, 1, 3)]
    assert entropies == sorted(entropies)


def test_temperature_zero_is_greedy_one_hot() -> None:
    assert g.selection_probs(LOGITS, temperature=0).tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="greedy"):
        g.apply_temperature(LOGITS, 0)


def test_top_k_keeps_exactly_k() -> None:
    assert kept(g.top_k_filter(LOGITS, 2)) == [0, 1]
    assert kept(g.top_k_filter(LOGITS, 1)) == [0]
    assert kept(g.top_k_filter(LOGITS, 10)) == [0, 1, 2, 3]  # k >= V keeps everything
    batch = torch.stack([LOGITS, LOGITS.flip(0)])  # (2, V): each row filtered on its own
    assert torch.isfinite(g.top_k_filter(batch, 1)).tolist() == [
        [True, False, False, False],
        [False, False, False, True],
    ]
    p = g.selection_probs(LOGITS, top_k=2)
    assert p.tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0, 0])  # renormalised


def test_top_p_keeps_the_smallest_nucleus() -> None:
    assert kept(g.top_p_filter(LOGITS, 0.75)) == [0, 1]  # 0.5 + 0.3 reaches 0.75
    assert kept(g.top_p_filter(LOGITS, 0.85)) == [0, 1, 2]
    assert kept(g.top_p_filter(LOGITS, 0.01)) == [0]  # the top token is always kept
    assert kept(g.top_p_filter(LOGITS, 1.0)) == [0, 1, 2, 3]
    shuffled = LOGITS[[2, 0, 3, 1]]  # order in the vocabulary does not matter
    assert kept(g.top_p_filter(shuffled, 0.75)) == [1, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=message):
        g.sample_next(LOGITS[None], generator=gen, **kwargs)


def test_sampling_needs_an_explicit_generator() -> None:
    with pytest.raises(ValueError, match="generator"):
        g.sample_next(LOGITS[None], temperature=1.0)
    assert g.sample_next(LOGITS[None], temperature=0).tolist() == [0]  # greedy needs none


def test_seeded_sampling_is_reproducible_and_follows_the_distribution() -> None:
    batch = LOGITS.repeat(20_000, 1)  # (20000, V)
    a = g.sample_next(batch, generator=torch.Generator().manual_seed(1))
    b = g.sample_next(batch, generator=torch.Generator().manual_seed(1))
    c = g.sample_next(batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    freq = torch.bincount(a, minlength=4) / len(a)
    assert torch.allclose(freq, PROBS, atol=0.015)
    topk = g.sample_next(batch, top_k=2, generator=torch.Generator().manual_seed(3))
    assert set(topk.tolist()) == {0, 1}


def test_fit_to_window_keeps_the_most_recent_tokens() -> None:
    ids = list(range(10))
    assert g.fit_to_window(ids, 6) == [4, 5, 6, 7, 8, 9]
    assert g.fit_to_window(ids, 6, reserve=2) == [6, 7, 8, 9]
    assert g.fit_to_window(ids, 50) == ids
    with pytest.raises(ValueError, match="no room"):
        g.fit_to_window(ids, 4, reserve=4)
    with pytest.raises(ValueError, match="window"):
        g.fit_to_window(ids, 0)


# ------------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_next_token_distribution_of_the_real_model(chat) -> None:
    tok, model = chat
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    probs = g.next_token_probs(model, ids)[0]  # (V,)
    assert probs.shape == (model.config.vocab_size,)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-4)
    top = g.top_tokens(probs, tok, k=3)
    assert top[0][0] == " Paris" and top[0][2] == pytest.approx(0.77, abs=0.03)
    assert g.context_window(model) == 8192
    with pytest.raises(ValueError, match="one distribution"):
        g.top_tokens(probs[None], tok)


@pytest.mark.slow
def test_hand_loop_matches_model_generate(chat) -> None:
    tok, model = chat
    ids = g.chat_input_ids(tok, "What is the capital of France?")
    mine = g.generate(model, tok, ids, max_new_tokens=8)
    ref = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()
    assert mine.new_ids == ref
    assert "Paris" in mine.text
    text = tok.decode(ids[0])
    assert "You are a helpful AI assistant named SmolLM" in text  # the default system prompt


@pytest.mark.slow
def test_sampled_continuations_are_seeded(chat) -> None:
    tok, model = chat

    def run(seed: int) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        return g.sample_continuations(model, tok, "Once upon a time", 4, 4, 1.0, gen)

    first = run(0)
    assert first == run(0)
    assert len(first) == 4 and len(set(first)) > 1  # same prompt, different samples
    greedy = g.generate(model, tok, "Once upon a time", max_new_tokens=4, stop_at_eos=False)
    assert len(greedy.new_ids) == 4


@pytest.mark.slow
def test_a_sentence_is_more_likely_than_its_shuffle(chat) -> None:
    tok, model = chat
    good = g.sequence_logprob(model, tok, "The cat sat on the mat.")
    bad = g.sequence_logprob(model, tok, "Mat the on sat cat the.")
    assert good < 0 and bad < good
    assert math.isfinite(good)
    with pytest.raises(ValueError, match="two tokens"):
        g.sequence_logprob(model, tok, "a")


# ------------------------------------------------------------------------ exercise checks
EXERCISE_LOGITS = torch.tensor([3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0])


def _good_top_k(logits, k, generator):
    best = torch.topk(logits, k)
    pick = torch.multinomial(torch.softmax(best.values, -1), 1, generator=generator)
    return int(best.indices[pick])


def test_top_k_sampler_check_accepts_a_right_answer() -> None:
    assert g.top_k_sampler_ok(_good_top_k, EXERCISE_LOGITS, k=3)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda logits, k, gen: int(logits.argmax()),  # greedy, not sampling
        lambda logits, k, gen: int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)),
        lambda logits, k, gen: int(
            torch.topk(logits, k).indices[  # uniform over the top k
                torch.randint(k, (1,), generator=gen)
            ]
        ),
        lambda logits, k, gen: _good_top_k(logits, k, torch.Generator()),  # ignores the seed
    ],
    ids=["greedy", "no-top-k", "uniform", "unseeded"],
)
def test_top_k_sampler_check_rejects_wrong_answers(wrong) -> None:
    assert not g.top_k_sampler_ok(wrong, EXERCISE_LOGITS, k=3)


def test_template_overhead_check(chat) -> None:
    tok, _ = chat
    message = "Tokens cost money."
    right = g.chat_input_ids(tok, message).shape[1] - len(tok(message).input_ids)
    assert right > 10  # the default system prompt alone is about 20 tokens
    assert g.template_overhead_ok(right, tok, message)
    assert not g.template_overhead_ok(g.chat_input_ids(tok, message).shape[1], tok, message)


def test_perplexity_check(chat) -> None:
    tok, model = chat
    text = "The cat sat on the mat."
    ids = tok(tok.eos_token + text, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    nll = -logp.gather(-1, ids[0, 1:, None]).mean().item()
    assert g.perplexity_ok(math.exp(nll), model, tok, text)
    assert not g.perplexity_ok(nll, model, tok, text)  # forgot the exp
    without_first = -logp.gather(-1, ids[0, 1:, None])[1:].mean().item()
    assert not g.perplexity_ok(math.exp(without_first), model, tok, text)  # first token unscored


def test_sequence_logprob_from_the_start_scores_the_first_token(chat) -> None:
    tok, model = chat
    text = "The cat sat on the mat."
    ids = tok(tok.eos_token + text, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    total = logp.gather(-1, ids[0, 1:, None]).sum().item()
    assert g.sequence_logprob(model, tok, text, from_start=True) == pytest.approx(total, abs=1e-3)
    assert g.sequence_logprob(model, tok, "a", from_start=True) < 0  # one token is enough now
