"""Lesson 01 (LLM basics): how a causal language model writes text, one token at a time.

The pieces the lesson builds by hand and later lessons reuse:

* :func:`next_token_logits` / :func:`next_token_probs`: text so far -> a score (logit) and a
  probability for every token of the vocabulary;
* the selection rules: :func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter`,
  combined by :func:`sample_next` (``temperature=0`` means greedy);
* the loop: :func:`generate_ids` (batched, with the key/value cache) and :func:`generate`;
* small tools for the lesson: :func:`entropy`, :func:`top_tokens`, :func:`chat_input_ids`,
  :func:`fit_to_window`, :func:`sequence_logprob` and two plots.

Randomness is always explicit: every sampling function takes a ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "GenerationResult",
    "apply_temperature",
    "chat_input_ids",
    "context_window",
    "entropy",
    "fit_to_window",
    "generate",
    "generate_ids",
    "next_token_logits",
    "next_token_probs",
    "perplexity_ok",
    "plot_temperature_sweep",
    "plot_top_tokens",
    "sample_continuations",
    "sample_next",
    "selection_probs",
    "sequence_logprob",
    "template_overhead_ok",
    "top_k_sampler_ok",
    "top_k_filter",
    "top_p_filter",
    "top_tokens",
]


# ------------------------------------------------------------------------ model -> distribution
@torch.no_grad()
def next_token_logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The model's scores for the token that comes next: ``(B, T)`` ids -> ``(B, V)`` logits."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)  # (T,) -> (1, T)
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device))
    return out.logits[:, -1, :].float().cpu()  # (B, V): only the last position predicts the next


def next_token_probs(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Softmax of :func:`next_token_logits`: ``(B, V)`` probabilities that sum to 1 per row."""
    return torch.softmax(next_token_logits(model, input_ids), dim=-1)


