# One-command set-up: every target creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: venv test demo bench dgl-env clean

venv: $(STAMP)

# torch is installed first and pinned so pip never resolves a CUDA build for it.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
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

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .hypothesis

# JupyterLab is not a project dependency: installed into .venv on first use (it is on the index).
.PHONY: notebooks
notebooks: $(STAMP)
	test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install -q -c constraints.txt jupyterlab
	$(VENV)/bin/jupyter lab notebooks/
