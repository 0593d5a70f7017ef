# pkeyspec: `make html` builds the site, `make test` runs every check.
# Both create .venv and install the project with its dev extras first.

PYTHON  := .venv/bin/python
SPHINX  := $(PYTHON) -m sphinx -W -n -T -E -j auto -c .
# Extra arguments for pytest, e.g. make test PYTEST_ARGS='-m "not site" -x'
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv html test doctest clean distclean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The stamp is re-made whenever pyproject.toml changes.
.venv/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv .venv
	$(PYTHON) -m pip install -e '.[dev]'
	touch $@

venv: .venv/.installed ## Create .venv and install pkeyspec with its docs and test extras

# Nothing publishes unchecked: the pages' examples and the guarantees' properties
# run first, and a failure stops the build before any HTML is written.
html: .venv/.installed ## Run the pages' examples and the properties, then build the site into _build/html (strict)
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not site" docs tests/properties
	$(SPHINX) -b html docs _build/html

test: .venv/.installed ## Run all tests: unit, docstrings, docs/*.md doctests, strict site builds
	$(PYTHON) -m pytest $(PYTEST_ARGS)

doctest: .venv/.installed ## Run the docs examples with Sphinx's doctest builder
	$(SPHINX) -b doctest docs _build/doctest

clean: ## Remove _build and caches (keeps .venv)
	rm -rf _build build .pytest_cache .hypothesis *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## Also remove .venv
	rm -rf .venv

.PHONY: browser-test
browser-test: html ## Check the fresh _build/html in headless Chromium (Debian's chromium); screenshots in _build/screenshots
	$(PYTHON) -m pytest -raP -m browser tests/browser $(PYTEST_ARGS)

# Real kernels: download the newest Debian 6.1, 6.12 and 7.x kernel packages
# (cached in ~/.cache/pkeyspec-conformance), boot each under QEMU (TCG,
# -cpu max; and -cpu qemu64 without PKU), write conformance/observations/ and
# compare them with the model.  Needs root for apt-get; see conformance/run.py.
.PHONY: conformance
conformance: .venv/.installed ## Boot real kernels under QEMU, record observations, compare with the model
	$(PYTHON) conformance/run.py

# The kernel and glibc sources the site cites: Debian's linux-source-6.1,
# linux-source-6.12, linux-source-7.x (sid) and glibc-source at the exact
# releases named in pkeyspec/sphinxext/kernel.py, fetched and unpacked once
# into ~/.cache/pkeyspec-conformance/sources. Afterwards `make test` checks
# every {kernel} and {glibc} citation against them (tests/test_citations.py).
.PHONY: sources
sources: .venv/.installed ## Fetch the cited kernel and glibc sources, so that make test checks the citations
	$(PYTHON) conformance/sources.py

# Times the explorer: every catalogue race, the alloc/mprotect/free scaling
# family (tests/bench/allocmap.py) and, if Debian's spin is installed, the same
# family in Promela (tests/bench/*.pml); prints one table. Kept under ~5 minutes.
.PHONY: bench
bench: .venv/.installed ## Benchmark the explorer (catalogue races, scaling family, Spin if installed)
	$(PYTHON) tests/bench/bench.py

# Mutation testing (mutmut) of the kernel-side modules, within a time budget;
# prints the score per module and every survivor. MUTATE_SECONDS, MUTATE_MODULES.
MUTATE_SECONDS ?= 3600
MUTATE_MODULES ?=
.PHONY: mutate
mutate: .venv/.installed ## Mutation testing of the model (mutmut): score per module and the survivors
	$(PYTHON) tests/mutation/mutate.py --seconds $(MUTATE_SECONDS) $(MUTATE_MODULES)

# Calls every public function and method of pkeyspec 10**6 times, with arbitrary values and
# with valid call sequences (tests/fuzz.py); prints the seed, the outcomes and every
# disallowed one with a minimal reproducer, and fails if there is one. Not part of
# `make test`, which runs a few thousand calls of the same code (tests/test_fuzz.py).
# Options: make fuzz FUZZ_ARGS='--seed 1234 --calls 100000'
FUZZ_ARGS ?=
.PHONY: fuzz
fuzz: .venv/.installed ## Fuzz every public function 10**6 times; a reproducer for each defect
	$(PYTHON) tests/fuzz.py $(FUZZ_ARGS)
