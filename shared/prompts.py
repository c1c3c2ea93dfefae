"""Lesson 03: prompt engineering, measured instead of judged by eye.

* building prompts from their parts (system message, instruction, delimited content, examples,
  cue) and filling templates with a clear error for a missing field;
* one call to the active provider (:func:`complete`) that returns the text *and* the numbers:
  finish reason, token usage, seconds;
* JSON output: :func:`extract_json` digs a JSON object out of a chatty or slightly broken reply,
  :func:`ask_json` asks again with the error when it cannot;
* skeleton-of-thought (:func:`parse_list`) and chain-of-density (:func:`keyword_density`) helpers;
* an evaluation runner: a labelled set in ``data/prompts/``, :func:`evaluate` scores one prompt
  variant, :func:`results_table` compares variants by a number.

Everything talks to the model through ``shared.llm.client()`` / ``model_name()``, so it runs on
the local server and, unchanged, on OpenAI or Azure.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import FriendlyError

__all__ = [
    "Completion",
    "EvalItem",
    "JSONExtractionError",
    "JSONResult",
    "Message",
    "VariantResult",
    "ask_json",
    "build_messages",
    "complete",
    "delimit",
    "evaluate",
    "extract_json",
    "keyword_density",
    "load_eval_set",
    "parse_label",
    "parse_list",
    "render",
    "results_table",
]

Message = dict[str, str]
Ask = Callable[[list[Message]], str]


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


# ---------------------------------------------------------------------------- calling the model
@dataclass(frozen=True)
class Completion:
    """A model reply with the numbers that matter: why it stopped, tokens used, time taken."""

    text: str
    finish_reason: str  # "stop" (done or stop sequence hit) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def complete(
    messages: list[Message],
    *,
    temperature: float = 0.0,
    max_tokens: int = 64,
    top_p: float | None = None,
    stop: Sequence[str] | None = None,
    seed: int | None = None,
    client: Any = None,
    model: str | None = None,
) -> Completion:
    """One chat completion from the active provider (``shared.llm``), greedy by default."""
    import openai

    from shared import llm

    c = client or llm.client()
    extra = {k: v for k, v in (("top_p", top_p), ("stop", list(stop) if stop else None),
                               ("seed", seed)) if v is not None}  # fmt: skip
    start = time.perf_counter()
    try:
        r = c.chat.completions.create(
            model=model or llm.model_name(),
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            **extra,
        )
    except openai.APIError as exc:
        raise llm.explain(exc) from None
    seconds = time.perf_counter() - start
    choice, usage = r.choices[0], r.usage
    return Completion(
        text=(choice.message.content or "").strip(),
        finish_reason=choice.finish_reason or "",
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        seconds=seconds,
    )


def _default_ask(max_tokens: int) -> Ask:
    return lambda messages: complete(messages, max_tokens=max_tokens).text


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


@dataclass(frozen=True)
class JSONResult:
    """What :func:`ask_json` got: the parsed data, how many calls it took, every raw reply."""

    data: dict[str, Any]
    attempts: int
    replies: tuple[str, ...]


def ask_json(
    messages: list[Message],
    required: Sequence[str] = (),
    *,
    retries: int = 2,
    ask: Ask | None = None,
    max_tokens: int = 80,
) -> JSONResult:
    """Ask for a JSON object; on a broken or incomplete reply, show the model its error and retry.

    ``ask`` maps messages to reply text (default: :func:`complete` on the active provider).
    Raises :class:`JSONExtractionError` after ``1 + retries`` failed attempts.
    """
    ask = ask or _default_ask(max_tokens)
    history, replies, problem = list(messages), [], ""
    for _ in range(1 + retries):
        reply = ask(history)
        replies.append(reply)
        try:
            data = extract_json(reply)
            if not isinstance(data, dict):
                raise JSONExtractionError("the reply is a JSON list, not an object")
            missing = [k for k in required if k not in data]
            if missing:
                raise JSONExtractionError(f"the JSON object lacks the keys {missing}")
            return JSONResult(data, len(replies), tuple(replies))
        except JSONExtractionError as exc:
            problem = str(exc)
            keys = f" with the keys {list(required)}" if required else ""
            history += [{"role": "assistant", "content": reply},
                        {"role": "user", "content": f"That was not usable: {exc}. Reply with "
                         f"only one JSON object{keys}, nothing else."}]  # fmt: skip
    raise JSONExtractionError(
        f"no valid JSON after {len(replies)} attempt(s) ({problem}). "
        "Give the model an example of the exact JSON you want, raise max_tokens, or use a "
        "provider with a JSON mode."
    )


# ---------------------------------------------------------------------------- SoT and CoD
def parse_list(text: str, limit: int | None = None) -> list[str]:
    """Items of a numbered or bulleted list in ``text`` ("1. a", "2) b", "- c", "* d")."""
    items = [m.group(1).strip() for m in
             re.finditer(r"^\s*(?:\d+[.)]|[-*•])\s+(.+?)\s*$", text, flags=re.M)]  # fmt: skip
    return items[:limit] if limit else items


def keyword_density(summary: str, keywords: Iterable[str]) -> tuple[int, float]:
    """(keywords found in ``summary``, found per 100 words): the "density" of a summary."""
    low, words = summary.lower(), len(summary.split())
    found = sum(1 for k in set(keywords) if k.lower() in low)
    return found, (100.0 * found / words if words else 0.0)


# ---------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalItem:
    """One labelled example of the evaluation set."""

    text: str
    label: str


def load_eval_set(path: str | Path | None = None) -> list[EvalItem]:
    """The labelled set (JSON lines with ``text`` and ``label``); default: the course's set."""
    from shared.paths import data_path

    file = Path(path) if path else data_path("prompts", "eval_set.jsonl")
    items = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(EvalItem(str(row["text"]), str(row["label"])))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(
                f"{file}, line {n}: expected {{'text': ..., 'label': ...}} ({exc})"
            ) from None
    return items


