"""``make bench``: compare the local inference engines behind the course's OpenAI-compatible server.

Every candidate serves the same SmolLM2-135M-Instruct weights (the packaged Q4_1 GGUF, or the
folder converted from it) through ``shared.llm.start_server`` on a free port, exactly as the
lessons get it, and is driven through the official ``openai`` SDK with streaming:

* ready: seconds from launching the server until ``/v1/models`` answers;
* cold reply: the first request's total time (lazy loading, compilation, warm-up);
* first token: median time to the first streamed token, warm;
* decode: median tokens/s after the first token (greedy, fixed prompts, several rounds);
* tokens per CPU second: streamed tokens over the server's CPU time for them -- how fast the
  engine is on a core of its own, whatever else the machine was doing during the run;
* peak RSS: the server process tree's resident memory, sampled through the whole run (psutil);
* quality: greedy answers to short factual questions that contain the expected word;
* same start: answers whose first words equal the first engine's (the weights are the same,
  the arithmetic is not: Q4_1 dot products in llama.cpp, fp32 in torch, so greedy paths can part);
* streams: ``stream=True`` through the SDK and ``ChatOpenAI.stream`` through LangChain both
  deliver more than one chunk.

Rounds are interleaved across engines (all servers up, each round visits every engine), so a
machine whose load drifts during the run biases no engine. Nothing here is asserted in tests;
the README's performance section quotes a run of this script.

Each candidate runs with a fixed number of compute threads (``OMP_NUM_THREADS``, which
``shared.llm`` passes on to both engines).

    python benchmarks/bench_engines.py [--engines llamacpp transformers] [--rounds 3]
                                       [--max-tokens 64] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

import openai
import pandas as pd
import psutil

from shared import llm
from shared.config import FriendlyError
from shared.models import chat_model_dir, prepare_chat_model, smollm2_gguf_path
from shared.paths import cache_dir


@dataclass(frozen=True)
class Candidate:
    """An engine of ``shared.llm`` with a compute-thread count (``OMP_NUM_THREADS``)."""

    label: str
    engine: str
    threads: int


CANDIDATES = {
    "llamacpp": Candidate("llama.cpp server, GGUF Q4_1, 1 thread", "llamacpp", 1),
    "llamacpp-2t": Candidate("llama.cpp server, GGUF Q4_1, 2 threads", "llamacpp", 2),
    "transformers": Candidate("transformers serve, fp32, 1 thread", "transformers", 1),
    "transformers-compile": Candidate(
        "transformers serve --compile, 1 thread", "transformers-compile", 1
    ),
    "transformers-2t": Candidate("transformers serve, fp32, 2 threads", "transformers", 2),
}
DEFAULT_SET = ["llamacpp", "llamacpp-2t", "transformers", "transformers-compile"]
REFERENCE = "llamacpp"

SPEED_PROMPTS = [
    "Write a short story about a cat who learns to swim.",
    "Explain how a bicycle works to a ten-year-old.",
    "Describe a busy morning at a train station.",
]

# (question, accepted substrings) -- short facts SmolLM2-135M knows or should know.
QUALITY_SET = [
    ("What is the capital of France? Answer in one word.", ("paris",)),
    ("What is the capital of Japan? Answer in one word.", ("tokyo",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Who wrote the play Romeo and Juliet?", ("shakespeare",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What colour is the sky on a clear sunny day?", ("blue",)),
    ("What is the chemical formula of water?", ("h2o", "h₂o")),
    ("Which language is mainly spoken in Spain?", ("spanish",)),
    ("What is the opposite of hot?", ("cold",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What do bees make?", ("honey",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
]
SAME_WORDS = 6  # answers "agree" when their first words are identical


@dataclass
class Result:
    """Everything measured for one engine."""

    key: str
    label: str
    error: str | None = None
    cpu_s: float = 0.0
    ready_s: float = float("nan")
    cold_s: float = float("nan")
    ttft_s: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    peak_rss_mb: float = float("nan")
    answers: list[str] = field(default_factory=list)
    quality: int = 0
    sdk_stream: bool = False
    langchain_stream: bool = False


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(self.pid)
                rss = proc.memory_info().rss
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                self.peak = max(self.peak, rss)
            self._stop_event.wait(self.every_s)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop_event.set()
        self.join(timeout=2)
        return self.peak / 2**20


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its children."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stream_once(
    c: openai.OpenAI, model: str, prompt: str, max_tokens: int, count_tokens
) -> tuple[float, float, int, str, int]:
    """(first-token s, total s, tokens, text, chunks) of one greedy streamed reply."""
    start = time.perf_counter()
    first = last = None
    parts: list[str] = []
    stream = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            parts.append(chunk.choices[0].delta.content)
    text = "".join(parts)
    if first is None:
        raise RuntimeError(f"no token streamed for {prompt!r}")
    return first - start, last - start, count_tokens(text), text, len(parts)


def ask(c: openai.OpenAI, model: str, prompt: str, max_tokens: int = 24) -> str:
    """A greedy, non-streamed answer."""
    reply = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def langchain_streams(server: llm.LocalServer) -> bool:
    """True when ``langchain_openai.ChatOpenAI.stream`` yields several non-empty chunks."""
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=server.model, base_url=server.url, api_key="not-needed",
                      temperature=0, max_tokens=12)  # fmt: skip
    chunks = [c.content for c in chat.stream("Name three colours.") if c.content]
    return len(chunks) > 1 and bool("".join(chunks).strip())


def source_for(engine: str) -> str:
    """What each engine serves: the packaged GGUF for llama.cpp, the converted folder otherwise."""
    return str(smollm2_gguf_path()) if engine == "llamacpp" else str(chat_model_dir())


def engine_available(engine: str) -> str | None:
    """None when the engine can run here, else why not."""
    if engine == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    return None


def pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)  # NaN -> "-"


def table(results: list[Result], n_quality: int, markdown: bool) -> str:
    """The result table, plain text or Markdown, with each engine's decode rate over llama.cpp's."""
    ref = next((r for r in results if r.key == REFERENCE and r.rate), None)
    ref_rate = statistics.median(ref.rate) if ref else float("nan")
    head = ["engine", "ready s", "cold reply s", "first token ms", "decode tok/s",
            "x llama.cpp", "tok per CPU s", "peak RSS MB", "quality", "same start",
            "streams sdk/lc"]  # fmt: skip
    rows = []
    base = next((r for r in results if r.answers), None)
    for r in results:
        if r.error:
            rows.append([r.label, f"failed: {r.error}"] + [""] * (len(head) - 2))
            continue
        rate = statistics.median(r.rate) if r.rate else float("nan")
        same = sum(
            a.split()[:SAME_WORDS] == b.split()[:SAME_WORDS]
            for a, b in zip(r.answers, base.answers if base else [], strict=False)
        )
        rows.append([
            r.label,
            fmt(r.ready_s, ".1f"),
            fmt(r.cold_s, ".1f"),
            fmt(statistics.median(r.ttft_s) * 1000 if r.ttft_s else float("nan"), ".0f"),
            fmt(rate, ".1f"),
            fmt(rate / ref_rate, ".2f"),
            fmt(sum(r.tokens) / r.cpu_s if r.cpu_s else float("nan"), ".0f"),
            fmt(r.peak_rss_mb, ".0f"),
            f"{r.quality}/{n_quality}",
            f"{same}/{len(r.answers)}",
            f"{'yes' if r.sdk_stream else 'NO'}/{'yes' if r.langchain_stream else 'NO'}",
        ])  # fmt: skip
    frame = pd.DataFrame(rows, columns=head)
    return (
        frame.to_markdown(index=False, disable_numparse=True)
        if markdown
        else frame.to_string(index=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=DEFAULT_SET, choices=list(CANDIDATES))
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the speed prompts")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = prepare_chat_model()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)

    def count_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    load0 = os.getloadavg()
    started = datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"bench: {started}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load0[0]:.1f}", flush=True)  # fmt: skip
    results = [Result(k, CANDIDATES[k].label) for k in args.engines]
    servers: dict[str, tuple[llm.LocalServer, openai.OpenAI, RssSampler]] = {}
    try:
        for r in results:  # start one after the other, so ready times do not compete
            cand = CANDIDATES[r.key]
            r.error = engine_available(cand.engine)
            if r.error:
                continue
            port = free_port()
            print(f"starting {r.label} on port {port} ...", flush=True)
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = str(cand.threads)  # read by shared.server._command
            t0 = time.perf_counter()
            try:
                server = llm.start_server(
                    source=source_for(cand.engine), engine=cand.engine, port=port
                )
            except (FriendlyError, ValueError) as exc:
                r.error = str(exc).splitlines()[0][:120]
                continue
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
            r.ready_s = time.perf_counter() - t0
            sampler = RssSampler(server.pid)
            sampler.start()
            c = openai.OpenAI(base_url=server.url, api_key="not-needed", timeout=600, max_retries=0)
            servers[r.key] = (server, c, sampler)
            try:
                t0 = time.perf_counter()
                ask(c, server.model, SPEED_PROMPTS[0], max_tokens=8)
                r.cold_s = time.perf_counter() - t0
            except openai.APIError as exc:
                r.error = f"first request failed ({type(exc).__name__}); see {server.log}"

        live = [r for r in results if not r.error]
        for rnd in range(args.rounds):
            for prompt in SPEED_PROMPTS:
                for r in live:
                    if r.error:
                        continue
                    server, c, _ = servers[r.key]
                    cpu0 = cpu_seconds(server.pid)
                    try:
                        ttft, total, n, _, chunks = stream_once(
                            c, server.model, prompt, args.max_tokens, count_tokens
                        )
                        r.cpu_s += cpu_seconds(server.pid) - cpu0
                    except (openai.APIError, RuntimeError) as exc:
                        r.error = f"{type(exc).__name__} in round {rnd + 1}; see {server.log}"
                        continue
                    r.ttft_s.append(ttft)
                    r.tokens.append(n)
                    r.sdk_stream = r.sdk_stream or chunks > 1
                    if n > 1 and total > ttft:
                        r.rate.append((n - 1) / (total - ttft))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)

        for r in live:
            if r.error:
                continue
            server, c, _ = servers[r.key]
            try:
                for question, expected in QUALITY_SET:
                    answer = ask(c, server.model, question)
                    r.answers.append(answer)
                    r.quality += any(e in answer.lower() for e in expected)
                r.langchain_stream = langchain_streams(server)
            except openai.APIError as exc:
                r.error = f"{type(exc).__name__} in the quality set; see {server.log}"
    finally:
        for key, (server, _, sampler) in servers.items():
            next(r for r in results if r.key == key).peak_rss_mb = sampler.stop()
            llm.stop_server(server.port)

    load1 = os.getloadavg()
    print()
    print(table(results, len(QUALITY_SET), args.markdown))
    print(f"\n{args.rounds} rounds x {len(SPEED_PROMPTS)} prompts, greedy, max_tokens="
          f"{args.max_tokens}; medians. Load average {load0[0]:.1f} -> {load1[0]:.1f} on "
          f"{os.cpu_count()} cores. llama-cpp-python {pkg('llama_cpp_python')}, transformers "
          f"{pkg('transformers')}, torch {pkg('torch')}.")  # fmt: skip
    out = cache_dir("bench") / f"engines-{datetime.now():%Y%m%d-%H%M%S}.json"
    payload = {
        "started": started,
        "cores": os.cpu_count(),
        "load_average": [load0[0], load1[0]],
        "args": vars(args),
        "results": [r.__dict__ for r in results],
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"raw figures: {out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
