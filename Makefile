# Two entry points (see README): `make test` and `make book`. Both create or update .venv.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The read-only local data mirror, when this checkout sits beside one (offline machines).
MIRROR := $(abspath $(wildcard ../shared/data))
ifneq ($(MIRROR),)
export COMPENDIUM_DATA_MIRROR ?= $(MIRROR)
endif

PROFILE ?= default
# Two chapters at a time, cores // 2 threads each (one on the 2-core reference machine; compendium
# build shares the cores out, OMP_NUM_THREADS overrides): on the 2-core
# reference machine the default book built in 974 s this way against 1421 s one after the
# other with two threads each, since most chapter kernels are too small to keep two threads busy.
# A record repeats bit for bit only at its own thread count (its torch_threads): `compendium run X --threads N`.
JOBS    ?= 2

.PHONY: install test book bench clean

install: $(STAMP)

# Re-install whenever the pins or the package metadata change.
$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# (grep drops the pip-config noise about absent local index folders on the reference machines)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -c "import compendium, torch, snntorch, torch_geometric, statsmodels, papermill, jupyter_book"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

book: $(STAMP)
	$(BIN)/compendium build --profile $(PROFILE) --jobs $(JOBS)
	@echo "Open _build/html/index.html"

# Every ratio against its target (ratios.py), the conv SNN three ways (step_time.py), and the
# allocator setting at the chapter level (allocator.py). `import compendium` raises glibc's
# mmap/trim thresholds in every process (compendium/runtime.py), so the book's kernels and the
# tests run with it too; COMPENDIUM_MALLOC=0 turns it off.
bench: $(STAMP)
	$(BIN)/python bench/ratios.py
	$(BIN)/python bench/step_time.py
	$(BIN)/python bench/allocator.py
	$(BIN)/python bench/trace_update.py
	$(BIN)/python bench/lif_kernel.py

# `compendium clean` refuses while a build or a chapter run holds its lock; without the venv,
# the same paths by hand (dot-files too: leftovers of interrupted runs start with a dot).
clean:
	if [ -x $(BIN)/compendium ]; then $(BIN)/compendium clean; \
	else rm -rf _build book/chapters results/*.json results/*.log results/.[!.]*; fi
