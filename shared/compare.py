"""Lesson 02 (model comparison): measure models side by side on your own small workload.

What a comparison needs, measured rather than quoted:

* size: :func:`count_parameters` (a loaded model) or :func:`count_parameters_on_disk` (a GGUF
  file or a safetensors folder, without loading it), :func:`path_size_mb`,
  :func:`tensor_memory_mb`, :func:`process_memory_mb`, and :func:`weights_memory_gb` for the
  back-of-the-envelope arithmetic (parameters x bits per weight);
* speed: :func:`timed`, :func:`decode_speed` (in-process transformers) and
  :func:`client_decode_speed` (any OpenAI-style endpoint, local server or cloud);
* quality: the intent workload (:func:`load_workload`, :func:`intent_prompt` with the label
  descriptions every contender gets, :func:`parse_label`); the notebook scores whole labels by
  log-likelihood itself; :func:`classify_with_client` (free answers, for a cloud row) and
  :func:`classify_with_embeddings` (nearest label text) are reused;
* honest reporting: :func:`wilson_interval`, :func:`mcnemar_exact`, :class:`Measurement`,
  :func:`not_configured`, :func:`comparison_table`, :func:`plot_comparison` (intervals and a
  chance line), and the exercise checks (they never print the answer).
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

from shared import metrics

__all__ = [
    "Measurement",
    "check_majority_baseline",
    "check_kv_cache_mb",
    "classify_with_client",
    "classify_with_embeddings",
    "client_decode_speed",
    "comparison_table",
    "count_parameters",
    "count_parameters_on_disk",
    "decode_speed",
    "intent_prompt",
    "load_workload",
    "mcnemar_exact",
    "not_configured",
    "parse_label",
    "path_size_mb",
    "plot_comparison",
    "process_memory_mb",
    "running_server",
    "tensor_memory_mb",
    "timed",
    "weights_memory_gb",
    "wilson_interval",
]

MB = 2**20  # sizes in the table are MiB (2**20 bytes); weights_memory_gb uses GB (10**9 bytes)


@dataclass(frozen=True)
class Measurement:
    """One row of the comparison table; ``None`` means "does not apply" or "not measured".

    Accuracy is stored as counts (``correct`` of ``items``) so the table and the plot can show a
    95 % Wilson interval next to it.
    """

    model: str
    kind: str  # e.g. "decoder, in-process fp32"
    parameters: int | None = None
    disk_mb: float | None = None
    memory_mb: float | None = None
    load_s: float | None = None
    tokens_per_s: float | None = None
    perplexity: float | None = None
    correct: int | None = None
    items: int | None = None
    note: str = ""

    @property
    def accuracy(self) -> float | None:
        """``correct / items``, or None when accuracy was not measured."""
        return None if not self.items or self.correct is None else self.correct / self.items


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


def running_server(port: int, patience: float = 180.0) -> Any:
    """The course server on ``port`` (``shared.server.LocalServer``), waiting while it is busy.

    The shared server answers one request at a time, so while it serves someone else's long
    generation it does not list its models and ``server_status`` says None; ask again.
    """
    from shared.llm import server_status

    deadline = time.monotonic() + patience
    while True:
        server = server_status(port)
        if server is not None or time.monotonic() > deadline:
            return server
        time.sleep(1.0)


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


def intent_prompt(text: str, descriptions: dict[str, str]) -> str:
    """The instruction a decoder gets: every label with its description, then the message.

    Every contender sees the same label information: the encoder compares the message with the
    same ``label: description`` lines.
    """
    lines = "\n".join(f"{label}: {about}" for label, about in descriptions.items())
    return (
        f"Classify the customer message into one of these categories:\n{lines}\n\n"
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


def classify_with_client(
    client: Any,
    model: str,
    texts: Sequence[str],
    descriptions: dict[str, str],
    max_tokens: int = 4,
) -> list[str]:
    """The task through an OpenAI-style endpoint (e.g. a cloud model), greedy, label parsed."""
    answers = []
    for text in texts:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": intent_prompt(text, descriptions)}],
            max_tokens=max_tokens,
            temperature=0,
        )
        answers.append(reply.choices[0].message.content or "")
    return [parse_label(a, list(descriptions)) for a in answers]


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


# ------------------------------------------------------------------------ statistics
def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of ``successes / n`` (:func:`shared.metrics.wilson`)."""
    return metrics.wilson(successes, n, z)


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> tuple[int, int, float]:
    """Paired comparison of two classifiers on the same items: McNemar's exact test.

    Returns ``(only_a, only_b, p)`` (:func:`shared.metrics.mcnemar_exact`).
    """
    return metrics.mcnemar_exact(a_right, b_right)


