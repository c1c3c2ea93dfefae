"""The house rules (STYLE.md), kept by a test: layout, notebook skeleton, outputs, imports, data."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from shared import CROSS_CUTTING, LESSONS
from shared.server import LOCAL_MODEL_ALIAS

ROOT = Path(__file__).resolve().parent.parent
LESSON_DIRS = sorted(
    p.name for p in (ROOT / "lessons").iterdir() if p.is_dir() and p.name[:2].isdigit()
)
ORDER = {module: i for i, module in enumerate(LESSONS.values())}
MAX_NOTEBOOK_BYTES = 2_500_000
FORBIDDEN = re.compile(r"^\s*(!\s*pip|%pip|%conda|!\s*conda)|sys\.path\.(append|insert)", re.M)
MARKER = re.compile(r"#\s*NBVAL_|#\s*fmt:\s*skip")
MACHINE_PATH = re.compile(
    "("
    + "|".join(
        [re.escape(str(ROOT)), "/tmp/", "/root/", "/home/", "/Users/", r"/\S*/site-packages/"]
    )
    + r")\S*"
)
FROZEN_BAR = re.compile(r"(^|\s)0%\|")
WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b")
#: what the runner (scripts/nb.py run) records; committed outputs come from the defaults.
RUN_KEY = "course_run"
DEFAULT_RUN = {"provider": "local", "engine": "llamacpp", "model": LOCAL_MODEL_ALIAS}

#: STYLE.md rule 4: the library calls each lesson's notebook must show (the learner writes them).
LESSON_CALLS: dict[str, tuple[str, ...]] = {
    "00_setup": (
        "load_dotenv()",
        "OpenAI()",
        "OpenAI(base_url=",
        "AzureOpenAI(",
        "chat.completions.create(",
        "stream=True",
        "openai.APIConnectionError",
    ),
    "01_llm_basics": (
        "AutoTokenizer.from_pretrained(",
        "AutoModelForCausalLM.from_pretrained(",
        "apply_chat_template(",
        "torch.multinomial(",
        "do_sample=True",
        "torch.Generator()",
    ),
    "02_model_comparison": (
        "llama_cpp.Llama(",
        "logits_all=True",
        ".apply_chat_template(",
        "past_key_values=",
        ".create_completion(",
        "chat.completions.create(",
        "LogisticRegression(",
        "compare.mcnemar_exact(",
    ),
    "03_prompt_engineering": (
        "client.chat.completions.create(",
        "logprobs=True",
        "top_logprobs=",
        "logit_bias=",
        "response_format",
        "model_json_schema(",
        "model_validate_json(",
        "binomtest(",
        'proportion_ci(method="wilson")',
        "client.completions.create(",
        "openai.AsyncOpenAI(",
        "asyncio.gather(",
    ),
    "04_tokenizers_embeddings": (
        "jieba.lcut(",
        "jieba.finalseg.cut(",
        "BPE(",
        "trainers.BpeTrainer(",
        ".train_from_iterator(",
        'tiktoken.get_encoding("cl100k_base")',
        "SentenceTransformer(",
        ".last_hidden_state",
        "F.scaled_dot_product_attention(",
        "torch.nn.MultiheadAttention(",
        "torch.testing.assert_close(",
        'attn_implementation="eager"',
        "output_attentions=True",
    ),
    "05_chromadb": (
        "chromadb.EphemeralClient(",
        "chromadb.PersistentClient(",
        "chromadb.HttpClient(",
        "chroma run",
        '"run", "--path"',  # the `chroma run --path ... --port ...` command line, run
        "@register_embedding_function",
        "(EmbeddingFunction[Documents])",
        ".upsert(",
        ".query(",
    ),
    "06_langchain": (
        "ChatOpenAI(",
        "AzureChatOpenAI(",
        "(BaseCallbackHandler)",
        "def on_llm_end(",
        "create_agent(",
        "@tool",
        "bind_tools(",
        "with_structured_output(",
        'method="function_calling"',
        "RunnableParallel(",
        ".set_authorizer(",
        ".set_progress_handler(",
    ),
    "07_lora_finetuning": (
        "LoraConfig(",
        "get_peft_model(",
        "print_trainable_parameters(",
        "loss.backward(",
        "Trainer(",
        "TrainingArguments(",
        "merge_and_unload(",
        "BitsAndBytesConfig(",
    ),
    "08_customer_service": (
        "Chroma(",
        "BM25Retriever",
        "similarity_search_with_score(",
        "LogisticRegression(",
        "binomtest(",
        "gr.ChatInterface(",
    ),
}


def _notebooks(lesson: str) -> list[Path]:
    return [ROOT / "lessons" / lesson / f"{lesson}{suffix}.ipynb" for suffix in ("", "_solutions")]


def _shared_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "shared":
                found |= {a.name for a in node.names}
            elif node.module.startswith("shared."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("shared.")}
    return found


def _code(nb: nbformat.NotebookNode) -> str:
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [
                ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))
            ]
    return "\n".join(lines)


def test_every_lesson_folder_is_mapped() -> None:
    assert set(LESSON_DIRS) <= set(LESSONS), (
        f"unmapped lesson folders: {set(LESSON_DIRS) - set(LESSONS)}"
    )


def _module_files(module: str) -> list[Path]:
    """``shared/<module>.py``, or every module of the subpackage ``shared/<module>/``."""
    package = ROOT / "shared" / module
    if (package / "__init__.py").is_file():
        return sorted(package.glob("*.py"))
    return [ROOT / "shared" / f"{module}.py"]


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_lesson_has_notebooks_module_and_tests(lesson: str) -> None:
    module = LESSONS[lesson]
    for nb in _notebooks(lesson):
        assert nb.is_file(), f"missing {nb.relative_to(ROOT)}"
    if (ROOT / "shared" / module / "__init__.py").is_file():  # a subpackage: a test per module
        for path in _module_files(module):
            if path.stem != "__init__":
                test = ROOT / "tests" / f"test_{module}_{path.stem}.py"
                assert test.is_file(), f"missing {test.relative_to(ROOT)}"
        return
    assert (ROOT / "shared" / f"{module}.py").is_file(), f"missing shared/{module}.py"
    assert (ROOT / "tests" / f"test_{module}.py").is_file(), f"missing tests/test_{module}.py"


@pytest.mark.parametrize("module", sorted({*LESSONS.values(), *CROSS_CUTTING}))
def test_module_documented_and_forward_only(module: str) -> None:
    for path in _module_files(module):
        _check_module(module, path)


def _check_module(module: str, path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared/{module}.py not written yet")  # reported by the lesson test above
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc, f"{path.relative_to(ROOT)} needs a module docstring"
    if module in ORDER:
        lesson = next(k for k, v in LESSONS.items() if v == module)
        assert f"Lesson {lesson[:2]}" in doc, (
            f"docstring of {path.relative_to(ROOT)} must name 'Lesson {lesson[:2]}'"
        )
    assert any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        for n in tree.body
    ), f"{path.relative_to(ROOT)} needs __all__"
    assert len(path.read_text().splitlines()) <= 450, (
        f"{path.relative_to(ROOT)} is too long; split it"
    )
    for used in _shared_imports(tree):
        if used in ORDER:
            assert module in ORDER, f"cross-cutting shared/{module}.py imports lesson module {used}"
            assert ORDER[used] <= ORDER[module], f"shared/{module}.py imports later lesson {used}"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_follow_the_skeleton(lesson: str) -> None:
    main, solutions = _notebooks(lesson)
    nb = nbformat.read(main, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with a title"
    assert "learning objectives" in first.source.lower(), "the first cell lists learning objectives"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.lstrip().startswith("## Summary") for h in headings), (
        "needs a '## Summary' section"
    )
    assert any(h.lstrip().startswith("## Exercises") for h in headings), "needs '## Exercises'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "nbval-ignore-output" in code[1].metadata.get("tags", []), (
        "2nd code cell: versions/provider, tagged nbval-ignore-output"
    )
    run = 0
    for cell in nb.cells:
        run = run + 1 if cell.cell_type == "code" else 0
        assert run <= 2, f"prose before code: three code cells in a row at {cell.source[:60]!r}"
    sol = nbformat.read(solutions, as_version=4)
    assert sol.cells[0].source.startswith("# "), "solutions notebook starts with a title"
    assert "assert_all_passed" in _code(sol), "solutions end with checks.assert_all_passed()"


def _output_text(out: nbformat.NotebookNode) -> str:
    text = out.get("text") or out.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else str(text)


def check_clean_run(nb: nbformat.NotebookNode, name: str) -> None:
    """The stored notebook is a clean top-to-bottom run on the course's default configuration."""
    allowed = {"kernelspec", "language_info", RUN_KEY}
    assert set(nb.metadata) <= allowed, f"{name}: volatile metadata"
    assert nb.metadata.get(RUN_KEY) == DEFAULT_RUN, (
        f"{name}: outputs must come from the default configuration {DEFAULT_RUN}, "
        f"found {nb.metadata.get(RUN_KEY)}; re-run it with `make nb NB=...` and no .env"
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not a clean top-to-bottom run"
    for cell in code:
        assert "execution" not in cell.metadata, f"{name}: timing metadata left in"
        assert not FORBIDDEN.search(cell.source), f"{name}: no pip/sys.path in notebooks"
        assert not MARKER.search(cell.source), (
            f"{name}: use nbval cell tags, not comments learners read: {cell.source[:60]!r}"
        )
        if "nbval-check-output" in cell.metadata.get("tags", []):
            assert cell.outputs, f"{name}: checked cell has no stored output"
        for out in cell.outputs:
            assert out.get("output_type") != "error", f"{name}: stored error output"
            text = _output_text(out)
            found = MACHINE_PATH.search(text)
            assert not found, f"{name}: a stored output shows a machine path {found.group(0)!r}"
            assert not FROZEN_BAR.search(text), f"{name}: a progress bar frozen at 0% is stored"
            if out.get("name") == "stderr":
                assert not WARNING.search(text), f"{name}: a stored warning: {text[:200]!r}"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_are_clean_runs(lesson: str) -> None:
    for path in _notebooks(lesson):
        assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name} is over the size cap"
        check_clean_run(nbformat.read(path, as_version=4), path.name)


