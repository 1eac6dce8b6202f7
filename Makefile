# Two commands on a fresh machine with only Python and pip:
#   make demo   -> creates .venv if missing, installs kjax with its extras, runs the tour
#   make test   -> same environment; ruff, pytest (tests + doctests), strict docs build
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kjax-installed
# The gpu extra (jax-triton) only where an NVIDIA driver is present.
EXTRAS := dev$(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)
PYTEST_WORKERS ?= 3

# kjax.ntk.experimental (neural-tangents' TensorFlow eNTK) needs TensorFlow: its tests run in a
# separate environment with the tf extra (make test skips them)
VENV_TF ?= .venv-tf

.PHONY: demo test test-tf lint pytest docs docs-serve bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { $(PYTHON) -m pip install --user virtualenv && $(PYTHON) -m virtualenv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m kjax.demo

test: lint pytest docs

lint: $(STAMP)
	$(PY) -m ruff check kjax tests benchmarks experiments conftest.py

pytest: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=15 -p no:cacheprovider

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

test-tf:
	@test -x $(VENV_TF)/bin/python || $(PYTHON) -m venv $(VENV_TF)
	$(VENV_TF)/bin/python -m pip install -q -e ".[dev,tf]"
	$(VENV_TF)/bin/python -m pytest -q -p no:xdist -p no:cacheprovider tests/ntk/test_experimental_tf.py
	$(VENV_TF)/bin/python -m pytest -q -p no:xdist -p no:cacheprovider -m nt_compat tests/nt_compat/experimental

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_TF) site .pytest_cache
