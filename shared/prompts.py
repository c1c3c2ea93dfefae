"""Lesson 03: prompt engineering, measured instead of judged by eye.

The notebook writes the API calls (``client.chat.completions.create`` with ``logprobs``,
``top_logprobs``, ``logit_bias``, ``response_format``) and the statistics once; this module keeps
what the lesson, its exercises and its tests reuse:

* prompt parts: :func:`build_messages`, :func:`delimit`, :func:`render`;
* reading a reply: :func:`extract_json` (JSON in a chatty or slightly broken reply),
  :func:`parse_list` (skeleton-of-thought outlines), :func:`keyword_density` (chain-of-density);
* label scoring: :func:`label_probs` (label probabilities from ``top_logprobs``),
  :func:`calibrate` (contextual calibration, Zhao et al. 2021);
* honest numbers: :func:`wilson` (95 % interval of a rate), :func:`mcnemar` (exact paired test),
  :func:`paired_bootstrap` (interval of a paired difference);
* the lesson's data (:func:`load_jsonl`, :func:`load_eval_set`) and the exercise checks.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from shared import metrics
from shared.config import FriendlyError

__all__ = [
    "EvalItem",
    "JSONExtractionError",
    "Message",
    "build_messages",
    "calibrate",
    "check_paired_bootstrap",
    "check_prior_calibration",
    "check_yes_probability",
    "delimit",
    "extract_json",
    "keyword_density",
    "label_probs",
    "load_eval_set",
    "load_jsonl",
    "mcnemar",
    "paired_bootstrap",
    "parse_list",
    "render",
    "wilson",
]

Message = dict[str, str]


# ---------------------------------------------------------------------------- building prompts
def render(template: str, **values: Any) -> str:
    """Fill ``{name}`` fields of ``template``; a missing or unused value raises ``ValueError``."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing, unused = sorted(fields - values.keys()), sorted(values.keys() - fields)
    if missing:
        raise ValueError(f"template needs a value for {', '.join(missing)}")
    if unused:
        raise ValueError(f"template has no field for {', '.join(unused)} (typo?)")
    return template.format(**values)


def delimit(text: str, tag: str = "document") -> str:
    """Wrap ``text`` in ``<tag>...</tag>`` so the model can tell content from instructions.

    A closing tag inside the text is neutralised, so a document cannot "end itself" early and
    smuggle instructions after it (a simple prompt-injection trick).
    """
    if not re.fullmatch(r"[A-Za-z_][\w-]*", tag):
        raise ValueError(f"tag must be a simple name like 'document', not {tag!r}")
    safe = re.sub(rf"</?\s*{tag}\s*>", "[tag removed]", text, flags=re.I)
    return f"<{tag}>\n{safe}\n</{tag}>"


def build_messages(
    instruction: str | None = None,
    content: str | None = None,
    *,
    system: str | None = None,
    examples: Iterable[tuple[str, str]] = (),
    cue: str | None = None,
    tag: str = "document",
) -> list[Message]:
    """Chat messages from the parts of a prompt.

    ``system`` -> a system message; each ``(input, output)`` example -> a user/assistant pair
    (few-shot as conversation turns); the last user message is ``instruction``, then ``content``
    delimited with :func:`delimit`, then ``cue`` (the words the answer should start from).
    """
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for question, answer in examples:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    parts = [p for p in (instruction, delimit(content, tag) if content else None, cue) if p]
    if not parts:
        raise ValueError("a prompt needs at least an instruction, content or cue")
    messages.append({"role": "user", "content": "\n\n".join(parts)})
    return messages


# ---------------------------------------------------------------------------- JSON output
class JSONExtractionError(FriendlyError, ValueError):
    """No valid JSON could be read from a model reply."""


def _balanced(text: str, start: int) -> str | None:
    """The bracketed span starting at ``text[start]`` (``{`` or ``[``), strings respected."""
    closing, depth, in_str, escape = {"{": "}", "[": "]"}, 0, None, False
    stack: list[str] = []
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            escape = not escape and ch == "\\"
            if ch == in_str and not escape:
                in_str = None
            continue
        if ch in "\"'":
            in_str = ch
        elif ch in closing:
            stack.append(closing[ch])
            depth += 1
        elif stack and ch == stack[-1]:
            stack.pop()
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _repair(candidate: str) -> str:
    """Fix the usual small-model slips: smart quotes, single quotes, Python literals, commas."""
    s = candidate.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"}))
    if '"' not in s:
        s = s.replace("'", '"')
    s = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", s)))
    s = re.sub(r"([{,]\s*)([A-Za-z_]\w*)(\s*:)", r'\1"\2"\3', s)  # unquoted keys
    return re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas


def extract_json(text: str) -> Any:
    """The first JSON object (or array) in ``text``: code fences, chatter and small slips allowed.

    Raises :class:`JSONExtractionError` saying what was wrong when nothing parses.
    """
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    body = fenced.group(1) if fenced else text
    starts = [m.start() for m in re.finditer(r"[{\[]", body)]
    if not starts:
        raise JSONExtractionError(f"the reply contains no JSON object: {text[:80]!r}")
    last_error = ""
    for start in starts:
        span = _balanced(body, start)
        if span is None:
            last_error = "a bracket is never closed (the reply was probably cut off by max_tokens)"
            continue
        for candidate in (span, _repair(span)):
            try:
                return json.loads(candidate)
            except json.JSONDecodeError as exc:
                last_error = f"{exc.msg} at character {exc.pos}"
    raise JSONExtractionError(f"the reply is not valid JSON ({last_error}): {text[:80]!r}")


# ---------------------------------------------------------------------------- SoT and CoD
def parse_list(text: str, limit: int | None = None) -> list[str]:
    """Items of a numbered or bulleted list in ``text`` ("1. a", "2) b", "- c", "* d")."""
    items = [
        m.group(1).strip()
        for m in re.finditer(r"^\s*(?:\d+[.)]|[-*•])\s+(.+?)\s*$", text, flags=re.M)
    ]
    return items[:limit] if limit else items


def keyword_density(summary: str, keywords: Iterable[str]) -> tuple[int, float]:
    """(keywords found in ``summary``, found per 100 words): the "density" of a summary."""
    low, words = summary.lower(), len(summary.split())
    found = sum(1 for k in set(keywords) if k.lower() in low)
    return found, (100.0 * found / words if words else 0.0)


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class EvalItem:
    """One labelled example of an evaluation set."""

    text: str
    label: str


def _data_file(name: str | Path) -> Path:
    from shared.paths import data_path

    path = Path(name)
    return path if path.is_absolute() or path.exists() else data_path("prompts", str(name))


