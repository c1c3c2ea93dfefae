"""Lesson 02 (model comparison): measure models side by side on your own small workload.

What a comparison needs, measured rather than quoted:

* size: :func:`count_parameters` (a loaded model) or :func:`count_parameters_on_disk` (a GGUF
  file or a safetensors folder, without loading it), :func:`path_size_mb`,
  :func:`tensor_memory_mb`, :func:`process_memory_mb`, and :func:`weights_memory_gb` for the
  back-of-the-envelope arithmetic (parameters x bits per weight);
* speed: :func:`timed`, :func:`decode_speed` (in-process) and :func:`client_decode_speed`
  (any OpenAI-style endpoint, local server or cloud);
* quality: the intent workload (:func:`load_workload`, :func:`intent_prompt`,
  :func:`parse_label`) answered by a decoder, constrained to the label tokens
  (:func:`classify_by_label_probs`) or free (:func:`classify_with_lm`,
  :func:`classify_with_client`), or by an encoder (:func:`classify_with_embeddings`), scored
  with :func:`shared.metrics.accuracy`; perplexity comes from :func:`shared.metrics.perplexity`;
* the report: :class:`Measurement`, :func:`not_configured`, :func:`comparison_table`,
  :func:`plot_comparison`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Measurement",
    "classify_with_client",
    "classify_with_embeddings",
    "classify_by_label_probs",
    "classify_with_lm",
    "client_decode_speed",
    "comparison_table",
    "count_parameters",
    "count_parameters_on_disk",
    "decode_speed",
    "intent_prompt",
    "label_token_ids",
    "load_workload",
    "not_configured",
    "parse_label",
    "path_size_mb",
    "plot_comparison",
    "process_memory_mb",
    "tensor_memory_mb",
    "timed",
    "weights_memory_gb",
]

MB = 2**20


@dataclass(frozen=True)
class Measurement:
    """One row of the comparison table; ``None`` means "does not apply" or "not measured"."""

    model: str
    kind: str  # e.g. "decoder, in-process fp32"
    parameters: int | None = None
    disk_mb: float | None = None
    memory_mb: float | None = None
    load_s: float | None = None
    tokens_per_s: float | None = None
    perplexity: float | None = None
    accuracy: float | None = None
    note: str = ""


# ------------------------------------------------------------------------ size
def count_parameters(model: Any) -> int:
    """Number of weights in a loaded PyTorch model (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_parameters_on_disk(path: str | Path) -> int:
    """Count the weights stored in a ``.gguf`` file or a folder of ``.safetensors`` files.

    Only the file headers are read, so this is cheap even for big models.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        return sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if path.is_file() and path.suffix == ".safetensors":
        files = [path]
    if not files:
        raise ValueError(f"{path} is neither a .gguf file nor a folder with .safetensors files")
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    return total


def path_size_mb(path: str | Path) -> float:
    """Size on disk of a file, or of every file under a folder, in MiB."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / MB
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB


def tensor_memory_mb(model: Any) -> float:
    """Memory taken by a model's parameters and buffers (what its weights cost in RAM), in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / MB


def process_memory_mb(pid: int) -> float:
    """Resident memory of a process and its children (e.g. a model server), in MiB."""
    import psutil

    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / MB


def weights_memory_gb(parameters: float, bits_per_weight: float) -> float:
    """Memory for the weights alone, in GB (1e9 bytes): parameters x bits / 8.

    Activations, the key/value cache and the framework come on top: budget 10-30 % more.
    """
    if parameters <= 0 or bits_per_weight <= 0:
        raise ValueError("parameters and bits_per_weight must be positive")
    return parameters * bits_per_weight / 8 / 1e9


# ------------------------------------------------------------------------ speed
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn()`` and return ``(result, seconds)``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def decode_speed(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 24) -> float:
    """Tokens per second of greedy decoding in-process (all ``max_new_tokens`` are produced)."""
    from shared.generation import generate

    _, seconds = timed(
        lambda: generate(model, tokenizer, prompt, max_new_tokens, stop_at_eos=False)
    )
    return max_new_tokens / seconds


def client_decode_speed(client: Any, model: str, prompt: str, max_tokens: int = 24) -> float:
    """Tokens per second of one chat completion, from the ``usage`` the endpoint reports."""
    messages = [{"role": "user", "content": prompt}]
    reply, seconds = timed(
        lambda: client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0
        )
    )
    tokens = reply.usage.completion_tokens if reply.usage else None
    if not tokens:
        raise ValueError("the endpoint did not report usage.completion_tokens")
    return tokens / seconds


# ------------------------------------------------------------------------ the workload
def load_workload(path: str | Path) -> list[dict[str, str]]:
    """Read a JSON-lines workload; every line needs ``text`` and ``label``."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict) or not {"text", "label"} <= item.keys():
            raise ValueError(f"{path}, line {n}: each item needs 'text' and 'label'")
        items.append(item)
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def intent_prompt(text: str, labels: Sequence[str]) -> str:
    """The instruction each decoder gets: pick one label for a customer message."""
    return (
        f"Classify the customer message into one category: {', '.join(labels)}.\n"
        f"Message: {text}\nCategory:"
    )


def parse_label(answer: str, labels: Sequence[str]) -> str:
    """The first label named in ``answer`` (whole word, any case), else ``"unknown"``."""
    found = []
    for label in labels:
        m = re.search(rf"\b{re.escape(label)}\b", answer, flags=re.IGNORECASE)
        if m:
            found.append((m.start(), label))
    return min(found)[1] if found else "unknown"


def _lm_prompts(tokenizer: Any, texts: Sequence[str], labels: Sequence[str], chat: bool,
                prompt: Callable[[str, Sequence[str]], str]) -> list[str]:  # fmt: skip
    prompts = [prompt(t, labels) for t in texts]
    if not chat:
        return prompts
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


def _batches(tokenizer: Any, prompts: Sequence[str], batch_size: int, device: Any) -> Any:
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        yield tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False).to(device)  # fmt: skip


