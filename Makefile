# Generative AI, hands-on. Two commands: `make lab` (learn) and `make test` (check everything).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Everything the course writes goes into one git-ignored cache, never into the home directory.
export GENAI_CACHE_DIR ?= $(CURDIR)/.cache
export PIP_CACHE_DIR := $(GENAI_CACHE_DIR)/pip
export XDG_CACHE_HOME := $(GENAI_CACHE_DIR)/xdg/cache
export XDG_CONFIG_HOME := $(GENAI_CACHE_DIR)/xdg/config
export XDG_DATA_HOME := $(GENAI_CACHE_DIR)/xdg/data
export IPYTHONDIR := $(GENAI_CACHE_DIR)/ipython
export JUPYTER_CONFIG_DIR := $(GENAI_CACHE_DIR)/jupyter/config
export JUPYTER_DATA_DIR := $(GENAI_CACHE_DIR)/jupyter/data
export JUPYTER_RUNTIME_DIR := $(GENAI_CACHE_DIR)/jupyter/runtime
export JUPYTER_PLATFORM_DIRS := 1
export MPLCONFIGDIR := $(GENAI_CACHE_DIR)/matplotlib
export HF_HOME := $(GENAI_CACHE_DIR)/huggingface
export HF_HUB_OFFLINE ?= 1
export TIKTOKEN_CACHE_DIR := $(GENAI_CACHE_DIR)/tiktoken
export PLAYWRIGHT_BROWSERS_PATH := $(GENAI_CACHE_DIR)/ms-playwright
export npm_config_cache := $(GENAI_CACHE_DIR)/npm
export PYTHONDONTWRITEBYTECODE := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help bootstrap prepare browser lab test lint unit nb notebooks run bench demo stop clean

help:
	@echo "make lab    install (first time), prepare the local models, open JupyterLab on lessons/"
	@echo "make test   install, then ruff, unit tests, conventions and every notebook (nbval)"
	@echo "make run    execute every lesson headlessly: seconds and peak memory per notebook"
	@echo "make bench  benchmark the local inference engines"
	@echo "make demo   the capstone's web chat on http://127.0.0.1:7860"
	@echo "make stop   stop the local model server"

bootstrap:
	@bash scripts/bootstrap.sh

prepare: bootstrap
	@$(PY) -m shared.models prepare

lab: prepare
	@bash scripts/lab.sh

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Debian's chromium for the capstone's browser test (Playwright never downloads a browser).
browser:
	@bash scripts/install_browser.sh

unit: prepare browser
	$(VENV)/bin/pytest $(or $(TESTS),tests)

# Re-run notebooks top to bottom and save them with outputs: make nb NB="lessons/00_setup/*.ipynb"
nb: prepare
	$(PY) scripts/nb.py run $(NB)

notebooks: prepare
	$(VENV)/bin/pytest -p no:cacheprovider --nbval-lax --nbval-cell-timeout=900 lessons

# Everything CI checks. The local server is stopped at the end, whatever happened.
test: prepare
	@touch $(GENAI_CACHE_DIR)/.test-started
	@status=0; \
	$(MAKE) --no-print-directory lint unit notebooks || status=$$?; \
	$(PY) -m shared.llm stop --all; \
	$(PY) scripts/home_check.py $(GENAI_CACHE_DIR)/.test-started; \
	exit $$status

run: prepare
	@status=0; $(PY) scripts/run_notebooks.py lessons || status=$$?; \
	$(PY) -m shared.llm stop --all; exit $$status

bench: prepare
	$(PY) benchmarks/bench_local.py

demo: prepare
	$(PY) -m shared.support.ui

stop:
	@$(PY) -m shared.llm stop --all

clean: stop
	rm -rf .cache
