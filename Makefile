# Optimization for Deep Learning: the two commands are `make book` and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JB     := $(VENV)/bin/jupyter-book
# make test's processes (pytest-xdist): the chapters run on one, the rest of the suite beside them
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install book pdf tex test test-site test-lab claims lab clean exercises grade bench

help:
	@echo "make book    build the HTML book into _build/html (executes chapters, cached)"
	@echo "make pdf     build the whole book as one PDF, _build/latex/book.pdf (installs TeX from Debian on first use)"
	@echo "make test    run the whole test suite (kernels, notebooks, book build) on TEST_WORKERS=2 processes"
	@echo "make test-site  build the book, then open every page in Chromium and check what a reader sees"
	@echo "make test-lab   open a chapter in JupyterLab in Chromium: MyST rendered, cells run, an explorer redraws (CHAPTER=06)"
	@echo "make claims  run every chapter under 5 other seeds, 1 and 2 threads (CHAPTERS=06,08 for some; JOBS=2)"
	@echo "make lab     open JupyterLab on the repository"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make grade NB=path  grade notebooks (files or folders) from the shell"
	@echo "make bench   time book.optim against torch.optim and the memory bandwidth (a few minutes)"
	@echo "make clean   remove build outputs (keeps .venv)"

# (Re)install when the dependency lists change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

install: $(STAMP)

book: $(STAMP)
	@$(PY) -m book._bookbuild .
	$(JB) build . --builder html
	@echo ""
	@echo "The book is built. Open it in a browser:"
	@echo "    file://$(CURDIR)/_build/html/index.html"

# The printable book: Jupyter Book's LaTeX builder, typeset by XeLaTeX (the chapters' text is
# Unicode: Greek letters, arrows, minus signs) with TeX from Debian's packages, which `make tex`
# installs when they are missing (as root, through apt-get; it fails with the command otherwise).
TEX_PACKAGES := latexmk texlive-xetex texlive-latex-recommended texlive-latex-extra \
                texlive-fonts-recommended texlive-fonts-extra fonts-freefont-otf \
                fonts-dejavu-core
TEX_PROGRAMS := latexmk xelatex

tex:
	@missing=""; for p in $(TEX_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	kpsewhich bbm.sty >/dev/null 2>&1 || missing="$$missing bbm.sty"; \
	for f in FreeSerif "DejaVu Sans Mono"; do fc-list 2>/dev/null | grep -q "$$f" || missing="$$missing $$f"; done; \
	[ -z "$$missing" ] && exit 0; \
	echo "make tex: installing TeX from Debian's packages (missing:$$missing)"; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make tex: cannot install it here; as root on Debian or Ubuntu run:" >&2; \
	  echo "    apt-get update && apt-get install -y --no-install-recommends $(TEX_PACKAGES)" >&2; exit 1; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) >/dev/null

pdf: $(STAMP) tex
	@$(PY) -m book._bookbuild .
	@rm -f _build/latex/book.fdb_latexmk  # latexmk's record of a failed run would skip the next one
	$(JB) build . --builder pdflatex
	@echo ""
	@echo "The PDF is built: $(CURDIR)/_build/latex/book.pdf"

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

# The built book in a real browser (Debian's Chromium, driven by Playwright): every page at 1,280
# and 390 px; screenshots and a report in _build/site-check/. Without Chromium it fails with the
# command that installs it.
test-site: book
	$(PY) -m book._sitecheck _build/html

# A chapter in a real JupyterLab (jupyterlab-myst), driven through Chromium like test-site: its markdown
# rendered as MyST, Run All Cells from the menu, an explorer's slider redrawing its figure; screenshots
# and a report in _build/lab-check/. It needs no built book. Without Chromium it fails with the command
# that installs it.
test-lab: $(STAMP)
	$(PY) -m book._labcheck $(if $(CHAPTER),--chapter $(CHAPTER))

# The perturbation harness: every chapter under seed offsets 1-5, and offset 0 with one and two threads.
claims: $(STAMP)
	$(PY) -m book._claims $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(RUNS),--runs $(RUNS)) $(if $(JOBS),--jobs $(JOBS))

exercises: $(STAMP)
	$(PY) -m book.grading.exercises

grade: $(STAMP)
	$(VENV)/bin/book-grade $(or $(NB),exercises)

bench: $(STAMP)
	$(PY) benchmarks/bench_optim.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -exec rm -rf {} +
