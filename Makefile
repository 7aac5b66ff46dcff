# The two commands: `make demo` and `make test`. Both set up everything they need on a fresh
# machine: a virtual environment (.venv), the Python dependencies (always with constraints.txt,
# which pins the CPU build of torch), KaTeX from the npm registry, and Debian's chromium for the
# browser test.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DN     := $(VENV)/bin/deepnotes
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup setup-dev node browser lint tour site clean

demo: setup node                   ## set up, run the quick tour of every topic, build the site
	@status=0; $(DN) tour --preset quick || status=$$?; \
	$(DN) site build || exit $$?; \
	echo "open $(CURDIR)/site/index.html"; exit $$status

test: setup-dev node browser       ## set up, lint, run the whole test suite
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

$(PY):
	$(PYTHON) -m venv $(VENV)

# A stamp per dependency set: re-installs when pyproject.toml or constraints.txt change.
# aeon is only the carrier of the sensor recordings it bundles (online-action-detection reads its
# .ts files without importing it). Its metadata pins numba<0.64 and pandas<3.1, which would
# downgrade numba, numpy and pandas for the whole project, so it goes in without its dependencies.
AEON := 'aeon==1.6.0'

$(VENV)/.setup: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e '.[bench,site]'
	$(PY) -m pip install -c constraints.txt --no-deps $(AEON)
	touch $@

$(VENV)/.setup-dev: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e '.[dev,bench,site]'
	$(PY) -m pip install -c constraints.txt --no-deps $(AEON)
	touch $(VENV)/.setup $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

node: node_modules/.installed     ## KaTeX, from package-lock.json
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

browser:                          ## Debian's chromium + chromedriver (never a browser download)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver )

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks

tour: setup
	$(DN) tour --preset quick

site: setup node
	$(DN) site build

clean:
	rm -rf site build .pytest_cache
