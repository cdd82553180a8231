# One-command set-up: every target creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: venv test demo bench dgl-env clean real-data-deps

venv: $(STAMP)

# torch is installed first, version pinned (constraints.txt), so the later install never swaps it.
# Which build (CPU or CUDA) comes from where pip looks: by default pip's own configuration (here a
# local wheel cache with the CPU build; on plain PyPI the Linux wheel is the CUDA build). Set
# TORCH_INDEX_URL to choose: make venv TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (or .../whl/cuXYZ, e.g. cu128, for a CUDA build). Empty by default: nothing changes.
TORCH_INDEX_URL ?=
TORCH_INDEX_FLAG := $(if $(strip $(TORCH_INDEX_URL)), --index-url $(strip $(TORCH_INDEX_URL)),)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0$(TORCH_INDEX_FLAG)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The layering contracts (pyproject.toml [tool.importlinter]) first: seconds, and a broken layer
# is reported before the suite runs.
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/pinclip demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) benchmarks/bench_graph_build.py --json

dgl-env:
	bash benchmarks/make_dgl_env.sh

# The Debian packages behind `pinclip datasets unihan` (the Unihan database and a CJK font).
# Needs root (sudo is used when not root); their tests skip without them.
REAL_DATA_PACKAGES := unicode-data fonts-wqy-microhei
real-data-deps:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(REAL_DATA_PACKAGES)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .hypothesis

# JupyterLab is not a project dependency: installed into .venv on first use (it is on the index).
.PHONY: notebooks
notebooks: $(STAMP)
	test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install -q -c constraints.txt jupyterlab
	$(VENV)/bin/jupyter lab notebooks/
