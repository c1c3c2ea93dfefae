"""Lesson 07: LoRA fine-tuning of SmolLM2 on a customer-service intent task, on a CPU.

The task: read a message sent to the fictional shop *Maple & Mill*, answer with one of the eight
:data:`INTENTS` and a short reply, in the fixed format ``intent: <label>\\nreply: <text>``.

* data: :func:`build_examples` writes a few hundred messages from hand-written templates
  (deterministic, seeded); whole templates go to one split, so the test set holds phrasings the
  model never saw. :func:`find_leakage` checks it; :func:`load_splits` reads the committed jsonl
  files with the ``datasets`` library.
* training: :func:`encode_example` masks the prompt (labels -100) so the loss is on the answer
  only; :func:`add_lora` wraps the model with PEFT; :func:`train_lora` runs a seeded loop with a
  validation loss and keeps the best checkpoint.
* use: :func:`generate_answers` (batched greedy decoding), :func:`parse_answer`, :func:`classify`;
  :func:`prepare_merged_model` trains, merges and saves the model once (the capstone may use it).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from shared.config import FriendlyError
from shared.paths import cache_dir, data_dir, data_path

# fmt: off
__all__ = [
    "INTENTS", "SPLITS", "SYSTEM_PROMPT", "ZERO_SHOT_PROMPT", "Prediction", "TrainConfig",
    "TrainResult", "add_lora", "adapter_dir", "build_examples", "classify", "collate",
    "encode_example", "find_leakage", "format_answer", "generate_answers", "load_splits",
    "merged_dir", "parse_answer", "prepare_merged_model", "reply_for", "save_merged",
    "train_lora", "write_dataset",
]
# fmt: on

#: the eight intent labels (the capstone routes on the same ones).
INTENTS = ("order_status", "shipping", "returns_refunds", "account", "payments",
           "product_question", "talk_to_human", "out_of_scope")  # fmt: skip
SPLITS = ("train", "validation", "test")
#: the short system message the fine-tuned model is trained (and later queried) with.
SYSTEM_PROMPT = "You route Maple & Mill customer messages."
#: what an untrained model needs to be told to have a chance at the task.
ZERO_SHOT_PROMPT = (
    "You are the customer-service assistant of Maple & Mill, an online shop. Classify the "
    "customer's message as exactly one of: " + ", ".join(INTENTS) + ". Answer in two lines:\n"
    "intent: <label>\nreply: <one short sentence to the customer>"
)


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
                    out[split].append({"id": f"{split}-{len(out[split]):03d}", "text": text,
                                       "intent": intent, "reply": reply,
                                       "answer": format_answer(intent, reply),
                                       "template": f"{intent}/{t:02d}"})  # fmt: skip
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
        raise FriendlyError(f"The intent data set is missing ({', '.join(missing)}). Restore the "
                            "files with `git checkout data/intents` or re-create them with "
                            "`shared.finetune.write_dataset()`.")  # fmt: skip
    return load_dataset("json", data_files=files, cache_dir=str(cache_dir("datasets")))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def find_leakage(splits: dict[str, Iterable[dict]]) -> dict[str, list[str]]:
    """Messages or templates shared between splits: ``{"train/test": [...], ...}``, empty if clean.

    Texts are compared after lowercasing and removing punctuation, so "Where is my order?" and
    "where is my order" count as the same message.
    """
    keys = {s: {(_norm(r["text"]), r.get("template")) for r in rows} for s, rows in splits.items()}
    found: dict[str, list[str]] = {}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            texts = {t for t, _ in keys[a]} & {t for t, _ in keys[b]}
            templates = {m for _, m in keys[a] if m} & {m for _, m in keys[b] if m}
            hits = sorted(texts) + [f"template {m}" for m in sorted(templates)]
            if hits:
                found[f"{a}/{b}"] = hits
    return found


# ---------------------------------------------------------------------------- encoding
def _prompt(tokenizer: Any, message: str, system: str = SYSTEM_PROMPT,
            shots: Sequence[tuple[str, str]] = ()) -> str:  # fmt: skip
    chat = [{"role": "system", "content": system}]
    for user, assistant in shots:
        chat += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    chat.append({"role": "user", "content": message})
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def encode_example(tokenizer: Any, message: str, answer: str, system: str = SYSTEM_PROMPT,
                   max_length: int = 96) -> dict[str, list[int]]:  # fmt: skip
    """Token ids of prompt + answer, with ``labels`` = -100 on every prompt token.

    The loss is then computed on the answer (and its end-of-turn token) only: the model is not
    trained to predict the system prompt or the customer's message.
    """
    prompt_ids = tokenizer(_prompt(tokenizer, message, system), add_special_tokens=False)[
        "input_ids"
    ]
    answer_ids = tokenizer(answer + tokenizer.eos_token + "\n", add_special_tokens=False)[
        "input_ids"
    ]
    if len(prompt_ids) + len(answer_ids) > max_length:
        raise ValueError(f"example is {len(prompt_ids) + len(answer_ids)} tokens, over "
                         f"max_length={max_length}: {message[:40]!r}")  # fmt: skip
    return {"input_ids": prompt_ids + answer_ids,
            "labels": [-100] * len(prompt_ids) + answer_ids}  # fmt: skip


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch into tensors; padding gets label -100 and attention 0."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id)  # (B, T)
    labels = torch.full((len(batch), width), -100)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = (torch.tensor(b["input_ids"]),
                                                  torch.tensor(b["labels"]), 1)  # fmt: skip
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ---------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a LoRA run. :meth:`for_device` gives the CPU / GPU defaults."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 2e-3
    batch_size: int = 8
    max_steps: int = 50
    eval_every: int = 10
    patience: int = 2  # stop after this many evaluations without a better validation loss
    weight_decay: float = 0.0
    seed: int = 7

    @classmethod
    def for_device(cls, device: str, **overrides: Any) -> TrainConfig:
        """Short run on a CPU (fits the lesson's budget); longer, bigger on a GPU."""
        base = {} if device == "cpu" else {"max_steps": 300, "batch_size": 16, "lr": 5e-4,
                                           "eval_every": 25, "patience": 3,
                                           "target_modules": ("q_proj", "k_proj", "v_proj",
                                                              "o_proj")}  # fmt: skip
        return cls(**{**base, **overrides})


@dataclass
class TrainResult:
    """Losses per step, validation losses per evaluation, the best step and the time taken."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` in a PEFT LoRA model; the new B matrices start at zero (W + BA = W)."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules),
                      task_type="CAUSAL_LM")  # fmt: skip
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(config.seed)  # A's random init, seeded without global side effects
        warnings.simplefilter("ignore", FutureWarning)  # peft 0.21 calls a renamed transformers API
        return get_peft_model(model, lora)


def _mean_loss(model: Any, batches: Sequence[dict[str, Any]]) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = int((batch["labels"][:, 1:] != -100).sum())  # answer tokens that are predicted
            total += model(**batch).loss.item() * n
            count += n
    return total / count


def train_lora(model: Any, tokenizer: Any, train: Sequence[dict], validation: Sequence[dict],
               config: TrainConfig, progress: bool = True) -> TrainResult:  # fmt: skip
    """Train the LoRA weights of a PEFT ``model`` with AdamW; keep the best validation checkpoint.

    ``train`` / ``validation`` hold rows with ``text`` and ``answer``. Batches are drawn in a
    seeded random order (epoch after epoch); every ``eval_every`` steps the validation loss is
    measured, and training stops after ``patience`` evaluations without improvement. The LoRA
    weights of the best evaluation are restored at the end.
    """
    import torch
    from tqdm.auto import tqdm

    enc = [encode_example(tokenizer, r["text"], r["answer"]) for r in train]
    val = [encode_example(tokenizer, r["text"], r["answer"]) for r in validation]
    pad = tokenizer.pad_token_id
    bs = config.batch_size
    val_batches = [collate(val[i : i + bs], pad) for i in range(0, len(val), bs)]
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    result, best, best_state, waited = TrainResult(), float("inf"), None, 0
    order: list[int] = []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # LoRA dropout draws from a seeded, private stream
        torch.manual_seed(config.seed)
        bar = tqdm(range(1, config.max_steps + 1), desc="LoRA steps", disable=not progress)
        for step in bar:
            if len(order) < bs:
                order += torch.randperm(len(enc), generator=gen).tolist()
            batch = collate([enc[i] for i in order[:bs]], pad)
            order = order[bs:]
            model.train()
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            result.train_loss.append(loss.item())
            if step % config.eval_every == 0 or step == config.max_steps:
                v = _mean_loss(
                    model, [{k: t.to(device) for k, t in b.items()} for b in val_batches]
                )
                result.val_loss.append((step, v))
                bar.set_postfix(train=f"{loss.item():.3f}", val=f"{v:.3f}")
                if v < best:
                    best, waited, result.best_step = v, 0, step
                    best_state = {k: t.detach().clone() for k, t in model.state_dict().items()
                                  if "lora_" in k}  # fmt: skip
                else:
                    waited += 1
                    if waited >= config.patience:
                        result.stopped_early = True
                        break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------- inference
def generate_answers(model: Any, tokenizer: Any, messages: Sequence[str],
                     system: str = SYSTEM_PROMPT, shots: Sequence[tuple[str, str]] = (),
                     max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:  # fmt: skip
    """Greedy answers for many messages, batched with left padding (deterministic)."""
    import torch

    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for i in range(0, len(messages), batch_size):
            prompts = [_prompt(tokenizer, m, system, shots) for m in messages[i : i + batch_size]]
            batch = tokenizer(prompts, return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)  # fmt: skip
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            new = ids[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = old_side
    return out


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


def classify(messages: Sequence[str], model: Any = None, tokenizer: Any = None) -> list[Prediction]:
    """Intent and reply for each message from the fine-tuned model (prepared if missing)."""
    if model is None or tokenizer is None:
        from shared.models import load_chat_model

        tokenizer, model = load_chat_model(str(prepare_merged_model()))
    return [parse_answer(a) for a in generate_answers(model, tokenizer, list(messages))]


# ---------------------------------------------------------------------------- save / merge
def adapter_dir() -> Path:
    """Where the trained LoRA adapter is saved (in the course cache)."""
    return cache_dir("finetune") / "intent-lora-adapter"


def merged_dir() -> Path:
    """Where the merged model (base + LoRA, a normal Hugging Face folder) is saved."""
    return cache_dir("finetune") / "intent-merged"


def _replace_dir(tmp: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # a half-written folder is never taken for a finished one
    return target


def save_merged(peft_model: Any, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """Merge LoRA into the base weights and save model + tokenizer to :func:`merged_dir`."""
    tmp = merged_dir().with_name("intent-merged.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "course-finetune.json").write_text(json.dumps(meta, indent=2))
    return _replace_dir(tmp, merged_dir())


def prepare_merged_model(force: bool = False, config: TrainConfig | None = None) -> Path:
    """Train, save the adapter, merge and save the model once; later calls return the folder.

    About 2-4 minutes on a 2-core CPU the first time. Lesson 07 runs the same steps one by one.
    """
    done = merged_dir() / "course-finetune.json"
    if done.is_file() and not force:
        return merged_dir()
    from shared.models import load_chat_model, pick_device

    tokenizer, model = load_chat_model()
    config = config or TrainConfig.for_device(pick_device())
    data = load_splits()
    peft_model = add_lora(model, config)
    result = train_lora(
        peft_model, tokenizer, list(data["train"]), list(data["validation"]), config
    )
    tmp = adapter_dir().with_name("intent-lora-adapter.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    _replace_dir(tmp, adapter_dir())
    meta = {"config": asdict(config), "best_step": result.best_step, "seconds": result.seconds}
    return save_merged(peft_model, tokenizer, meta)