def parse_label(reply: str, labels: Sequence[str]) -> str | None:
    """The label the reply names first (whole word, any case), or None if it names none."""
    hits = [(m.start(), lab) for lab in labels
            for m in [re.search(rf"\b{re.escape(lab)}\b", reply, flags=re.I)] if m]  # fmt: skip
    return min(hits)[1] if hits else None


@dataclass(frozen=True)
class VariantResult:
    """The score of one prompt variant on the evaluation set, with every reply kept."""

    name: str
    accuracy: float
    unparsed: int  # replies that named no label at all
    predictions: tuple[str | None, ...]
    replies: tuple[str, ...]
    seconds: float


def evaluate(
    name: str,
    make_messages: Callable[[str], list[Message]],
    items: Sequence[EvalItem],
    labels: Sequence[str],
    *,
    ask: Ask | None = None,
    max_tokens: int = 5,
    progress: bool = False,
) -> VariantResult:
    """Run one prompt variant over ``items`` and score it: accuracy of :func:`parse_label`."""
    if not items:
        raise ValueError("the evaluation set is empty")
    ask = ask or _default_ask(max_tokens)
    loop: Iterable[EvalItem] = items
    if progress:
        from tqdm.auto import tqdm

        loop = tqdm(items, desc=name, leave=False)
    start = time.perf_counter()
    replies = [ask(make_messages(item.text)) for item in loop]
    preds = tuple(parse_label(r, labels) for r in replies)
    correct = sum(p == item.label for p, item in zip(preds, items, strict=True))
    return VariantResult(name, correct / len(items), preds.count(None), preds, tuple(replies),
                         time.perf_counter() - start)  # fmt: skip


def results_table(results: Sequence[VariantResult], labels: Sequence[str] | None = None) -> Any:
    """A pandas table, one row per variant: accuracy, how often each label was predicted,
    unparsed replies, items and seconds. The label counts show a model's bias at a glance."""
    import pandas as pd

    if labels is None:
        labels = sorted({p for r in results for p in r.predictions if p is not None})
    rows = []
    for r in results:
        row: dict[str, Any] = {"variant": r.name, "accuracy": round(r.accuracy, 3)}
        row |= {lab: r.predictions.count(lab) for lab in labels}
        row |= {"unparsed": r.unparsed, "n": len(r.predictions), "seconds": round(r.seconds, 1)}
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")