def _stored(cells: list[tuple[str, str, list]], **metadata: object) -> nbformat.NotebookNode:
    kernel = {"name": "python3", "display_name": "Python 3"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernel, RUN_KEY: DEFAULT_RUN, **metadata})
    for i, (source, tag, outputs) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=i, outputs=outputs)
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    return nb


def _stream(text: str, name: str = "stdout") -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name=name, text=text)


@pytest.mark.parametrize(
    ("cells", "metadata", "problem"),
    [
        ([("print(1)", "", [_stream("/home/ana/course/.cache/x.gguf\n")])], {}, "machine path"),
        ([("print(1)", "", [_stream("/tmp/tmpab12/db\n")])], {}, "machine path"),
        ([("bar()", "", [_stream("  0%|          | 0/40 [00:00<?, ?it/s]", "stderr")])], {}, "0%"),
        ([("# NBVAL_CHECK_OUTPUT\nprint(1)", "", [_stream("1\n")])], {}, "cell tags"),
        ([("print(1)", "nbval-check-output", [])], {}, "no stored output"),
        ([("f()", "", [_stream("UserWarning: x is deprecated", "stderr")])], {}, "warning"),
        (
            [("print(1)", "", [_stream("1\n")])],
            {RUN_KEY: {**DEFAULT_RUN, "engine": "transformers"}},
            "default configuration",
        ),
    ],
)
def test_clean_run_check_fails_on_a_bad_notebook(cells, metadata, problem) -> None:
    with pytest.raises(AssertionError, match=problem):
        check_clean_run(_stored(cells, **metadata), "bad.ipynb")
    check_clean_run(_stored([("print(1)", "nbval-check-output", [_stream("1\n")])]), "good")


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_show_the_library_calls_they_teach(lesson: str) -> None:
    """STYLE.md rule 4: the learner reads and runs each lesson's key library calls."""
    code = _code(nbformat.read(_notebooks(lesson)[0], as_version=4))
    missing = [call for call in LESSON_CALLS.get(lesson, ()) if call not in code]
    assert not missing, f"{lesson} notebook must show these library calls: {missing}"


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebook_imports_are_forward_only(lesson: str) -> None:
    mine = ORDER[LESSONS[lesson]]
    for path in _notebooks(lesson):
        used = _shared_imports(ast.parse(_code(nbformat.read(path, as_version=4))))
        later = [m for m in used if m in ORDER and ORDER[m] > mine]
        assert not later, f"{path.name} imports later lessons' modules {later}"
        unknown = [m for m in used if m not in ORDER and m not in CROSS_CUTTING]
        assert not unknown, f"{path.name} imports unknown shared modules {unknown}"


