"""shared.llama_serve: the server's model keeps only the logits it reads, and answers the same.

The stock ``llama_cpp.Llama(logits_all=True)`` (what ``python -m llama_cpp.server`` serves) and
:class:`~shared.llama_serve.LastLogitsLlama` run the same requests in the same order, so each
request meets the same prompt cache: a first prompt, an exact repeat, a conversation continued
(prefix reuse), a prompt longer than one 512-token batch, streaming, ``logit_bias`` with
``logprobs`` as lesson 03 scores labels, and the legacy completions endpoint. Greedy text must be
identical and the top-20 log-probabilities the same tokens within ``ATOL``.

``ATOL``: llama.cpp computes the kept rows with the same kernels on the same KV cache, only on
one row of the output layer instead of every row; float32 log-softmax over 49,152 logits of
magnitude ~30 rounds at ~4e-6, so 1e-4 leaves room for a different summation order while staying
100x below the 0.01 the lessons print. The measured difference is 0 (bit-identical rows).
"""

from __future__ import annotations

import math

import llama_cpp
import numpy as np
import openai
import pytest

from shared import llama_serve
from shared import server as course_server
from shared.llama_serve import ECHO_LOGPROBS_ERROR, LastLogitsLlama
from shared.models import smollm2_gguf_path
from shared.paths import repo_root

ATOL = 1e-4
TOP = 20
REVIEW = "Is this customer review positive or negative? Answer with one word.\n\nReview: {}"
LABELS = ("Positive", "positive", "Negative", "negative")
CHAT = [
    {"role": "system", "content": "You are a helpful assistant for a home-goods shop."},
    {"role": "user", "content": "My mug arrived with a chipped handle. What can I do?"},
    {"role": "assistant", "content": "I'm sorry to hear that! You can ask for a replacement."},
    {"role": "user", "content": "How long does a replacement take?"},
]
CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\nThe answer is "


def _pages(chars: int = 2400) -> str:
    pages = sorted((repo_root() / "data" / "kb" / "docs").glob("*.md"))
    return "\n\n".join(p.read_text() for p in pages)[:chars]


def _load(cls: type[llama_cpp.Llama], **kw) -> llama_cpp.Llama:
    # one thread: steady when another process computes (the results do not depend on it)
    settings = {"n_ctx": 4096, "n_threads": 1, "n_threads_batch": 1, "logits_all": True}
    return cls(str(smollm2_gguf_path()), verbose=False, **(settings | kw))


def _chat(model: llama_cpp.Llama, messages: list[dict], **kw) -> dict:
    return model.create_chat_completion(
        messages, temperature=0, logprobs=True, top_logprobs=TOP, **kw
    )


def _stream(model: llama_cpp.Llama, text: str) -> dict:
    content = []
    for chunk in _chat(model, [{"role": "user", "content": text}], max_tokens=12, stream=True):
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            content += choice["logprobs"]["content"]
    return {"text": "".join(c["token"] for c in content), "content": content}


def _label_ids(model: llama_cpp.Llama) -> dict[str, float]:
    ids = [model.tokenize(t.encode(), add_bos=False) for t in LABELS]
    assert all(len(i) == 1 for i in ids)
    return {str(i[0]): 100 for i in ids}


