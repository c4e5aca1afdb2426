# `make demo` and `make test` set everything up on a fresh machine: .venv, torch, steerable.
PY ?= python3
VENV ?= .venv
# a CPU wheel lies on the build machines' disk; override for CUDA, e.g. make test TORCH=torch==2.13.0+cu128
TORCH ?= torch==2.13.0
# on two shared cores the wrong thread count is 6-10x slower
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

STAMP := $(VENV)/.steerable-installed
DOCS_STAMP := $(VENV)/.steerable-docs-installed

.PHONY: demo test test-fast docs lint bench install clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VENV)/bin/python -m pip install -q -e ".[dev,math,gguf,serve,ray,rl,control,diffusion,playground]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/steerable demo

# pytest exits 5 when it collects no test: a run that tests nothing is a failure here
test: $(STAMP)
	$(VENV)/bin/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# what finishes in about a minute: the tests not marked slow (pyproject's markers say which are)
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install -q -e ".[docs]"
	touch $@

# the documentation site into site/: --strict fails on a broken link, a missing page or an unresolved reference;
# the API and command-line pages are generated from the code at build time (docs/_gen/)
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/generate_throughput.py
	$(VENV)/bin/python benchmarks/continuation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