def test_data_manifest_matches_files() -> None:
    data = ROOT / "data"
    manifest = json.loads((data / "manifest.json").read_text())["files"]
    readme = (data / "README.md").read_text()
    on_disk = {
        p.relative_to(data).as_posix()
        for p in data.rglob("*")
        if p.is_file() and p.name not in ("README.md", "manifest.json")
    }
    assert on_disk == set(manifest), (
        "data/manifest.json is out of date: run scripts/data_manifest.py"
    )
    for rel, meta in manifest.items():
        blob = (data / rel).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == meta["sha256"], f"{rel} changed: update manifest"
        assert len(blob) == meta["bytes"]
        assert rel in readme, f"data/README.md does not describe {rel}"


def test_readme_lesson_table_is_generated() -> None:
    import subprocess
    import sys

    script = ROOT / "scripts" / "lesson_table.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------- the package's shape
SHARED_FILES = sorted(p for p in (ROOT / "shared").rglob("*.py") if "__pycache__" not in p.parts)
#: the most lines a module of ``shared`` may have (STYLE.md aims at ~300).
MAX_MODULE_LINES = 450
#: modules over the cap that are being split; empty it as they are.
OVER_SIZE_PENDING: dict[str, str] = {}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", SHARED_FILES, ids=_rel)
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if _rel(path) in OVER_SIZE_PENDING:
        pytest.skip(OVER_SIZE_PENDING[_rel(path)])
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)} has {lines} lines; split it"


