"""Lesson 07: LoRA fine-tuning of SmolLM2 on a customer-service intent task, on a CPU.

The task: read a message sent to the fictional shop *Maple & Mill*, answer with one of the eight
:data:`INTENTS` and a short reply, as ``intent: <label>\\nreply: <text>``. The notebook writes the
PEFT calls, the training loop and the merge itself; this module keeps what is reused: the data
(:func:`build_examples` from hand-written templates, whole templates per split, so the test set
holds phrasings the model never saw; :func:`find_leakage`, :func:`load_splits`,
:func:`load_written_test`), training (:func:`encode_example` masks the prompt, :func:`collate`,
:func:`to_device`, :data:`TARGET_MODULES` per architecture, :class:`TrainConfig`), use
(:func:`label_logprobs`, :func:`generate_answers`, :func:`parse_answer`) and the exercise checks.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from pathlib import Path
from typing import Any

from shared.config import FriendlyError
from shared.paths import cache_dir, data_dir, data_path

# fmt: off
__all__ = [
    "EXERCISE_ROUGE_PAIR", "INTENTS", "Prediction", "SPLITS", "SYSTEM_PROMPT", "TARGET_MODULES",
    "TrainConfig", "ZERO_SHOT_PROMPT", "adapter_dir", "build_examples", "chat_prompt",
    "check_lora_exercise", "check_mcnemar_exercise", "check_rouge_exercise", "collate",
    "encode_example", "find_leakage", "format_answer", "generate_answers", "label_logprobs",
    "load_splits", "load_written_test", "merged_dir", "model_device", "parse_answer", "reply_for",
    "target_modules_for", "to_device", "write_dataset",
]

#: the eight intent labels (the capstone routes on the same ones).
INTENTS = ("order_status", "shipping", "returns_refunds", "account", "payments",
           "product_question", "talk_to_human", "out_of_scope")
SPLITS = ("train", "validation", "test")
#: the short system message the fine-tuned model is trained (and later queried) with.
SYSTEM_PROMPT = "You route Maple & Mill customer messages."
#: what an untrained model needs to be told to have a chance at the task.
ZERO_SHOT_PROMPT = (
    "You are the customer-service assistant of Maple & Mill, an online shop. Classify the "
    "customer's message as exactly one of: " + ", ".join(INTENTS) + ". Answer in two lines:\n"
    "intent: <label>\nreply: <one short sentence to the customer>"
)
_LLAMA_LIKE = {"qv": ("q_proj", "v_proj"), "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
               "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
#: LoRA target modules per ``config.model_type``: query+value, all attention, all linear layers.
#: GLM-4 "-hf" checkpoints load natively (``glm``/``glm4``); the older ChatGLM3 needs
#: ``trust_remote_code`` and fuses q, k and v into one ``query_key_value`` matrix.
TARGET_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text"), _LLAMA_LIKE),
    **dict.fromkeys(("glm", "glm4"), {**_LLAMA_LIKE, "all": (*_LLAMA_LIKE["attention"],
                                                          "gate_up_proj", "down_proj")}),
    "phi3": {"qv": ("qkv_proj",), "attention": ("qkv_proj", "o_proj"),
             "all": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")},
    "chatglm": {"qv": ("query_key_value",), "attention": ("query_key_value", "dense"),
                "all": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")},
}
# fmt: on


def target_modules_for(model_type: str, scope: str = "attention") -> tuple[str, ...]:
    """The module names LoRA adapts for an architecture: ``scope`` is qv, attention or all."""
    if model_type not in TARGET_MODULES:
        raise ValueError(
            f"no LoRA target modules known for model_type {model_type!r}; pass "
            "target_modules yourself (print the model to see its layer names) or "
            "use target_modules='all-linear'"
        )
    scopes = TARGET_MODULES[model_type]
    if scope not in scopes:
        raise ValueError(f"scope must be one of {sorted(scopes)}, not {scope!r}")
    return scopes[scope]


@cache
def _spec() -> dict[str, Any]:
    """The hand-written templates, replies and slot values (``data/intents/templates.json``)."""
    return json.loads(data_path("intents", "templates.json").read_text())


# ---------------------------------------------------------------------------- data
def reply_for(intent: str, slots: dict[str, str]) -> str:
    """The reference reply for ``intent`` (slots such as ``order`` and ``product`` filled in)."""
    if intent not in INTENTS:
        raise ValueError(f"unknown intent {intent!r}; expected one of {INTENTS}")
    return _spec()["replies"][intent].format(**slots)


def format_answer(intent: str, reply: str) -> str:
    """The answer format the model learns: ``intent: <label>\\nreply: <text>``."""
    return f"intent: {intent}\nreply: {reply}"


def build_examples(seed: int = 7, per_template: Sequence[int] = (5, 2, 2)) -> dict[str, list]:
    """Generate the data set: ``{"train": [...], "validation": [...], "test": [...]}``.

    Per intent, the 14 templates are shuffled and split 9 / 2 / 3, so no phrasing is shared
    between splits; each template is filled ``per_template[i]`` times with random slots,
    greeting and ending. Records: ``id, text, intent, reply, answer, template``.
    """
    spec, rng = _spec(), random.Random(seed)
    out: dict[str, list] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for intent in INTENTS:
        templates = spec["templates"][intent]
        order = list(range(len(templates)))
        rng.shuffle(order)
        groups = (order[:9], order[9:11], order[11:])
        for split, group, count in zip(SPLITS, groups, per_template, strict=True):
            for t in group:
                made = 0
                while made < count:
                    slots = {k: rng.choice(v) for k, v in spec["slots"].items()}
                    slots["order"] = str(rng.randint(1001, 1099))
                    greeting, ending = rng.choice(spec["greetings"]), rng.choice(spec["endings"])
                    body = templates[t].format(**slots)
                    if greeting.endswith(", "):
                        body = body[0].lower() + body[1:] if body[:2] != "I " else body
                    text = greeting + body + ending
                    if text.lower() in seen:
                        continue  # never the same message twice, in any split
                    seen.add(text.lower())
                    reply = reply_for(intent, slots)
                    # fmt: off
                    out[split].append({"id": f"{split}-{len(out[split]):03d}", "text": text,
                                       "intent": intent, "reply": reply,
                                       "answer": format_answer(intent, reply),
                                       "template": f"{intent}/{t:02d}"})
                    # fmt: on
                    made += 1
    return out


def write_dataset(folder: Path | None = None, seed: int = 7) -> dict[str, Path]:
    """Write the splits as jsonl (``data/intents/<split>.jsonl``); identical bytes on every run."""
    folder = folder or data_dir() / "intents"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in build_examples(seed).items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths


def load_splits(folder: Path | None = None) -> Any:
    """The committed splits as a ``datasets.DatasetDict`` (read from local jsonl files only)."""
    from datasets import load_dataset

    folder = folder or data_dir() / "intents"
    files = {s: str(folder / f"{s}.jsonl") for s in SPLITS}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise FriendlyError(
            f"The intent data set is missing ({', '.join(missing)}). Restore the "
            "files with `git checkout data/intents` or re-create them with "
            "`shared.finetune.write_dataset()`."
        )
    return load_dataset("json", data_files=files, cache_dir=str(cache_dir("datasets")))


def load_written_test() -> list[dict[str, str]]:
    """112 messages written by hand, no templates (14 per intent, typos and indirect phrasing)."""
    lines = data_path("intents", "test_written.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def find_leakage(splits: Mapping[str, Iterable[dict]]) -> dict[str, list[str]]:
    """Messages or templates shared between splits: ``{"train/test": [...], ...}``, empty if clean.
    Texts are compared lowercased, without punctuation ("Where is it?" == "where is it")."""
    keys = {s: {(_norm(r["text"]), r.get("template")) for r in rows} for s, rows in splits.items()}
    found: dict[str, list[str]] = {}
    for a, b in combinations(keys, 2):
        texts = {t for t, _ in keys[a]} & {t for t, _ in keys[b]}
        templates = {m for _, m in keys[a] if m} & {m for _, m in keys[b] if m}
        hits = sorted(texts) + [f"template {m}" for m in sorted(templates)]
        if hits:
            found[f"{a}/{b}"] = hits
    return found


# ---------------------------------------------------------------------------- encoding
def chat_prompt(
    tokenizer: Any, message: str, system: str = SYSTEM_PROMPT, shots: Sequence[tuple[str, str]] = ()
) -> str:
    """The chat-template text up to the assistant's turn (system, optional shots, message)."""
    chat = [{"role": "system", "content": system}]
    for user, assistant in shots:
        chat += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    chat.append({"role": "user", "content": message})
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def encode_example(
    tokenizer: Any, message: str, answer: str, system: str = SYSTEM_PROMPT, max_length: int = 96
) -> dict[str, list[int]]:
    """Token ids of prompt + answer, with ``labels`` = -100 on every prompt token.

    The loss is then computed on the answer (and its end-of-turn token) only: the model is not
    trained to predict the system prompt or the customer's message.
    """
    prompt = tokenizer(chat_prompt(tokenizer, message, system), add_special_tokens=False)
    answer_ids = tokenizer(answer + tokenizer.eos_token + "\n", add_special_tokens=False)
    prompt_ids, answer_ids = prompt["input_ids"], answer_ids["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_length:
        raise ValueError(
            f"example is {len(prompt_ids) + len(answer_ids)} tokens, over "
            f"max_length={max_length}: {message[:40]!r}"
        )
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch into tensors; padding gets label -100 and attention 0."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id)  # (B, T)
    labels = torch.full((len(batch), width), -100)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def model_device(model: Any) -> Any:
    """The ``torch.device`` of the model's (first) parameters: where its inputs must go."""
    return next(model.parameters()).device


def to_device(batch: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """The batch's tensors moved to the model's device (a CPU batch never meets a GPU layer)."""
    return {k: v.to(model_device(model)) if hasattr(v, "to") else v for k, v in batch.items()}


# ---------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a LoRA run. :meth:`for_device` gives the CPU / GPU defaults."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 2e-3
    batch_size: int = 4  # small batches: more updates for the same CPU time
    max_steps: int = 24
    eval_every: int = 8
    patience: int = 2  # stop after this many evaluations without a better validation loss
    weight_decay: float = 0.0
    seed: int = 7

    @classmethod
    def for_device(cls, device: str, model_type: str = "llama", **overrides: Any) -> TrainConfig:
        """A short run on q/v on a CPU (the lesson's budget); longer, all attention on a GPU."""
        scope = "qv" if device == "cpu" else "attention"
        base: dict[str, Any] = {"target_modules": target_modules_for(model_type, scope)}
        if device != "cpu":
            base |= {"max_steps": 300, "batch_size": 16, "lr": 5e-4, "eval_every": 25}
        return cls(**{**base, **overrides})


# ---------------------------------------------------------------------------- inference
def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(x) for x in seqs)
    return next((i for i in range(n) if len({x[i] for x in seqs}) > 1), n)


# fmt: off
def label_logprobs(model: Any, tokenizer: Any, messages: Sequence[str],
                   labels: Sequence[str] = INTENTS, system: str = SYSTEM_PROMPT,
                   template: str = "intent: {}\n", batch_size: int = 16) -> Any:
    """log p(answer | prompt) of every label for every message: a tensor ``(N messages, L)``.

    The answer is ``template`` filled with the label (tokens as in :func:`encode_example`); its
    log-probabilities are summed. The system prompt runs once, then one forward pass per batch of
    messages (sorted by length, left-padded) holds each message and all ``L`` answers side by
    side, the attention mask letting an answer see the prompt and its own earlier tokens only.
    """
    import torch

    prompts = [tokenizer(chat_prompt(tokenizer, m, system), add_special_tokens=False)["input_ids"]
               for m in messages]
    answers = [tokenizer(template.format(x), add_special_tokens=False)["input_ids"] for x in labels]
    q = min(_common_prefix(answers), min(map(len, answers)) - 1)  # the shared "intent:"
    pieces = [a[q:] for a in answers]  # what differs: >= 1 token each
    packed = [tok for p in pieces for tok in p[:-1]]  # each answer but its last token
    n_in, device = len(packed), model_device(model)
    own = torch.tensor([k for k, p in enumerate(pieces) for _ in p[:-1]], device=device)
    offset = torch.tensor([j for p in pieces for j in range(len(p) - 1)], device=device)
    sees = (own[:, None] == own) & (offset <= offset[:, None])  # (n_in, n_in): own answer, causal
    start = [q + 1 + sum(len(p) - 1 for p in pieces[:k]) for k in range(len(pieces))]
    # what to add up: (index among the kept logits, token, label; -1: every label)
    terms = [(i, t, -1) for i, t in enumerate(answers[0][:q])]
    terms += [(q, p[0], k) for k, p in enumerate(pieces)]
    terms += [(start[k] + j, p[j + 1], k) for k, p in enumerate(pieces) for j in range(len(p) - 1)]
    at, token, label = (torch.tensor(c, device=device) for c in zip(*terms, strict=True))
    adds = ((label[:, None] == torch.arange(len(labels), device=device)) | (label[:, None] < 0))
    p0 = min(_common_prefix(prompts), min(map(len, prompts)) - 1)  # the system prompt
    dtype, shared = model.get_input_embeddings().weight.dtype, None
    scores = torch.empty(len(prompts), len(labels))  # (N, L)
    with torch.no_grad():
        if p0:
            first = torch.tensor([prompts[0][:p0]], device=device)  # (1, p0)
            shared = model(input_ids=first, use_cache=True, logits_to_keep=1).past_key_values
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for chunk in (order[c : c + batch_size] for c in range(0, len(order), batch_size)):
            tails = [prompts[i][p0:] + answers[0][:q] for i in chunk]
            b, t = len(tails), max(map(len, tails))
            ids = torch.tensor([[tokenizer.pad_token_id] * (t - len(x)) + x + packed
                                for x in tails], device=device)  # (B, t + n_in), left-padded
            real = torch.tensor([[False] * (t - len(x)) + [True] * len(x) for x in tails],
                                device=device)  # (B, t)
            pos = (p0 + real.long().cumsum(1) - 1).clamp(min=p0)  # (B, t)
            pos = torch.cat([pos, pos[:, -1:] + 1 + offset], 1)  # (B, t + n_in)
            ok = torch.ones(b, t + n_in, p0 + t + n_in, dtype=torch.bool, device=device)
            ok[:, :t, p0:] = torch.ones(t, t + n_in, dtype=torch.bool, device=device).tril()
            ok[:, :, p0 : p0 + t] &= real[:, None]  # the message causally, never its padding
            ok[:, t:, p0 + t :] = sees  # an answer sees its own earlier tokens only
            mask = torch.zeros(ok.shape, dtype=dtype, device=device)  # (B, Q, K), additive
            mask = mask.masked_fill(~ok, torch.finfo(dtype).min)[:, None]
            cache = copy.deepcopy(shared)
            if cache is not None:
                cache.batch_repeat_interleave(b)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                           past_key_values=cache, logits_to_keep=q + 1 + n_in).logits.float()
            logp = logits[:, at, token] - torch.logsumexp(logits, dim=-1)[:, at]  # (B, terms)
            scores[chunk] = (logp @ adds.float()).cpu()  # (B, L)
    return scores  # (N, L)


