# Two entry points: `make run` (chat on the embedded default model) and `make test`.
# Both create or reuse .venv and install what they need, models included.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test install models clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "anima needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# The guard's fast layer is trained here from the public safety sets (about 3 minutes,
# once); set ANIMA_SAFETY_DATA if they are not in ../shared/data/safety.
run: $(VENV)/.installed
	$(BIN)/anima models pull
	$(BIN)/anima guard train --if-missing
	$(BIN)/anima serve

models: $(VENV)/.installed
	$(BIN)/anima models pull default
	$(BIN)/anima models pull small
	$(BIN)/anima models pull minilm
	$(BIN)/anima guard train --if-missing

# pytest exit 5 = "no tests collected" (e.g. a -k filter that matches nothing): not a failure.
test: $(VENV)/.installed-dev models
	sh scripts/browser-deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