def test_importing_shared_changes_nothing(tmp_path: Path) -> None:
    """``import shared`` and every module: no environment variable set, no folder created."""
    import subprocess
    import sys

    modules = [_module_name(p) for p in SHARED_FILES if p.name != "__main__.py"]
    code = (
        "import json, os\n"
        "before = dict(os.environ)\n"
        f"import {', '.join(modules)}\n"
        "after = dict(os.environ)\n"
        "print(json.dumps(sorted(k for k in before.keys() | after.keys()"
        " if before.get(k) != after.get(k))))\n"
    )
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GENAI_CACHE_DIR": str(cache)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    changed = json.loads(done.stdout.strip().splitlines()[-1])
    assert changed == [], f"importing shared changed these environment variables: {changed}"
    assert not cache.exists(), "importing shared created the course cache"
    created = sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))
    assert created == [], f"importing shared wrote into the home folder: {created}"


#: each thing the package defines once, under any of these names (module-level definitions).
ONE_DEFINITION: dict[str, tuple[str, ...]] = {
    "the intents": ("INTENTS",),
    "a free port": ("free_port", "_free_port", "_port_free"),
    "a process check": ("pid_alive", "_pid_alive"),
    "a JSON-lines reader": ("read_jsonl", "load_jsonl"),
    "an atomic swap": ("atomic_path",),
    "JSON from a model's reply": ("extract_json", "parse_model_json"),
}
#: definitions in modules not converted yet, each with what should replace it. Empty it as they
#: are: a listed file that no longer defines the name is fine.
NOT_YET_ONE: dict[tuple[str, str], str] = {
    ("a JSON-lines reader", "shared/prompts.py"): "load_jsonl -> io.read_jsonl",
    ("a JSON-lines reader", "shared/support/eval.py"): "load_jsonl -> io.read_jsonl",
}


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_each_thing_is_defined_once() -> None:
    defined = {_rel(p): _top_level_names(ast.parse(p.read_text())) for p in SHARED_FILES}
    for thing, names in ONE_DEFINITION.items():
        where = sorted(
            f"{path} ({', '.join(sorted(found))})"
            for path, top in defined.items()
            if (found := top & set(names)) and (thing, path) not in NOT_YET_ONE
        )
        assert len(where) <= 1, f"{thing} is defined in several modules: {where}"


#: lessons whose notebooks do not start with the course-cache call yet (their cells change later).
CACHE_CALL_PENDING: set[str] = set()


@pytest.mark.parametrize("lesson", LESSON_DIRS)
def test_notebooks_apply_the_course_cache_first(lesson: str) -> None:
    """The first code cell starts with ``paths.configure_environment()``, before any library is
    imported (huggingface_hub, transformers, sentence_transformers read HF_HOME on import)."""
    if lesson in CACHE_CALL_PENDING:
        pytest.skip("not converted yet")
    for path in _notebooks(lesson):
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        body = ast.parse(first.source).body[:2]
        assert len(body) == 2 and ast.unparse(body[0]) == "from shared import paths", path.name
        assert ast.unparse(body[1]) == "paths.configure_environment()", path.name
