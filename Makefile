# The two quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ml,loadtest]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/examday up --demo

# lint-imports: the layers and package rules of docs/architecture.md ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The web tests drive Debian's chromium (Playwright's own browser download is not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: chromium
chromium:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	@# CJK glyphs, so that the Chinese pages are legible in the tests' screenshots; skipped
	@# quietly where there is no apt (the tests pass without them).
	@fc-list :lang=zh 2>/dev/null | grep -q . || ! command -v apt-get >/dev/null || \
	  $(SUDO) apt-get install -y --no-install-recommends fonts-wqy-zenhei >/dev/null 2>&1 || \
	  echo "fonts-wqy-zenhei not installed: Chinese text may show as boxes in screenshots"

# The TURN tests and `examday up`'s relay run Debian's coturn.
.PHONY: coturn
coturn:
	command -v turnserver >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y coturn)

# The TURN network tests build home networks of namespaces (ip from iproute2, nft).
.PHONY: netns-tools
netns-tools:
	command -v nft >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y nftables)
	command -v ip >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y iproute2)

pytest: $(STAMP) chromium coturn netns-tools
	$(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