def generate_answers(model: Any, tokenizer: Any, messages: Sequence[str],
                     system: str = SYSTEM_PROMPT, shots: Sequence[tuple[str, str]] = (),
                     max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers for many messages, batched with left padding (deterministic)."""
    import torch

    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[str] = []
    try:
        for i in range(0, len(messages), batch_size):
            chunk = messages[i : i + batch_size]
            prompts = [chat_prompt(tokenizer, m, system, shots) for m in chunk]
            batch = to_device(tokenizer(prompts, return_tensors="pt", padding=True,
                                        add_special_tokens=False), model)
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            new = ids[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = old_side
    return out
# fmt: on


@dataclass(frozen=True)
class Prediction:
    """A parsed answer: the intent (``"invalid"`` if none of :data:`INTENTS`), reply, raw text."""

    intent: str
    reply: str
    raw: str


def parse_answer(text: str) -> Prediction:
    """Read ``intent: <label>`` and ``reply: <text>`` from a generated answer, leniently."""
    m = re.search(r"intent\s*[:=]\s*([a-z_]+)", text, re.I)
    label = m.group(1).lower() if m else ""
    if label not in INTENTS:  # a bare label anywhere still counts
        label = next((i for i in INTENTS if re.search(rf"\b{i}\b", text)), "invalid")
    r = re.search(r"reply\s*[:=]\s*(.+)", text, re.I | re.S)
    if r:
        reply = r.group(1).strip().split("\n")[0]
    else:  # no reply line: whatever is not the intent line is the reply
        reply = " ".join(ln for ln in text.splitlines() if not re.match(r"\s*intent\b", ln, re.I))
    return Prediction(label, reply.strip(), text)


def adapter_dir() -> Path:
    """Where the trained LoRA adapter is saved (in the course cache)."""
    return cache_dir("finetune") / "intent-lora-adapter"


def merged_dir() -> Path:
    """Where the merged model (base + LoRA, a normal Hugging Face folder) is saved."""
    return cache_dir("finetune") / "intent-merged"


# ---------------------------------------------------------------------------- exercise checks
#: exercise 1's pair (reference, output); the checks below compute the answers themselves.
EXERCISE_ROUGE_PAIR = ("三十天内可以免费退货", "退货免费,期限三十天")
# fmt: off
_SMOLLM2_SHAPES = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192),
                   "o_proj": (576, 576), "gate_proj": (576, 1536), "up_proj": (576, 1536),
                   "down_proj": (1536, 576)}  # (d_in, d_out) in each of the 30 blocks


def check_rouge_exercise(f1: Any) -> Any:
    """Exercise 1: ROUGE-1 F1 of :data:`EXERCISE_ROUGE_PAIR` with one token per character."""
    from shared import checks, metrics

    ref, out = EXERCISE_ROUGE_PAIR
    expected = metrics.rouge_n(out, ref, 1, tokenize=metrics.chinese_tokenize).f1
    return checks.check_close("ROUGE-1 F1 on Chinese characters", f1, expected, tol=1e-3,
                              hint="count each character at most as often as it occurs in the "
                                   "other text; the comma is not a token")


def check_lora_exercise(config: Any, n_trainable: Any) -> Any:
    """Exercise 2: a ``LoraConfig`` on every linear layer of SmolLM2's blocks, r=4, alpha=8."""
    from shared import checks

    def ok() -> bool:
        modules = config.target_modules
        names = set(_SMOLLM2_SHAPES) if modules == "all-linear" else set(modules)
        expected = 30 * sum(4 * (i + o) for i, o in _SMOLLM2_SHAPES.values())
        return (names == set(_SMOLLM2_SHAPES) and config.r == 4 and config.lora_alpha == 8
                and str(config.task_type).endswith("CAUSAL_LM") and n_trainable == expected)

    return checks.check("LoraConfig on all 7 linear layers and its trainable parameters", ok,
                        hint="7 module names (attention and MLP); each adapted matrix adds "
                             "r x (d_in + d_out); print(model) shows the shapes")


def check_mcnemar_exercise(mcnemar_p: Any) -> Any:
    """Exercise 3: ``mcnemar_p(b, c)``, the exact two-sided McNemar p-value, on hidden counts."""
    from scipy.stats import binomtest

    from shared import checks

    cases = [(3, 11), (0, 6), (7, 7), (12, 2), (1, 0), (20, 9)]
    return checks.check("exact McNemar p-value", lambda: all(
        abs(mcnemar_p(b, c) - binomtest(b, b + c, 0.5).pvalue) < 1e-9 for b, c in cases),
        hint="under 'no difference' each of the b + c discordant items is a fair coin flip: "
             "2 x P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1")
# fmt: on
