# Archive Capture: `make run` processes the bundled sample batch, `make test` runs the tests.
# Both install what is missing first: Debian packages, a virtual environment, the project.

VENV        ?= .venv
PYTHON      ?= python3
APT_PACKAGES = tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-eng \
               tesseract-ocr-osd poppler-utils fonts-noto-cjk
# the tests also run the state store against a throwaway PostgreSQL cluster, and the web
# interface in Debian's Chromium (driven by Playwright; no browser download)
TEST_APT_PACKAGES = postgresql chromium chromium-driver
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system lint samples bench clean-home serve cluster cluster-down

# Bytecode for our own modules (an editable install has none until a first run writes it, and
# never where PYTHONDONTWRITEBYTECODE is set): compiling them on every start cost a cold
# `capture search` ~0.06 s (benchmarks/README.md). compileall rewrites only what changed.
setup: system $(VENV)/.installed
	$(VENV)/bin/python -m compileall -q pipeline

system:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/capture run samples/batch --catalogue samples/catalogue.csv
	@echo
	@echo "Example search: capture search 理赔申请"
	$(VENV)/bin/capture search 理赔申请 --limit 3

serve: setup
	$(VENV)/bin/capture serve

test: EXTRA_APT = $(TEST_APT_PACKAGES)
test: setup
	$(VENV)/bin/ruff check pipeline tests benchmarks samples
	$(VENV)/bin/ruff format --check pipeline tests benchmarks samples
	$(VENV)/bin/mypy pipeline
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff format pipeline tests benchmarks samples
	$(VENV)/bin/ruff check --fix pipeline tests benchmarks samples
	$(VENV)/bin/mypy pipeline

samples: setup
	$(VENV)/bin/python samples/make_samples.py

bench: setup
	@dpkg -s ghostscript >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ghostscript >/dev/null; }
	$(VENV)/bin/pip install -q -e ".[dev,bench]"
	$(VENV)/bin/python -m benchmarks.run

# A throwaway cluster on this machine: PostgreSQL, a Prefect server, work pools, a control worker,
# two OCR workers, osmem-server for Elasticsearch, a server-mode watcher and the web interface.
cluster: EXTRA_APT = postgresql
cluster: setup
	$(VENV)/bin/python -m pipeline.devcluster up cluster-home

cluster-down:
	@if [ -x $(VENV)/bin/python ]; then $(VENV)/bin/python -m pipeline.devcluster down cluster-home; fi

clean-home:
	rm -rf capture-home
