# The two quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ml,loadtest,embedded,validate]'
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

# The node images (deploy/docker/): CPU (gateway, Ray head, cpu and media workers) and GPU
# (face workers), each installing this project's wheel on the pinned rayproject/ray base.
IMAGE ?= ghcr.io/examday/examday
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
.PHONY: image image-cpu image-gpu
image: image-cpu image-gpu

image-cpu:
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile.cpu \
	  --build-arg EXAMDAY_VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

image-gpu:
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile.gpu \
	  --build-arg EXAMDAY_VERSION=$(VERSION) -t $(IMAGE)-gpu:$(VERSION) .

# The per-region Kubernetes manifests (cluster/regions.py), into build/manifests/REGION.yaml.
.PHONY: manifests
manifests: $(STAMP)
	mkdir -p build/manifests
	for region in $$($(BIN)/python -m cluster.regions list); do \
	  $(BIN)/python -m cluster.regions render --region $$region > build/manifests/$$region.yaml || exit 1; \
	done