def top_tokens(probs: torch.Tensor, tokenizer: Any, k: int = 10) -> list[tuple[str, int, float]]:
    """The ``k`` most likely tokens of a ``(V,)`` distribution as ``(text, id, probability)``."""
    if probs.dim() != 1:
        raise ValueError(
            f"top_tokens expects one distribution of shape (V,), got {tuple(probs.shape)}"
        )
    values, ids = torch.topk(probs, k)
    return [
        (tokenizer.decode([int(i)]), int(i), float(v)) for v, i in zip(values, ids, strict=True)
    ]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits over the last dimension (0 = certain; log2(V) = uniform)."""
    p = probs.clamp_min(0)
    logs = torch.where(p > 0, torch.log2(p.clamp_min(1e-45)), torch.zeros_like(p))
    return -(p * logs).sum(dim=-1) + 0.0  # + 0.0 turns -0.0 into 0.0


# ------------------------------------------------------------------------ selection rules
def _check_params(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(temperature, int | float) or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1 or None, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature``: < 1 sharpens the distribution, > 1 flattens it."""
    _check_params(temperature, None, None)
    if temperature == 0:
        raise ValueError("temperature 0 has no distribution: it means greedy (take the argmax)")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest logits of each row, set the rest to ``-inf`` (k >= V keeps all)."""
    _check_params(1.0, k, None)
    if k >= logits.shape[-1]:
        return logits.clone()
    keep = torch.topk(logits, k, dim=-1).indices
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, keep, logits.gather(-1, keep))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    The most likely token is always kept, so a tiny ``p`` behaves like greedy; ``p = 1`` keeps all.
    """
    _check_params(1.0, None, p)
    if p >= 1:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of the tokens ranked above
    drop_sorted = before >= p  # the set already reached p without this token
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def selection_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution actually sampled from: temperature, then top-k, then top-p, then softmax.

    ``temperature=0`` gives a one-hot distribution on the argmax (greedy).
    """
    _check_params(temperature, top_k, top_p)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    scores = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    return torch.softmax(scores, dim=-1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token id for each row of ``(B, V)`` logits -> ``(B,)`` ids.

    ``temperature=0`` is greedy (no randomness, no generator needed); otherwise a seeded
    ``torch.Generator`` is required, so the same seed always gives the same tokens.
    """
    _check_params(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    if generator is None:
        raise ValueError(
            "sampling needs an explicit generator: "
            "pass generator=torch.Generator().manual_seed(SEED)"
        )
    probs = selection_probs(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ------------------------------------------------------------------------ the loop
@dataclass(frozen=True)
class GenerationResult:
    """A prompt's token ids, the new ids the loop appended, and the new text."""

    prompt_ids: list[int]
    new_ids: list[int]
    text: str


@torch.no_grad()
def generate_ids(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """The generation loop: predict, select, append, repeat. ``(B, T)`` -> ``(B, T + n)`` ids.

    Uses the key/value cache, so each step feeds only the newest token. A row that produced
    ``eos_token_id`` keeps emitting it; the loop ends when every row has, or after
    ``max_new_tokens`` steps.
    """
    _check_params(temperature, top_k, top_p)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature > 0 and generator is None:
        raise ValueError("sampling needs generator=torch.Generator().manual_seed(SEED)")
    device = next(model.parameters()).device
    ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids  # (B, T)
    ids = ids.to(device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    out = model(input_ids=ids, use_cache=True)  # the whole prompt once
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float().cpu()  # (B, V)
        nxt = sample_next(logits, temperature, top_k, top_p, generator).to(device)  # (B,)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
            done |= nxt == eos_token_id
        ids = torch.cat([ids, nxt[:, None]], dim=1)  # append: (B, T + 1)
        if eos_token_id is not None and bool(done.all()):
            break
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
    return ids.cpu()


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str | torch.Tensor,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
) -> GenerationResult:
    """Continue ``prompt`` (raw text, or ids e.g. from :func:`chat_input_ids`) with the loop."""
    if isinstance(prompt, str):
        prompt = tokenizer(prompt, return_tensors="pt").input_ids
    prompt = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
    if prompt.shape[0] != 1:
        raise ValueError("generate() continues one prompt; use generate_ids for a batch")
    eos = tokenizer.eos_token_id if stop_at_eos else None
    ids = generate_ids(model, prompt, max_new_tokens, temperature, top_k, top_p, generator, eos)
    new = ids[0, prompt.shape[1] :].tolist()
    if eos is not None and eos in new:
        new = new[: new.index(eos) + 1]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return GenerationResult(prompt[0].tolist(), new, text)


def sample_continuations(
    model: Any,
    tokenizer: Any,
    prompt: str | torch.Tensor,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[str]:
    """``n`` continuations of one prompt, sampled in one batch (the prompt repeated n times)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if isinstance(prompt, str):
        prompt = tokenizer(prompt, return_tensors="pt").input_ids
    prompt = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
    batch = prompt.repeat(n, 1)  # (n, T): no padding needed, every row is the same prompt
    ids = generate_ids(model, batch, max_new_tokens, temperature, top_k, top_p, generator)
    return [tokenizer.decode(row[prompt.shape[1] :], skip_special_tokens=True) for row in ids]


# ------------------------------------------------------------------------ prompts and windows
def chat_input_ids(tokenizer: Any, user: str, system: str | None = None) -> torch.Tensor:
    """The ``(1, T)`` ids an instruct model really sees for one user turn (its chat template).

    With ``system=None`` SmolLM2's template inserts its own default system message.
    """
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = enc if isinstance(enc, torch.Tensor) else enc["input_ids"]
    return ids


def context_window(model: Any) -> int:
    """The longest input, in tokens, the model was built for (``max_position_embeddings``)."""
    size = getattr(model.config, "max_position_embeddings", None)
    if not size:
        raise ValueError(f"{type(model).__name__} does not declare a context window")
    return int(size)


def fit_to_window(ids: Sequence[int], window: int, reserve: int = 0) -> list[int]:
    """Keep the most recent tokens so ``len(prompt) + reserve <= window`` (the oldest are cut).

    This is what chat applications do when a conversation outgrows the context window: the
    model never sees what was dropped.
    """
    if window < 1 or reserve < 0:
        raise ValueError(f"window must be >= 1 and reserve >= 0, got {window} and {reserve}")
    if reserve >= window:
        raise ValueError(
            f"reserve ({reserve}) leaves no room for the prompt in a {window}-token window"
        )
    room = window - reserve
    return list(ids)[-room:] if len(ids) > room else list(ids)


@torch.no_grad()
def sequence_logprob(model: Any, tokenizer: Any, text: str, from_start: bool = False) -> float:
    """Total log-probability (natural log) of ``text``, token by token after the first.

    ``from_start=True`` puts the end-of-text separator in front so the first token is scored too:
    then the result is log p(text) itself, not log p(rest | first token).
    """
    ids = tokenizer((tokenizer.eos_token if from_start else "") + text, return_tensors="pt")
    ids = ids.input_ids  # (1, T)
    if ids.shape[1] < 2:
        raise ValueError("the text needs at least two tokens")
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device)).logits.float().cpu()  # (1, T, V)
    logp = torch.log_softmax(logits[0, :-1], dim=-1)  # position t predicts token t + 1
    return float(logp.gather(-1, ids[0, 1:, None]).sum())


# ------------------------------------------------------------------------ exercise checks
def template_overhead_ok(answer: Any, tokenizer: Any, message: str) -> bool:
    """Exercise 1: the tokens the chat template adds around ``message`` (not printed)."""
    rendered = chat_input_ids(tokenizer, message).shape[1]
    return answer == rendered - len(tokenizer(message).input_ids)


def top_k_sampler_ok(
    sampler: Any, logits: torch.Tensor, k: int = 5, draws: int = 4000, seed: int = 0
) -> bool:
    """Exercise 2: ``sampler(logits, k, generator)`` draws only from the k best tokens, with their
    renormalised probabilities (each frequency within 5 standard errors), and a seed repeats it."""
    best = torch.topk(logits, k)
    expected = torch.softmax(best.values, dim=-1)  # (k,)
    gen = torch.Generator().manual_seed(seed)
    ids = [int(sampler(logits, k, gen)) for _ in range(draws)]
    allowed = best.indices.tolist()
    if not set(ids) <= set(allowed):
        return False
    freq = torch.tensor([ids.count(i) / draws for i in allowed])
    stderr = (expected * (1 - expected) / draws).sqrt()
    if ((freq - expected).abs() > 5 * stderr + 1e-3).any():
        return False
    again = torch.Generator().manual_seed(seed)
    return [int(sampler(logits, k, again)) for _ in range(50)] == ids[:50]


@torch.no_grad()
def perplexity_ok(answer: Any, model: Any, tokenizer: Any, text: str) -> bool:
    """Exercise 3: perplexity of ``text`` with every token scored after ``eos`` (not printed)."""
    ids = tokenizer(tokenizer.eos_token + text, return_tensors="pt").input_ids
    device = next(model.parameters()).device
    loss = model(input_ids=ids.to(device), labels=ids.to(device)).loss  # mean NLL, shifted
    return math.isclose(float(answer), math.exp(float(loss)), rel_tol=1e-3)


# ------------------------------------------------------------------------ plots
def plot_top_tokens(
    tokens: Sequence[tuple[str, int, float]], title: str = "", ax: Any = None
) -> Any:
    """A bar chart of ``(text, id, probability)`` rows from :func:`top_tokens`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    labels = [repr(t)[1:-1] or "''" for t, _, _ in tokens]
    ax.bar(range(len(tokens)), [p for _, _, p in tokens], color="tab:blue")
    ax.set_xticks(range(len(tokens)), labels, rotation=45, ha="right")
    ax.set_ylabel("probability")
    ax.set_title(title)
    return ax


def plot_temperature_sweep(
    temperatures: Sequence[float],
    entropies: Sequence[float],
    distinct: Sequence[int] | None = None,
    samples: int | None = None,
    ax: Any = None,
) -> Any:
    """Entropy of the next-token distribution vs temperature, with distinct continuations."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    ax.plot(temperatures, entropies, "o-", color="tab:blue", label="entropy of next token (bits)")
    ax.set_xlabel("temperature")
    ax.set_ylabel("entropy (bits)", color="tab:blue")
    if distinct is not None:
        twin = ax.twinx()
        twin.plot(temperatures, distinct, "s--", color="tab:orange")
        twin.set_ylabel(
            f"distinct continuations (of {samples or max(distinct)})", color="tab:orange"
        )
        twin.set_ylim(0, (samples or max(distinct)) + 0.5)
    return ax
