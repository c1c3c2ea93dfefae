"""``make bench``: the course's local server against llama.cpp in-process and transformers.

One run measures, for the same SmolLM2-135M-Instruct weights:

* **the course's server** (``python -m shared.llama_serve``: ``llama_cpp.server`` with a model
  that skips the prompt logits no request reads, started by :func:`shared.server.start_server`
  with its default flags) driven through the ``openai`` SDK, as every lesson drives it, and the
  stock ``python -m llama_cpp.server`` with the same flags (the ratio is printed after the table);
* **llama.cpp in-process** (``llama_cpp.Llama``) with 1 thread, 2 threads, and the server's
  policy (1 decode thread, every core for prompt processing);
* **transformers** ``generate`` in fp32 with 1 torch thread.

Figures per row: decode tokens/s (greedy, ``--new-tokens`` tokens after the first), prefill
tokens/s and time to the first token of a ``--prompt-tokens`` help-centre prompt (the size of a
RAG prompt), each the best of ``--reps`` tries, and the decode and prefill rates as a ratio of the
best in-process llama.cpp row **of the same situation**. The server also gets a prompt-reuse test:
the time to the first token when the same long context comes back with a new question (llama.cpp
keeps the previous prompt's KV cache and only reads the new tail), when two contexts
alternate (a miss unless the server's ``--cache`` option keeps older prompts), and one lesson-03
call (``logprobs=True, top_logprobs=20, max_tokens=1`` on a short new prompt).

Three situations, because a learner's machine is rarely idle:

* ``idle``: nothing else runs;
* ``kernel``: a process embedding sentences with MiniLM on one torch thread (what a notebook kernel
  does while the server answers, e.g. lesson 08);
* ``external``: one CPU-bound process (a busy loop), e.g. a build or a browser tab.

    python benchmarks/bench_local.py [--situations idle kernel external] [--reps 2]
                                     [--new-tokens 128] [--prompt-tokens 1000] [--markdown]

Nothing is asserted; the README's performance section quotes a run. Raw figures go to
``.cache/bench/local-*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import openai
import pandas as pd

from shared import server as local_server
from shared.models import chat_model_dir, prepare_chat_model, smollm2_gguf_path
from shared.paths import cache_dir, configure_environment, repo_root
from shared.processes import free_port

STORY = "Write a short story about a cat who learns to swim."
QUESTIONS = ("How long do I have to return an item?", "Who pays for return shipping?")
REVIEW = (
    "Is this customer review positive or negative? Answer with one word.\n\n"
    "Review: The handle snapped off the mug the first time I used it."
)
COURSE = "course server (SDK), default flags"
STOCK = "stock llama_cpp.server (SDK), same flags"
KERNEL_LOAD = """
import sys, torch
torch.set_num_threads(1)
from sentence_transformers import SentenceTransformer
from shared.models import embedding_model_path
m = SentenceTransformer(str(embedding_model_path()), device="cpu")
print("ready", flush=True)
s = ["Where is my order? It was due on Monday and nothing has arrived yet."] * 16
while True:
    m.encode(s)
