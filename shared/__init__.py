"""Generative AI, hands-on: the course's helper package.

Every lesson notebook imports its helpers from here (``from shared import llm``). Importing this
package is cheap: it only points every library cache at the course's own cache folder (see
:mod:`shared.paths`), so a course run writes nothing to the home directory.

``LESSONS`` maps each lesson folder to the module that keeps its reusable code; the conventions
test checks that every lesson has its module and its test file. The other modules are
cross-cutting: ``paths``, ``config``, ``models``, ``server``, ``llm``, ``checks``, ``metrics``.
"""

from __future__ import annotations

from shared import paths as _paths

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
    "08_customer_service": "support_bot",
}

#: modules any lesson may import (they never import lesson modules).
CROSS_CUTTING: tuple[str, ...] = (
    "paths",
    "config",
    "models",
    "server",
    "llm",
    "checks",
    "metrics",
)

_paths.configure_environment()
