# One-command set-up, demo and tests. Every target sets up first; a second set-up is a no-op.
PYTHON_SYS ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip install --constraint constraints.txt
STAMP      := $(VENV)/.setup-done
DATA       ?= data
PYTEST_ARGS ?=

.PHONY: setup demo test lint format doctor data bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt tools/install_detectron2.py
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PIP) --quiet "setuptools<81" wheel
	$(PIP) --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) tools/install_detectron2.py
	$(PIP) --quiet -e ".[dev]"
	# lvis's metadata pulls the GUI build of OpenCV, which clashes with opencv-python-headless.
	$(PIP) --quiet --no-deps "lvis==0.5.3"
	touch $@

data: setup
	$(PY) tools/make_demo_data.py --out $(DATA)

doctor: setup
	$(PY) tools/env_info.py

demo: setup
	$(PY) tools/demo.py --data $(DATA) --out output/demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff: the linter and the formatter (100 columns, as Detectron2); CI runs `make lint`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) tools/benchmark_pretrain.py

# Removes the venv and the demo's outputs only (output/demo, output/demo_<budget>_s<seed>): output/ also holds your own pretraining
# checkpoints, converted weights and transfer grids, deleted only with CLEAN_OUTPUT=1.
# The digit data ($(DATA)) is kept either way.
CLEAN_OUTPUT ?= 0
clean:
	rm -rf $(VENV) output/demo output/demo_*_s*
	@if [ "$(CLEAN_OUTPUT)" = 1 ]; then echo "rm -rf output"; rm -rf output; \
	elif [ -d output ]; then echo "kept output/ (your own runs); make clean CLEAN_OUTPUT=1 deletes it too"; fi
