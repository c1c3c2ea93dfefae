"""Latency (and accuracy) of the capstone assistant (lesson 08) per turn, on the blind sets.

Plays every question (a fresh guest session each) and every conversation of a set through
``shared.support.build_bot`` twice: the default extractive path, and the path where the
chat model (the configured provider; by default SmolLM2-135M on the local llama.cpp server)
rephrases the extract under the fact check. Per path it prints turns, median, p90 and maximum
seconds per turn (wall time of ``bot.respond``: guardrails, routing, retrieval, SQL and the
model call), the model calls made, and the machine's load average, since on a shared machine
the figures move with whatever else runs. Nothing here is asserted in tests.

    python benchmarks/bench_support.py [--set dev|dev2|...|dev6|dev-all|test]
                                       [--paths extractive model] [--markdown] [--dump rows.jsonl]

``dev-all`` is every dev set together (lesson 08 fits its weights on the first three; the
fourth to sixth were written later and each scored as it arrived). ``--dump`` writes every
scored row of a dev set (question, action, reply, pages) for reading the failures; the frozen
test set is scored, never dumped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from shared.support import BotConfig, build_bot
from shared.support import eval as support_eval

#: the evaluation sets (file-name prefixes in data/support) behind each ``--set``.
SETS = {
    "dev": ("dev",),
    "dev2": ("dev2",),
    "dev3": ("dev3",),
    "dev4": ("dev4",),
    "dev5": ("dev5",),
    "dev6": ("dev6",),
    "dev-all": ("dev", "dev2", "dev3", "dev4", "dev5", "dev6"),
    "test": ("test",),
}


def load(name: str, kind: str) -> list[dict]:
    """The ``kind`` rows ("questions" or "conversations") of every file behind set ``name``."""
    return [
        row for prefix in SETS[name] for row in support_eval.load_jsonl(f"{prefix}_{kind}.jsonl")
    ]


def measure(
    use_model: bool, name: str, dump: str | None = None
) -> tuple[list[float], int, dict[str, tuple[int, int]]]:
    """Seconds per turn over the set's questions and conversations, model texts shown, scores."""
    with tempfile.TemporaryDirectory() as tmp:
        bot = build_bot(BotConfig(use_model=use_model), store_path=Path(tmp) / "bench.db")
        bot.respond(bot.new_session(None), "warm-up: how long does delivery take?")
        questions = support_eval.run_questions(bot, load(name, "questions"))
        turns = support_eval.run_conversations(bot, load(name, "conversations"))
    rows = questions + turns
    if dump:
        with open(dump, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    scores = {**support_eval.score_questions(questions), **support_eval.score_conversations(turns)}
    return [r["latency_s"] for r in rows], sum(r["used_model"] for r in rows), scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="dev", choices=list(SETS))
    p.add_argument("--paths", nargs="+", default=["extractive", "model"])
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--dump", help="write the scored rows of a dev set to this JSON-lines file")
    a = p.parse_args()
    if a.dump and a.set == "test":
        p.error("the frozen test set is scored, never dumped for reading")
    rows = []
    for path in a.paths:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        dump = f"{a.dump}.{path}" if a.dump and len(a.paths) > 1 else a.dump
        seconds, shown, scores = measure(path == "model", a.set, dump)
        for measure_name, (k, n) in scores.items():
            print(f"{path:<10} {measure_name:<24} {support_eval.format_rate(k, n)}")
        wall = time.perf_counter() - t0
        rows.append(
            (
                path,
                len(seconds),
                statistics.median(seconds),
                support_eval.percentile(seconds, 90),
                max(seconds),
                shown,
                wall,
                load_before,
                os.getloadavg()[0],
            )
        )
    head = ("path", "turns", "median s", "p90 s", "max s", "model text shown", "wall s", "load")
    lines = [
        (
            r[0],
            str(r[1]),
            f"{r[2]:.2f}",
            f"{r[3]:.2f}",
            f"{r[4]:.2f}",
            str(r[5]),
            f"{r[6]:.0f}",
            f"{r[7]:.1f}->{r[8]:.1f}",
        )
        for r in rows
    ]
    frame = pd.DataFrame(lines, columns=list(head))
    print(
        frame.to_markdown(index=False, disable_numparse=True)
        if a.markdown
        else frame.to_string(index=False)
    )
    print(f"set: {a.set}; {os.cpu_count()} CPUs; load = 1-minute load average before->after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
