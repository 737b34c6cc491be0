# The newcomer's two commands: `make demo` (set up + run the built-in demo) and `make test`;
# `make serve` then serves the demo's model (http://127.0.0.1:8000/).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := openclipart-png chromium

.PHONY: demo test serve setup apt-data clean-demo

demo: setup apt-data
	$(BIN)/pintopic run configs/demo.toml

# The architecture contract (pyproject.toml) and the linter run before the tests.
test: setup apt-data
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check pintopic tests benchmarks
	$(BIN)/python -m pytest -q

# The demo run's ensemble if it has one, else its best pair by CV ([serve] in configs/demo.toml); after `make demo`.
serve: setup
	$(BIN)/pintopic serve --config configs/demo.toml

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

# Debian's clip-art (the demo's data and an integration-test set) and Chromium (report screenshots, and the
# service's page test, which Playwright drives through this system Chromium: it downloads no browser).
apt-data:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get install -y -q $(APT_PACKAGES) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(APT_PACKAGES); }; }

clean-demo:
	rm -rf runs/demo