"""
EXTERNAL_LOAD = "print('ready', flush=True)\nwhile True:\n    pass\n"


@dataclass
class Row:
    """One engine in one situation."""

    situation: str
    engine: str
    decode: float = float("nan")  # tokens/s after the first token
    prefill: float = float("nan")  # prompt tokens/s
    ttft: float = float("nan")  # s to the first token of the long prompt
    reuse_ttft: float = float("nan")  # same context, new question
    alternate_ttft: float = float("nan")  # context A, B, then A again
    logprobs_s: float = float("nan")  # one top_logprobs=20 call on a short new prompt
    error: str = ""
    notes: list[str] = field(default_factory=list)


def help_centre_ids(tokens: int, tokenize, offset: int = 0) -> list[int]:
    """``tokens`` token ids of the help-centre pages, starting ``offset`` tokens in."""
    pages = sorted((repo_root() / "data" / "kb" / "docs").glob("*.md"))
    text = "\n\n".join(p.read_text() for p in pages)
    return tokenize(text)[offset : offset + tokens]


@contextlib.contextmanager
def situation(name: str):
    """Run the block while the named background load runs (nothing for ``idle``)."""
    if name == "idle":
        yield
        return
    code = KERNEL_LOAD if name == "kernel" else EXTERNAL_LOAD
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=repo_root()
    )
    try:
        proc.stdout.readline()  # "ready": the load is running
        time.sleep(1.0)
        yield
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------ llama.cpp in-process
def bench_inprocess(label: str, n_threads: int, n_batch_threads: int, args, sit: str) -> Row:
    from llama_cpp import Llama

    row = Row(sit, label)
    model = Llama(
        str(smollm2_gguf_path()),
        n_ctx=4096,
        n_threads=n_threads,
        n_threads_batch=n_batch_threads,
        verbose=False,
    )
    ids = help_centre_ids(args.prompt_tokens, lambda t: model.tokenize(t.encode()))
    for _ in range(args.reps):
        model.reset()
        t0 = time.perf_counter()
        model.eval(ids)
        dt = time.perf_counter() - t0
        if not row.prefill == row.prefill or len(ids) / dt > row.prefill:
            row.prefill, row.ttft = len(ids) / dt, dt
        model.reset()
        t0 = first = time.perf_counter()
        n = 0
        for n, _ in enumerate(
            model.create_completion(
                STORY, max_tokens=args.new_tokens, temperature=0, top_k=1, stream=True
            ),
            start=1,
        ):
            if n == 1:
                first = time.perf_counter()
        rate = (n - 1) / (time.perf_counter() - first) if n > 1 else float("nan")
        if not row.decode == row.decode or rate > row.decode:
            row.decode = rate
    return row


# ----------------------------------------------------------------------------- transformers
def bench_transformers(args, sit: str) -> Row:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    row = Row(sit, "transformers generate, fp32, 1 thread")
    folder = chat_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = help_centre_ids(args.prompt_tokens, lambda t: tok(t)["input_ids"])
    long = torch.tensor([ids])
    story = tok(STORY, return_tensors="pt")
    with torch.inference_mode():
        for _ in range(args.reps):
            t0 = time.perf_counter()
            model(long)
            dt = time.perf_counter() - t0
            if not row.prefill == row.prefill or len(ids) / dt > row.prefill:
                row.prefill, row.ttft = len(ids) / dt, dt
            t0 = time.perf_counter()
            model.generate(**story, max_new_tokens=1, do_sample=False)
            one = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(
                **story,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
            )
            n = out.shape[1] - story["input_ids"].shape[1]
            rate = (n - 1) / max(1e-9, time.perf_counter() - t0 - one)
            if not row.decode == row.decode or rate > row.decode:
                row.decode = rate
    return row


# ------------------------------------------------------------------------------ the server
def _first_token_s(client: openai.OpenAI, model: str, text: str) -> float:
    """Seconds to the first streamed token of one greedy request."""
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=2,
        temperature=0,
        stream=True,
    )
    first = float("nan")
    for chunk in stream:
        if first != first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return first


def _logprobs_s(client: openai.OpenAI, model: str, text: str) -> float:
    """Seconds for one lesson-03 label-scoring call (the reply's top-20 log-probabilities)."""
    t0 = time.perf_counter()
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=20,
    )
    return time.perf_counter() - t0