# ------------------------------------------------------------------------ the report
def not_configured(name: str = "cloud model") -> Measurement:
    """The row for a provider that has no key configured: not an error, just not measured."""
    return Measurement(
        model=name,
        kind="service (API)",
        note="not configured: set OPENAI_API_KEY or the AZURE_OPENAI_* settings in .env",
    )


def comparison_table(rows: Sequence[Measurement]) -> Any:
    """A ``pandas.DataFrame`` of measurements, one row per model, ``None`` shown as n/a.

    Accuracy is shown as ``0.79 (95/120, 0.71-0.86)``: rate, counts and 95 % Wilson interval.
    """
    import pandas as pd

    if not rows:
        raise ValueError("nothing to compare: pass at least one Measurement")
    records = []
    for r in rows:
        rec = asdict(r)
        acc = r.accuracy
        if acc is None:
            rec["accuracy (95 % CI)"] = None
        else:
            lo, hi = wilson_interval(r.correct, r.items)
            rec["accuracy (95 % CI)"] = f"{acc:.2f} ({r.correct}/{r.items}, {lo:.2f}-{hi:.2f})"
        del rec["correct"], rec["items"]
        records.append(rec)
    df = pd.DataFrame(records).set_index("model")
    df = df[[c for c in df.columns if c != "note"] + ["note"]]
    df["parameters"] = df["parameters"].map(lambda n: f"{n / 1e6:,.1f} M" if n == n and n else None)
    digits = {"disk_mb": 0, "memory_mb": 0, "load_s": 2, "tokens_per_s": 1, "perplexity": 1}
    df = df.astype(object)
    for column, n in digits.items():
        values = [None if x is None or x != x else round(float(x), n) for x in df[column]]
        values = [v if n or v is None else int(v) for v in values]
        df[column] = pd.Series(values, index=df.index, dtype=object)
    return df.where(df.notna(), "n/a").rename(
        columns={"disk_mb": "disk_MiB", "memory_mb": "memory_MiB"}
    )


def plot_comparison(
    rows: Sequence[Measurement], chance: float | None = None, axes: Any = None
) -> Any:
    """Accuracy with 95 % Wilson intervals (and a chance line), tokens/s and memory per row."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    acc_rows = [r for r in rows if r.accuracy is not None]
    ax = axes[0]
    ys = range(len(acc_rows))
    accs = [r.accuracy for r in acc_rows]
    cis = [wilson_interval(r.correct, r.items) for r in acc_rows]
    err = [
        [a - lo for a, (lo, _) in zip(accs, cis, strict=True)],
        [hi - a for a, (_, hi) in zip(accs, cis, strict=True)],
    ]
    ax.barh(list(ys), accs, xerr=err, color="tab:blue", capsize=3)
    for y, a in zip(ys, accs, strict=True):
        ax.text(0.01, y, f"{a:.2f}", va="center", color="white", fontsize=8)
    if chance is not None:
        ax.axvline(chance, color="tab:red", ls="--", lw=1)
        ax.text(chance, -0.6, " chance", color="tab:red", fontsize=8)
    ax.set_yticks(list(ys), [r.model for r in acc_rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title("accuracy, 95 % Wilson interval")
    panels = [("tokens_per_s", "decode tokens / s"), ("memory_mb", "memory (MiB)")]
    for ax, (field, title) in zip(axes[1:], panels, strict=True):
        shown = [r for r in rows if getattr(r, field) is not None]
        vals = [getattr(r, field) for r in shown]
        ax.barh(range(len(shown)), vals, color="tab:gray")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_yticks(range(len(shown)), [r.model for r in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
    plt.tight_layout()
    return axes


# ------------------------------------------------------------------------ exercise checks
def check_majority_baseline(seed: int, answer: Any) -> bool:
    """Exercise 1: the majority-class accuracy on the seeded subset (see the notebook)."""
    import random

    items = load_workload(_test_path())
    rng = random.Random(seed)
    keep = [it for it in items if it["label"] != "technical" or rng.random() < 0.3]
    labels = [it["label"] for it in keep]
    majority = max(sorted(set(labels)), key=labels.count)
    try:
        return math.isclose(float(answer), labels.count(majority) / len(labels), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _test_path() -> Path:
    from shared.paths import data_path

    return data_path("compare", "intents_test.jsonl")


def check_kv_cache_mb(config: Any, n_tokens: int, answer: Any) -> bool:
    """Exercise 2: key/value cache size in MiB of ``n_tokens`` tokens in fp32 for ``config``."""
    head_dim = config.hidden_size // config.num_attention_heads
    n_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * n_tokens * 4
    try:
        return math.isclose(float(answer), n_bytes / MB, rel_tol=1e-6)
    except (TypeError, ValueError):
        return False
