# Two entry points: `make run` (chat on the embedded default model) and `make test`.
# Both create or reuse .venv and install what they need, models included.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint format install models rebuild-llama clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "anima needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python is built by scripts/llama_build.py, the one place for its build flags:
# -march=native without AMX, cached per CPU in ~/.cache/anima/wheels (about 6 minutes the
# first time). A short generation then runs in a child process; if it dies from a signal,
# the script rebuilds with portable flags, or stops with one line saying what to do.
$(VENV)/.installed: pyproject.toml scripts/llama_build.py | $(BIN)/python
	$(BIN)/python scripts/llama_build.py
	$(BIN)/python -m pip install -e .
	$(BIN)/anima models pull default
	$(BIN)/python scripts/llama_build.py --check
	@touch $@

# The portable build by hand (what `anima doctor` suggests when the native one crashes).
rebuild-llama: | $(BIN)/python
	$(BIN)/python scripts/llama_build.py --portable --check

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# The guard's fast layer is trained here from the public safety sets (about 3 minutes,
# once), and its probe on the chat model's middle layer (about 20 minutes, once; an
# interrupted run goes on where it stopped); set ANIMA_SAFETY_DATA if they are not in
# ../shared/data/safety. `make test` needs neither the probe nor those 20 minutes.
run: $(VENV)/.installed
	$(BIN)/anima models pull
	$(BIN)/anima guard train --if-missing --probe
	$(BIN)/anima serve

models: $(VENV)/.installed
	$(BIN)/anima models pull default
	$(BIN)/anima models pull small
	$(BIN)/anima models pull minilm
	$(BIN)/anima guard train --if-missing

# pytest exit 5 = "no tests collected" (e.g. a -k filter that matches nothing): not a failure.
test: $(VENV)/.installed-dev models lint
	sh scripts/browser-deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The formatter and the linter (settings in pyproject.toml); `make format` fixes what they can.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff format --check anima tests scripts
	$(BIN)/ruff check anima tests scripts

format: $(VENV)/.installed-dev
	$(BIN)/ruff format anima tests scripts
	$(BIN)/ruff check --fix anima tests scripts

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