def classify_with_lm(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    chat: bool = True,
    max_new_tokens: int = 4,
    batch_size: int = 16,
    prompt: Callable[[str, Sequence[str]], str] = intent_prompt,
) -> list[str]:
    """Let a decoder answer freely (greedy), then look for a label in its answer.

    ``chat=True`` wraps the prompt in the model's chat template (how an instruct model is
    meant to be used); ``chat=False`` gives the raw text, as to a base model. Prompts are
    batched with left padding, so every row's last token is where generation starts.
    """
    import torch

    prompts = _lm_prompts(tokenizer, texts, labels, chat, prompt)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    for enc in _batches(tokenizer, prompts, batch_size, device):
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad)  # fmt: skip
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :],
                                          skip_special_tokens=True)  # fmt: skip
    return [parse_label(a, labels) for a in answers]


def label_token_ids(tokenizer: Any, labels: Sequence[str], leading_space: bool) -> list[int]:
    """The first token of each label (as it would follow the prompt); they must all differ."""
    ids = [tokenizer((" " if leading_space else "") + label, add_special_tokens=False).input_ids[0]
           for label in labels]  # fmt: skip
    if len(set(ids)) != len(ids):
        raise ValueError(f"labels {list(labels)} share a first token; rename them to differ")
    return ids


def classify_by_label_probs(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    chat: bool = True,
    batch_size: int = 16,
    prompt: Callable[[str, Sequence[str]], str] = intent_prompt,
) -> list[str]:
    """Constrained decoding: the decoder picks the next token, but only among the labels.

    One forward pass per prompt; the label whose first token has the highest logit wins. This
    is how benchmarks score multiple-choice questions, and it never returns "unknown".
    """
    import torch

    prompts = _lm_prompts(tokenizer, texts, labels, chat, prompt)
    allowed = torch.tensor(label_token_ids(tokenizer, labels, leading_space=not chat))
    device = next(model.parameters()).device
    picks: list[str] = []
    for enc in _batches(tokenizer, prompts, batch_size, device):
        with torch.no_grad():
            logits = model(**enc).logits[:, -1, :].float().cpu()  # (B, V) at the last position
        picks += [labels[int(i)] for i in logits[:, allowed].argmax(dim=-1)]
    return picks


def classify_with_client(
    client: Any, model: str, texts: Sequence[str], labels: Sequence[str], max_tokens: int = 4
) -> list[str]:
    """The same task through an OpenAI-style endpoint (local server or cloud), greedy."""
    answers = []
    for text in texts:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": intent_prompt(text, labels)}],
            max_tokens=max_tokens,
            temperature=0,
        )
        answers.append(reply.choices[0].message.content or "")
    return [parse_label(a, labels) for a in answers]


def classify_with_embeddings(
    embedder: Any, texts: Sequence[str], descriptions: dict[str, str]
) -> list[str]:
    """An encoder cannot write a label, but it can compare: pick the closest label description.

    ``descriptions`` maps each label to a sentence describing it; texts and descriptions are
    embedded, and each text gets the label with the highest cosine similarity.
    """
    labels = list(descriptions)
    texts_emb = embedder.encode(list(texts), normalize_embeddings=True)  # (N, D)
    label_emb = embedder.encode([descriptions[k] for k in labels], normalize_embeddings=True)
    scores = texts_emb @ label_emb.T  # (N, L) cosine similarities
    return [labels[int(i)] for i in scores.argmax(axis=1)]


# ------------------------------------------------------------------------ the report
def not_configured(name: str = "cloud model") -> Measurement:
    """The row for a provider that has no key configured: not an error, just not measured."""
    return Measurement(
        model=name,
        kind="service (API)",
        note="not configured: set OPENAI_API_KEY or the AZURE_OPENAI_* settings in .env",
    )


def comparison_table(rows: Sequence[Measurement]) -> Any:
    """A ``pandas.DataFrame`` of measurements, one row per model, ``None`` shown as n/a."""
    import pandas as pd

    if not rows:
        raise ValueError("nothing to compare: pass at least one Measurement")
    df = pd.DataFrame([asdict(r) for r in rows]).set_index("model")
    df["parameters"] = df["parameters"].map(lambda n: f"{n / 1e6:,.1f} M" if n == n and n else None)
    digits = {"disk_mb": 0, "memory_mb": 0, "load_s": 2, "tokens_per_s": 1, "perplexity": 1,
              "accuracy": 2}  # fmt: skip
    df = df.astype(object)
    for column, n in digits.items():
        values = [None if x is None or x != x else round(float(x), n) for x in df[column]]
        df[column] = pd.Series([v if n or v is None else int(v) for v in values], index=df.index,
                               dtype=object)  # fmt: skip
    return df.where(df.notna(), "n/a")


def plot_comparison(rows: Sequence[Measurement], axes: Any = None) -> Any:
    """Bar charts of accuracy, tokens/s and memory for every measured row."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = [("accuracy", "task accuracy"), ("tokens_per_s", "tokens / s"),
              ("memory_mb", "memory (MiB)")]  # fmt: skip
    for ax, (field, title) in zip(axes, panels, strict=True):
        shown = [r for r in rows if getattr(r, field) is not None]
        ax.barh([r.model for r in shown], [getattr(r, field) for r in shown], color="tab:blue")
        ax.set_title(title)
        ax.invert_yaxis()
    plt.tight_layout()
    return axes