def _session(model: llama_cpp.Llama) -> dict[str, tuple[dict, list[int]]]:
    """Every request of the comparison, in order; each with the token counts ``eval`` got."""
    calls: list[int] = []
    stock_eval = model.eval
    model.eval = lambda tokens: (calls.append(len(tokens)), stock_eval(tokens))[1]

    def run(request) -> tuple[dict, list[int]]:
        calls.clear()
        out = request()
        return out, list(calls)

    review = [{"role": "user", "content": REVIEW.format("The handle snapped off the mug.")}]
    rag = [{"role": "user", "content": f"{_pages()}\n\nHow long do I have to return an item?"}]
    story = [{"role": "user", "content": "Write a short story about a cat who learns to swim."}]
    bias = _label_ids(model)
    out = {
        "first token": run(lambda: _chat(model, review, max_tokens=1)),
        "exact repeat": run(lambda: _chat(model, review, max_tokens=1)),
        "conversation": run(lambda: _chat(model, CHAT[:2], max_tokens=16)),
        "conversation continued": run(lambda: _chat(model, CHAT, max_tokens=16)),
        "two batches": run(lambda: _chat(model, rag, max_tokens=16)),
        "story": run(lambda: _chat(model, story, max_tokens=24)),
        "stream": run(lambda: _stream(model, "Write a short poem about the sea.")),
        "logit_bias": run(lambda: _chat(model, review, max_tokens=1, logit_bias=bias)),
        "completion": run(
            lambda: model.create_completion(
                CHATML.format("What is 3 + 4?"), max_tokens=4, temperature=0, logprobs=TOP
            )
        ),
    }
    del model.eval
    return out


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    """(stock, ours): the same requests through both classes."""
    return _session(_load(llama_cpp.Llama)), _session(_load(LastLogitsLlama))


def _positions(out: dict) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """(token, logprob, top) for each generated position, chat or completion."""
    if "content" in out:
        content = out["content"]
    elif "text" in out["choices"][0]:  # a completion
        lp = out["choices"][0]["logprobs"]
        return [
            (tok, lp_tok, sorted(top.items(), key=lambda kv: -kv[1]))
            for tok, lp_tok, top in zip(
                lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True
            )
        ]
    else:
        content = out["choices"][0]["logprobs"]["content"]
    return [
        (c["token"], c["logprob"], [(t["token"], t["logprob"]) for t in c["top_logprobs"]])
        for c in content
    ]


def _max_difference(stock: dict, ours: dict) -> float:
    """The largest log-probability difference; asserts the same tokens in the same order."""
    a, b = _positions(stock), _positions(ours)
    assert a and [p[0] for p in a] == [p[0] for p in b], "different greedy tokens"
    worst = 0.0
    for (_, lp_a, top_a), (_, lp_b, top_b) in zip(a, b, strict=True):
        assert [t for t, _ in top_a] == [t for t, _ in top_b], "different top tokens"
        pairs = [(lp_a, lp_b)] + [(x, y) for (_, x), (_, y) in zip(top_a, top_b, strict=True)]
        diffs = [abs(x - y) for x, y in pairs]
        assert all(math.isfinite(d) for d in diffs)
        worst = max(worst, *diffs)
    return worst


REQUESTS = [
    "first token",
    "exact repeat",
    "conversation",
    "conversation continued",
    "two batches",
    "story",
    "stream",
    "logit_bias",
    "completion",
]


@pytest.mark.slow  # loads the model twice (about 30 s on 2 cores)
@pytest.mark.parametrize("request_name", REQUESTS)
def test_same_greedy_text_and_log_probabilities(both, request_name: str) -> None:
    (stock, _), (ours, _) = both[0][request_name], both[1][request_name]
    worst = _max_difference(stock, ours)
    print(f"{request_name}: max |logprob difference| {worst:.2e}")
    assert worst <= ATOL
    if "choices" in stock:  # the same reply text and finish reason
        same = ("message", "text", "finish_reason")
        a, b = stock["choices"][0], ours["choices"][0]
        assert {k: a.get(k) for k in same} == {k: b.get(k) for k in same}


@pytest.mark.slow
def test_the_cache_paths_are_the_ones_named(both) -> None:
    """The comparison goes through llama-cpp-python's cache paths, not fresh prompts only."""
    ours = both[1]
    assert ours["exact repeat"][1] == [0]  # the exact prompt was cached: nothing decoded
    first, again = ours["conversation"][1][0], ours["conversation continued"][1][0]
    assert 0 < again < first  # only the new turn was read
    assert ours["two batches"][0]["usage"]["prompt_tokens"] > 512  # two batches of 512
    assert ours["logit_bias"][0]["choices"][0]["message"]["content"] in LABELS


