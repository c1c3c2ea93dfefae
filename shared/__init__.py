"""Generative AI, hands-on: the course's helper package.

Every lesson notebook imports its helpers from here (``from shared import llm``). Importing the
package or any of its modules changes nothing: no environment variable is set and no folder is
created. The course cache (see :mod:`shared.paths`) is applied by an explicit call,
``paths.configure_environment()``: the first line of every notebook's setup cell, the Makefile's
exported variables, and the functions that start the local server or load a model.

Where things live:

* infrastructure, which any lesson may import: ``paths`` (repository, ``data/``, the cache),
  ``config`` (settings, :class:`~shared.config.FriendlyError`), ``io`` (JSON lines, atomic
  writes), ``processes`` (ports, pids), ``models`` (the packaged weights), ``server`` (the local
  OpenAI-compatible server) and ``llama_serve`` (the llama.cpp server it runs), ``llm``
  (clients for every provider), ``checks`` (exercise feedback), ``metrics`` (scores and
  intervals);
* one module per lesson, listed in ``LESSONS``, keeping what a later lesson or the capstone
  reuses; the capstone (lesson 08) is the subpackage ``support/``. The conventions test checks
  that every lesson has its module and its tests.
"""

from __future__ import annotations

__all__ = ["CROSS_CUTTING", "LESSONS"]

#: lesson folder -> the ``shared`` module that holds that lesson's reusable code.
LESSONS: dict[str, str] = {
    "00_setup": "setup_check",
    "01_llm_basics": "generation",
    "02_model_comparison": "compare",
    "03_prompt_engineering": "prompts",
    "04_tokenizers_embeddings": "tokens",
    "05_chromadb": "vectordb",
    "06_langchain": "chains",
    "07_lora_finetuning": "finetune",
    "08_customer_service": "support",  # a subpackage: shared/support/*.py
}

#: modules any lesson may import (they never import lesson modules).
CROSS_CUTTING: tuple[str, ...] = (
    "paths",
    "config",
    "io",
    "processes",
    "models",
    "server",
    "llama_serve",
    "llm",
    "checks",
    "metrics",
)