def load_jsonl(name: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file: a name in ``data/prompts/`` or a path; errors name the line."""
    file = _data_file(name)
    rows = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{file.name}, line {n}: not JSON ({exc.msg})") from None
    return rows


def load_eval_set(name: str | Path = "reviews_test.jsonl") -> list[EvalItem]:
    """A labelled set (JSON lines with ``text`` and ``label``); default: the frozen test set."""
    items = []
    for n, row in enumerate(load_jsonl(name), 1):
        if "text" not in row or "label" not in row:
            raise ValueError(f"{Path(name).name}, line {n}: expected {{'text': ..., 'label': ...}}")
        items.append(EvalItem(str(row["text"]), str(row["label"])))
    return items


# ---------------------------------------------------------------------------- label scoring
def label_probs(
    top_logprobs: Mapping[str, float], labels: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Probability of each label among the labels, from one position's ``top_logprobs``.

    ``labels`` maps a label to the tokens that spell its start (``{"positive": ["Positive",
    "positive"], ...}``); a label's mass is the sum over its tokens. A token missing from the
    list gets the smallest listed log-probability (an upper bound: it ranked below all of them).
    """
    if not top_logprobs:
        raise ValueError("no top_logprobs: ask with logprobs=True and top_logprobs > 0")
    floor = min(top_logprobs.values())
    mass = {
        lab: sum(math.exp(top_logprobs.get(t, floor)) for t in toks) for lab, toks in labels.items()
    }
    total = sum(mass.values())
    return {lab: m / total for lab, m in mass.items()}


def calibrate(p: float, prior: float) -> float:
    """Contextual calibration of a two-label probability: divide out the prompt's own bias.

    ``prior`` is P(first label) for a content-free input ("N/A"); the calibrated probability is
    ``(p / prior) / (p / prior + (1 - p) / (1 - prior))``, so a reply as biased as the prior
    becomes 0.5.
    """
    if not (0 < prior < 1 and 0 <= p <= 1):
        raise ValueError("p must be in [0, 1] and the prior in (0, 1)")
    a, b = p / prior, (1 - p) / (1 - prior)
    return a / (a + b)


# ---------------------------------------------------------------------------- statistics
Z95 = NormalDist().inv_cdf(0.975)  # the two-sided 95 % quantile of the normal distribution


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n`` (:func:`shared.metrics.wilson`)."""
    return metrics.wilson(k, n, z)


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on paired outcomes: (a right & b wrong, a wrong & b right, p-value).

    Only the discordant items count (:func:`shared.metrics.mcnemar_exact`).
    """
    return metrics.mcnemar_exact(a_correct, b_correct)


def paired_bootstrap(
    a_correct: Sequence[bool], b_correct: Sequence[bool], n_boot: int = 5000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of accuracy(b) - accuracy(a), resampling *items* (pairs kept)."""
    if len(a_correct) != len(b_correct) or not a_correct:
        raise ValueError("need two non-empty outcome lists of the same length")
    rng, n = random.Random(seed), len(a_correct)
    diffs = [int(b) - int(a) for a, b in zip(a_correct, b_correct, strict=True)]
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return stats[int(0.025 * n_boot)], stats[int(0.975 * n_boot) - 1]


# ---------------------------------------------------------------------------- exercise checks
YES_NO = {"yes": ("yes", "Yes"), "no": ("no", "No")}


class _FakeChoice:
    def __init__(self, tops: Mapping[str, float]) -> None:
        from types import SimpleNamespace as NS

        first = max(tops, key=tops.__getitem__)
        top = [NS(token=t, logprob=lp) for t, lp in tops.items()]
        self.message = NS(role="assistant", content=first)
        self.finish_reason = "length"
        self.logprobs = NS(content=[NS(token=first, logprob=tops[first], top_logprobs=top)])


class FakeClient:
    """Records the ``chat.completions.create`` calls and answers with fixed ``top_logprobs``."""

    def __init__(self, tops: Mapping[str, float]) -> None:
        from types import SimpleNamespace as NS

        self.calls: list[dict[str, Any]] = []
        self.tops = dict(tops)
        self.chat = NS(completions=NS(create=self._create))

    def _create(self, **kwargs: Any) -> Any:
        from types import SimpleNamespace as NS

        self.calls.append(kwargs)
        return NS(choices=[_FakeChoice(self.tops)], model=kwargs.get("model"))


def _verdict(problems: list[str]) -> bool:
    if problems:
        raise AssertionError("; ".join(sorted(set(problems))))
    return True


def check_yes_probability(fn: Callable[..., float], token_ids: Mapping[str, int]) -> bool:
    """Exercise 1: ``fn(text, client)`` makes the constrained logprobs call and normalises.

    True when right; otherwise an ``AssertionError`` says what is wrong (never the answer).
    """
    problems: list[str] = []
    for tops in (
        {"Yes": -0.4, "The": -1.5, "No": -2.0, "no": -3.1, "yes": -4.0},
        {"I": -0.7, "no": -1.2, "No": -1.6, "Yes": -2.5},
    ):
        client = FakeClient(tops)
        got = fn("Can I get my money back for the broken kettle?", client)
        if len(client.calls) != 1:
            return _verdict([f"make one call with the client you are given ({len(client.calls)})"])
        call = client.calls[0]
        if call.get("logprobs") is not True or not call.get("top_logprobs"):
            problems.append("ask for logprobs=True and top_logprobs")
        if call.get("max_tokens") != 1:
            problems.append("one token is enough: max_tokens=1")
        bias = {int(k) for k, v in (call.get("logit_bias") or {}).items() if v > 0}
        if bias != set(token_ids.values()):
            problems.append("logit_bias should raise exactly the four yes/no tokens")
        user = " ".join(m["content"] for m in call.get("messages", []) if m["role"] == "user")
        if "money back" not in user:
            problems.append("the message to classify is not in the prompt")
        want = label_probs(tops, YES_NO)["yes"]
        if not isinstance(got, float) or not math.isclose(got, want, abs_tol=1e-9):
            problems.append("the returned P(yes) is not the yes share of the yes/no mass")
    return _verdict(problems)


def check_paired_bootstrap(fn: Callable[..., tuple[float, float]]) -> bool:
    """Exercise 2: ``fn(a_correct, b_correct)`` returns a paired 95 % bootstrap interval."""
    a = [True] * 60 + [False] * 40
    b = a[:]
    for i in (60, 61, 62, 63, 64, 65, 66, 0):  # 7 items fixed, 1 broken: +0.06
        b[i] = not b[i]
    lo, hi = fn(a, b)
    ref_lo, ref_hi = paired_bootstrap(a, b, n_boot=4000, seed=1)
    problems = []
    if not lo <= 0.06 <= hi:
        problems.append("the interval must contain the observed difference (b - a)")
    if abs(lo - ref_lo) > 0.02 or abs(hi - ref_hi) > 0.02:
        problems.append("not a paired bootstrap interval (resample items, keep the pairs)")
    return _verdict(problems)


def check_prior_calibration(
    dev_probs: Sequence[float] | None,
    test_probs: Sequence[float],
    predictions: Sequence[str] | None,
) -> bool:
    """Exercise 3: test predictions calibrated with the mean dev P(positive) as the prior."""
    if dev_probs is None or len(dev_probs) != 24:
        got = 0 if dev_probs is None else len(dev_probs)
        return _verdict([f"score all 24 dev reviews (got {got})"])
    if predictions is None:
        return _verdict(["predict a label for every test review"])
    prior = sum(float(p) for p in dev_probs) / len(dev_probs)
    want = ["positive" if calibrate(p, prior) > 0.5 else "negative" for p in test_probs]
    if len(predictions) != len(test_probs):
        return _verdict(["one prediction per test review"])
    wrong = sum(p != w for p, w in zip(predictions, want, strict=True))
    return _verdict([f"{wrong} predictions differ from dev-prior calibration"] if wrong else [])