@pytest.mark.slow
def test_rows_kept_are_the_stock_rows_and_echo_logprobs_is_refused() -> None:
    stock, ours = _load(llama_cpp.Llama, n_batch=64), _load(LastLogitsLlama, n_batch=64)
    ids = stock.tokenize(_pages(600).encode())
    assert 128 < len(ids) < 192
    for model in (stock, ours):
        model.eval(ids)
    for row in (63, 127, len(ids) - 1):  # the last token of each batch
        assert np.array_equal(stock.scores[row], ours.scores[row])

    prompt = "The lamp shop opens at"
    echoed = stock.create_completion(prompt, max_tokens=2, echo=True, logprobs=2)
    assert echoed["choices"][0]["logprobs"]["tokens"]  # stock answers with prompt rows
    with pytest.raises(ValueError, match="echo=True with logprobs") as refused:
        ours.create_completion(prompt, max_tokens=2, echo=True, logprobs=2)
    assert "llama_cpp.server" in str(refused.value)  # says what to do instead
    # without logprobs, or streamed (never echoes the prompt), nothing reads the prompt rows
    assert ours.create_completion(prompt, max_tokens=2, echo=True)["choices"][0]["text"]
    assert list(ours.create_completion(prompt, max_tokens=2, echo=True, logprobs=2, stream=True))


@pytest.mark.slow
def test_logits_all_false_keeps_the_stock_path() -> None:
    model = _load(LastLogitsLlama, logits_all=False, n_batch=64)  # scores has 64 rows only
    ids = model.tokenize(_pages(600).encode())
    model.eval(ids)
    assert model.n_tokens == len(ids)


def test_importing_changes_nothing_and_main_installs_the_class(monkeypatch) -> None:
    import llama_cpp.server.__main__ as server_main
    from llama_cpp.server.errors import RouteErrorHandler

    assert llama_cpp.Llama is llama_cpp.llama.Llama  # importing shared.llama_serve patched nothing
    monkeypatch.setattr(llama_cpp, "Llama", llama_cpp.Llama)  # restored after the test
    patterns = dict(RouteErrorHandler.pattern_and_formatters)
    monkeypatch.setattr(RouteErrorHandler, "pattern_and_formatters", patterns)
    seen = []
    monkeypatch.setattr(server_main, "main", lambda: seen.append(llama_cpp.Llama))
    llama_serve.main()
    assert seen == [LastLogitsLlama]
    status, body = next(
        f(None, m) for p, f in patterns.items() if (m := p.search(ECHO_LOGPROBS_ERROR))
    )
    assert status == 400 and body["type"] == "invalid_request_error"


def test_the_course_server_runs_this_module() -> None:
    probe = course_server.LocalServer("llamacpp", "m", str(smollm2_gguf_path()), "h", 1, 0, "")
    cmd = course_server.command_line(probe)
    assert cmd[1:3] == ["-m", "shared.llama_serve"] and "--model" in cmd


def test_the_real_server_gives_the_same_top_logprobs(local_server, both) -> None:
    """``start_server`` runs this module: same top-20 log-probabilities through the SDK, and the
    echo + logprobs refusal is a 400 that says why."""
    client = openai.OpenAI(base_url=local_server.url, api_key="not-needed", max_retries=0)
    review = [{"role": "user", "content": REVIEW.format("The handle snapped off the mug.")}]
    reply = client.chat.completions.create(
        model=local_server.model,
        messages=review,
        temperature=0,
        max_tokens=1,
        logprobs=True,
        top_logprobs=TOP,
    ).model_dump()
    assert _max_difference(both[0]["first token"][0], reply) <= ATOL
    with pytest.raises(openai.BadRequestError, match="echo=True with logprobs"):
        client.completions.create(
            model=local_server.model, prompt="Hi", max_tokens=1, echo=True, logprobs=1
        )
