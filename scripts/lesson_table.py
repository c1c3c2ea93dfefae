"""Regenerate (or ``--check``) the lesson tables of README.md and README.zh-CN.md.

The title of each lesson is the first heading of its notebook; the module comes from
``shared.LESSONS``; the Chinese README adds a one-line Chinese summary per lesson (``ZH`` below).
Run after adding or renaming a lesson; the conventions test runs ``--check``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- lessons:start -->", "<!-- lessons:end -->"
#: the Chinese README's summary of each lesson (a new lesson needs a line here)
ZH = {
    "00_setup": "环境、密钥与第一次对话补全",
    "01_llm_basics": "大模型基础：模型如何逐个 token 生成文本",
    "02_model_comparison": "模型对比：用测量说话",
    "03_prompt_engineering": "提示工程：每种技巧都有数据",
    "04_tokenizers_embeddings": "分词器与向量表示：看看内部",
    "05_chromadb": "ChromaDB 向量数据库",
    "06_langchain": "LangChain：编排模型、提示、数据与工具",
    "07_lora_finetuning": "用 PEFT 在 CPU 上做 LoRA 微调",
    "08_customer_service": "综合项目：可量化评估的客服助手",
}


def title(notebook: Path) -> str:
    first = json.loads(notebook.read_text())["cells"][0]["source"]
    line = ("".join(first) if isinstance(first, list) else first).splitlines()[0]
    return re.sub(r"^#\s*\d+\s*·\s*", "", line).strip()


def table(chinese: bool = False) -> str:
    sys.path.insert(0, str(ROOT))
    from shared import LESSONS

    if chinese:
        rows = [
            "| # | 课程 | 中文简介 | 参考答案 | 辅助模块 |",
            "|---|------|----------|----------|----------|",
        ]
    else:
        rows = [
            "| # | lesson | solutions | helper module |",
            "|---|--------|-----------|---------------|",
        ]
    for lesson, module in LESSONS.items():
        nb = ROOT / "lessons" / lesson / f"{lesson}.ipynb"
        sol = nb.with_name(f"{lesson}_solutions.ipynb")
        name = title(nb) if nb.is_file() else "(in preparation)"
        link = f"[{name}](lessons/{lesson}/{nb.name})" if nb.is_file() else name
        sol_link = f"[solutions](lessons/{lesson}/{sol.name})" if sol.is_file() else ""
        cells = [
            lesson[:2],
            link,
            *([ZH[lesson]] if chinese else []),
            sol_link,
            f"`shared.{module}`",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render(readme: str, chinese: bool = False) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(chinese)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    stale = []
    for name, chinese in (("README.md", False), ("README.zh-CN.md", True)):
        path = ROOT / name
        current = path.read_text()
        wanted = render(current, chinese)
        if current != wanted:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(wanted)
    if "--check" in argv and stale:
        print(f"lesson table out of date in {', '.join(stale)}: run python scripts/lesson_table.py")
        return 1
    print(f"lesson tables updated: {', '.join(stale) or 'nothing to do'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
