"""The course's llama.cpp server: ``llama_cpp.server`` with a model that skips unread logits.

``python -m shared.llama_serve`` takes exactly the arguments of ``python -m llama_cpp.server``
(:func:`shared.server.start_server` runs it) and serves the model as :class:`LastLogitsLlama`.

Why: ``llama_cpp.server`` creates its model with ``logits_all=True`` (llama-cpp-python refuses
``logprobs`` otherwise, and the lessons ask for ``logprobs``/``top_logprobs``). With it,
``Llama.eval`` asks llama.cpp for the logits of *every* prompt token (SmolLM2's 576 x 49,152
output layer run on every position) and copies them into ``Llama.scores``, yet the
log-probabilities of generated tokens only read the last prompt position's row and each generated
token's. Measured on the 2-core reference machine with a 1,000-token prompt (runs of the two
classes interleaved, medians): in-process on 2 threads the prompt is read at 180-219 tokens/s that
way and at 240-267 without those rows (1.2-1.3x; 1.1-1.15x on 1 thread); through the server and
the ``openai`` SDK (``make bench``, best of 3) at 218 against 261 tokens/s, the first token after
4.8 s instead of 4.1 s. A fifth of every prompt read went into numbers nobody looked at.

:class:`LastLogitsLlama` keeps ``logits_all=True`` (``logprobs`` stay allowed) but asks llama.cpp
for the last token of each batch only and stores that row, ``scores[n_past + n_tokens - 1]``.
Those are the rows llama-cpp-python reads for generated tokens: generated token i's (from 0)
log-probabilities come from row ``len(prompt) - 1 + i``; a prompt that shares a prefix with the
previous request decodes at least its last token again, and an exact repeat reuses the row the
last decode wrote. Greedy replies and log-probabilities match the stock class
(``tests/test_llama_serve.py``). Only ``echo=True`` with ``logprobs`` on ``/v1/completions``
reads the rows of the prompt's tokens: it is refused with an explanation instead of answering with
stale numbers.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence

import llama_cpp
import numpy as np

__all__ = ["ECHO_LOGPROBS_ERROR", "LastLogitsLlama", "main"]

ECHO_LOGPROBS_ERROR = (
    "echo=True with logprobs asks for the log-probabilities of the prompt's tokens, which the "
    "course's server does not compute (it reads prompts faster without them; see "
    "shared/llama_serve.py). Drop echo=True (log-probabilities of generated tokens work), or "
    "score the prompt in-process with llama_cpp.Llama(..., logits_all=True) as lesson 02 does, "
    "or serve the model with `python -m llama_cpp.server`."
)


class LastLogitsLlama(llama_cpp.Llama):
    """``llama_cpp.Llama`` that computes and stores the logits of each batch's last token only."""

    def eval(self, tokens: Sequence[int]) -> None:
        """Decode ``tokens`` like ``Llama.eval``, asking llama.cpp for the last token's logits."""
        if not self._logits_all or self.draft_model is not None:
            # logits_all=False already keeps one row (and ``scores`` has n_batch rows only);
            # speculative decoding samples at several positions of a batch: the stock path.
            return super().eval(tokens)
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        for i in range(0, len(tokens), self.n_batch):
            batch = tokens[i : i + self.n_batch]
            n_past, n_tokens = self.n_tokens, len(batch)
            self._batch.set_batch(batch=batch, n_past=n_past, logits_all=False)  # last one only
            self._ctx.decode(self._batch)
            self.input_ids[n_past : n_past + n_tokens] = batch
            last = self._ctx.get_logits_ith(-1)
            if not last:
                raise RuntimeError("llama.cpp returned no logits for the batch's last token")
            row = np.ctypeslib.as_array(last, shape=(self._n_vocab,))
            self.scores[n_past + n_tokens - 1, :] = row
            self.n_tokens += n_tokens
            self._requires_eval = False
        return None

    def _create_completion(self, *args, **kwargs):
        """Refuse the one request that reads prompt rows; otherwise the stock generator.

        A plain function, not a generator, so the refusal is raised when the request is made.
        Streaming never echoes the prompt, so only non-streaming ``echo`` + ``logprobs`` reads
        the rows this class leaves out.
        """
        call = inspect.signature(super()._create_completion).bind(*args, **kwargs)
        call.apply_defaults()
        asked = call.arguments
        if asked["echo"] and asked["logprobs"] is not None and not asked["stream"]:
            raise ValueError(ECHO_LOGPROBS_ERROR)
        return super()._create_completion(*args, **kwargs)


def _echo_logprobs_error(request, match):
    """A 400 "invalid request" (the server's default for errors is a 500, which clients retry)."""
    from llama_cpp.server.errors import ErrorResponse

    return 400, ErrorResponse(
        message=ECHO_LOGPROBS_ERROR, type="invalid_request_error", param="echo", code=None
    )


def main() -> None:
    """Run ``llama_cpp.server``'s own ``main`` (same arguments) with :class:`LastLogitsLlama`.

    ``llama_cpp.server.model.LlamaProxy`` looks ``llama_cpp.Llama`` up when it loads a model
    (``create_fn = llama_cpp.Llama``); nothing else in the server process creates one. The patch
    is made here, never on import.
    """
    from llama_cpp.server.__main__ import main as serve
    from llama_cpp.server.errors import RouteErrorHandler

    llama_cpp.Llama = LastLogitsLlama
    RouteErrorHandler.pattern_and_formatters[re.compile(re.escape(ECHO_LOGPROBS_ERROR))] = (
        _echo_logprobs_error
    )
    serve()


if __name__ == "__main__":
    main()