def bench_server(label: str, extra: list[str], args, sit: str, module: str = "") -> Row:
    """The course's server with its default flags (plus ``extra``), through the SDK; ``module``
    runs another server module with the same flags (the stock ``llama_cpp.server``)."""
    row = Row(sit, label)
    port = free_port()
    probe = local_server.LocalServer(
        "llamacpp",
        local_server.LOCAL_MODEL_ALIAS,
        str(smollm2_gguf_path()),
        "127.0.0.1",
        port,
        0,
        "",
    )
    cmd = local_server.command_line(probe) + extra
    if module:
        cmd[cmd.index("-m") + 1] = module
    log = cache_dir("bench") / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = openai.OpenAI(
            base_url=probe.url, api_key="not-needed", timeout=600, max_retries=20
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    row.error = f"server did not start; see {log}"
                    return row
                time.sleep(0.3)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(chat_model_dir())
        _first_token_s(client, probe.model, "Hello")  # warm-up: the weights paged in

        def prompt_tokens(text: str) -> int:
            messages = [{"role": "user", "content": text}]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return len(tok(text, add_special_tokens=False)["input_ids"])

        ids = help_centre_ids(args.prompt_tokens, lambda t: tok(t)["input_ids"])
        other = help_centre_ids(args.prompt_tokens, lambda t: tok(t)["input_ids"], len(ids))
        contexts = [tok.decode(ids), tok.decode(other)]  # two different help-centre passages
        for rep in range(args.reps):
            nonce = f"[request {sit}-{rep}-{time.time_ns()}]\n"  # no prefix shared with earlier
            ttft = _first_token_s(client, probe.model, nonce + contexts[0])
            if not row.ttft == row.ttft or ttft < row.ttft:
                row.ttft, row.prefill = ttft, prompt_tokens(nonce + contexts[0]) / ttft
            reuse = _first_token_s(
                client, probe.model, nonce + contexts[0] + "\n\n" + QUESTIONS[rep % 2]
            )
            row.reuse_ttft = (
                min(row.reuse_ttft, reuse) if row.reuse_ttft == row.reuse_ttft else reuse
            )
            _first_token_s(client, probe.model, nonce + contexts[1])
            alt = _first_token_s(client, probe.model, nonce + contexts[0] + "\n\nThanks.")
            row.alternate_ttft = (
                min(row.alternate_ttft, alt) if row.alternate_ttft == row.alternate_ttft else alt
            )
            first, parts = None, []
            stream = client.chat.completions.create(
                model=probe.model,
                messages=[{"role": "user", "content": STORY}],
                max_tokens=args.new_tokens,
                temperature=0,
                stream=True,
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    parts.append(chunk.choices[0].delta.content)
            n = len(tok("".join(parts), add_special_tokens=False)["input_ids"])
            if first and n > 1:
                rate = (n - 1) / (time.perf_counter() - first)
                row.decode = max(row.decode, rate) if row.decode == row.decode else rate
            lp = _logprobs_s(client, probe.model, nonce + REVIEW)  # the cache holds the story
            row.logprobs_s = min(row.logprobs_s, lp) if row.logprobs_s == row.logprobs_s else lp
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    return row


# ------------------------------------------------------------------------------------ table
def fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)


def table(rows: list[Row], markdown: bool) -> str:
    head = [
        "situation",
        "engine",
        "decode tok/s",
        "x best",
        "prefill tok/s",
        "x best",
        "first token s",
        "same context s",
        "alternating s",
        "logprobs call s",
    ]
    lines = []
    for sit in dict.fromkeys(r.situation for r in rows):
        inproc = [r for r in rows if r.situation == sit and r.engine.startswith("llama.cpp in")]
        best_d = max((r.decode for r in inproc if r.decode == r.decode), default=float("nan"))
        best_p = max((r.prefill for r in inproc if r.prefill == r.prefill), default=float("nan"))
        for r in (r for r in rows if r.situation == sit):
            if r.error:
                lines.append([sit, r.engine, f"failed: {r.error}"] + [""] * 7)
                continue
            lines.append(
                [
                    sit,
                    r.engine,
                    fmt(r.decode, ".1f"),
                    fmt(r.decode / best_d, ".2f"),
                    fmt(r.prefill, ".0f"),
                    fmt(r.prefill / best_p, ".2f"),
                    fmt(r.ttft, ".2f"),
                    fmt(r.reuse_ttft, ".2f"),
                    fmt(r.alternate_ttft, ".2f"),
                    fmt(r.logprobs_s, ".2f"),
                ]
            )
    frame = pd.DataFrame(lines, columns=head)
    return (
        frame.to_markdown(index=False, disable_numparse=True)
        if markdown
        else frame.to_string(index=False)
    )


def versus_stock(rows: list[Row]) -> str:
    """The course's server over the stock ``llama_cpp.server``, per situation (>1: faster)."""
    lines = []
    for sit in dict.fromkeys(r.situation for r in rows):
        ours, stock = (
            next((r for r in rows if r.situation == sit and r.engine == e and not r.error), None)
            for e in (COURSE, STOCK)
        )
        if ours and stock:
            lines.append(
                f"{sit}: course server / stock llama_cpp.server: prefill "
                f"{fmt(ours.prefill / stock.prefill, '.2f')}x, decode "
                f"{fmt(ours.decode / stock.decode, '.2f')}x; first token in "
                f"{fmt(ours.ttft / stock.ttft, '.2f')}x the time, logprobs call in "
                f"{fmt(ours.logprobs_s / stock.logprobs_s, '.2f')}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--situations",
        nargs="+",
        default=["idle", "kernel", "external"],
        choices=["idle", "kernel", "external"],
    )
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    configure_environment()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare_chat_model()
    cores = os.cpu_count() or 2
    load0 = os.getloadavg()[0]
    started = datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"bench_local: {started}, {cores} cores, load average {load0:.1f}", flush=True)
    rows: list[Row] = []
    for sit in args.situations:
        with situation(sit):
            print(f"-- {sit}", flush=True)
            start = len(rows)
            rows.append(bench_server(COURSE, [], args, sit))
            rows.append(bench_server(STOCK, [], args, sit, module="llama_cpp.server"))
            rows.append(
                bench_server("course server (SDK), --cache True", ["--cache", "True"], args, sit)
            )
            rows.append(bench_inprocess("llama.cpp in-process, 1 thread", 1, 1, args, sit))
            rows.append(bench_inprocess("llama.cpp in-process, 2 threads", 2, 2, args, sit))
            rows.append(
                bench_inprocess(
                    f"llama.cpp in-process, 1 decode / {cores} prompt threads", 1, cores, args, sit
                )
            )
            if not args.no_transformers:
                rows.append(bench_transformers(args, sit))
            for r in rows[start:]:
                print(
                    f"   {r.engine}: decode {fmt(r.decode, '.1f')}, prefill "
                    f"{fmt(r.prefill, '.0f')}",
                    flush=True,
                )
    load1 = os.getloadavg()[0]
    print()
    print(table(rows, args.markdown))
    print(versus_stock(rows))
    print(
        f"\nbest of {args.reps}; {args.new_tokens} new tokens; {args.prompt_tokens}-token "
        f"prompt; x best = over the best in-process llama.cpp row of the same situation. "
        f"Load average {load0:.1f} -> {load1:.1f} on {cores} cores."
    )
    out = cache_dir("bench") / f"local-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {"started": started, "args": vars(args), "rows": [asdict(r) for r in rows]}, indent=2
        )
    )
    print(f"raw figures: {Path(out).name} in .cache/bench/")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
