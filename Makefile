# One place for the project's commands. The README names the two that matter:
#   make run   -- set up and serve on the embedded SQLite store, seeded with demo users
#   make test  -- set up and run the whole default test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto' | sort)
DATA_DIR ?= data
# protoc from grpcio-tools, with the mypy-protobuf plugins of this venv (not of $PATH).
PROTOC := $(BIN)/python -m grpc_tools.protoc -I protos \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

.PHONY: release-api-image fuzz interop-deps setup lock run run-spanner-emulator test generate check-generated lint typecheck buf-lint breaking ci clean \
	bench bench-setup bench-h2load bench-micro bench-smoke bench-memory bench-overload

# requirements-lock.txt pins every package of the venv, pip included, with its hashes: the
# pip-compile of pyproject.toml with all its extras (docs/DEVELOPMENT.md, "Dependencies"). After changing
# the dependencies in pyproject.toml: `make lock`, then `make setup`.
LOCK := requirements-lock.txt
# The image's lock (deploy/Dockerfile): only [project] dependencies, at the versions of $(LOCK)
# (pip-compile starts from a copy of it and keeps every pin that still applies), with hashes.
# A constraints file with hashes cannot stand in for it: pip then demands a hash for every
# requirement (issue 25). tests/test_dependencies.py checks the two agree.
RUNTIME_LOCK := requirements-runtime-lock.txt
# `make setup` installs only when pyproject.toml or the lock is newer than this stamp.
SETUP_STAMP := $(VENV)/.setup-stamp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(SETUP_STAMP)

# The lock first (-qq: the WARNING lines pip prints there come from the machine's pip
# configuration, an extra index lacking some packages; errors still show), then this
# project, editable, without dependencies, built offline by the locked setuptools. -W: a
# note of setuptools that folders named like our packages in the working directory could
# shadow them (they are those very folders). pip check: the lock satisfies pyproject.toml.
$(SETUP_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -qq --require-hashes -r $(LOCK)
	$(BIN)/python -W 'ignore:Editable installation' -m pip install --quiet --no-deps \
		--no-index --no-build-isolation -e .
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
		echo "$(LOCK) does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $@

# Regenerates the locks from pyproject.toml, keeping the locked versions that still satisfy
# it. LOCK_ARGS=--upgrade moves every package to its newest allowed version,
# LOCK_ARGS='--upgrade-package NAME' one package.
LOCK_ARGS ?=
lock: | $(BIN)/python
	@test -x $(BIN)/pip-compile || $(BIN)/python -m pip install -qq --require-hashes -r $(LOCK)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --extra bench \
		--strip-extras --allow-unsafe --generate-hashes --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml
	cp $(LOCK) $(RUNTIME_LOCK)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --allow-unsafe \
		--generate-hashes --no-emit-index-url --no-emit-find-links --output-file $(RUNTIME_LOCK) \
		pyproject.toml

# The development credentials go beside the database (ENTITLEMENTS_DATA_DIR). seed-demo writes
# the demo users into a new store only, so a restart keeps their state and history
# (docs/DEMO.md; `entitlements seed-demo --reseed` writes them again).
run: setup
	$(BIN)/entitlements seed-demo --storage sqlite:///$(DATA_DIR)/entitlements.db
	ENTITLEMENTS_DATA_DIR=$(DATA_DIR) \
		$(BIN)/entitlements serve --storage sqlite:///$(DATA_DIR)/entitlements.db

# The same on the Cloud Spanner emulator (deploy/run-spanner-emulator.sh: starts it, migrates,
# seeds, serves; Ctrl-C stops both).
run-spanner-emulator: setup
	BIN=$(BIN) DATA_DIR=$(DATA_DIR) deploy/run-spanner-emulator.sh

test: setup interop-deps
	$(BIN)/python -m pytest -q

# The tests marked slow, left out of `make test` (pyproject.toml): the Dockerfile's install
# steps in a fresh venv (~40 s, packages from the pip index).
.PHONY: test-slow
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# A long, bounded fuzz run of every RPC through a real server (the default suite runs a
# short one). FUZZ_EXAMPLES per RPC; pytest-timeout bounds the whole run.
FUZZ_EXAMPLES ?= 2000
fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/fuzz --timeout 900

# Fault drills (benchmarks/chaos): each fault made for real against `entitlements serve
# --workers 2` under a steady read+write load (~3-5 minutes); tables printed, JSON and
# Markdown in $(BENCH_RESULTS). Exits 1 if an acknowledged write is lost or a drill never
# recovers. The default suite runs a short subset (tests/integration/test_chaos_fast.py).
.PHONY: chaos
chaos: setup bench-h2load
	$(BIN)/python -m benchmarks.chaos --out $(BENCH_RESULTS)

# Benchmarks (docs/PERFORMANCE.md); results go to $(BENCH_RESULTS) (git-ignored).
#   bench         the end-to-end load run against the empty-handler floors (~6 minutes)
#   bench-smoke   its CI smoke (~45 s): exits 1 past the bounds of benchmarks/load/scenarios.py
#                 or, against the baseline run $(BENCH_COMPARE), past the thresholds of the
#                 ratios to the floor (BENCH_COMPARE= skips the comparison)
#   bench-compare compares a finished run, $(BENCH_RUN) (default: the newest smoke), with
#                 $(BENCH_BASELINE); exits 1 past the thresholds
#   bench-micro   pytest-benchmark of the hot paths (not part of `make test`)
#   bench-memory  the memory of a warm cache of 1,000,000 users (~1 minute)
#   bench-freshness  write-to-visible and watch latency, the feed's cost, hit rate by TTL
#   bench-client  the client library's near cache (docs/CLIENT.md): hit latency, RPCs saved,
#                 staleness, memory, the server's cost of change streams (~2.5 minutes)
#   bench-overload  the overload drill of issue 21 (docs/PERFORMANCE.md, "Overload"): saturation,
#                 then 2x and 3x open loop for 15 s each with a 0.5 s-deadline probe (~1.5 minutes)
#   bench-overload-smoke  its CI smoke (~30 s): 1x and 3x, 4 s each; exits 1 when the server
#                 does not survive, sheds at 1x, or does not recover (loose bounds)
#   bench-h2load  installs h2load (Debian package nghttp2-client), the load tool's C loader
#   bench-capacity  the capacity plan's tables (docs/CAPACITY.md), from the model and simulator
BENCH_RESULTS ?= benchmarks/results
BENCH_BASELINE ?= benchmarks/baselines/smoke.json
BENCH_COMPARE ?= $(BENCH_BASELINE)
BENCH_RUN ?= $$(ls -t $(BENCH_RESULTS)/smoke-*.json | head -n 1)
# apt-get needs root: CI runs as root, elsewhere it goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
bench-h2load:
	@command -v h2load >/dev/null 2>&1 || { \
		echo "h2load not found: installing the Debian package nghttp2-client"; \
		$(APT_GET) install -y -q nghttp2-client \
			|| { $(APT_GET) update -q && $(APT_GET) install -y -q nghttp2-client; }; }
	@command -v h2load >/dev/null 2>&1 \
		|| { echo "h2load is still missing: install the Debian package nghttp2-client"; exit 1; }

# matplotlib (the bench extra) comes with the lock.
bench-setup: setup bench-h2load

bench: bench-setup
	$(BIN)/python -m benchmarks.load --out $(BENCH_RESULTS)

bench-smoke: setup bench-h2load
	$(BIN)/python -m benchmarks.load --smoke $(if $(BENCH_COMPARE),--compare $(BENCH_COMPARE)) \
		--out $(BENCH_RESULTS)

.PHONY: bench-compare
bench-compare: setup
	$(BIN)/python -m benchmarks.load.compare "$(BENCH_RUN)" $(BENCH_BASELINE)

bench-micro: setup
	mkdir -p $(BENCH_RESULTS)
	$(BIN)/python -m pytest benchmarks/micro -q \
		--benchmark-json=$(BENCH_RESULTS)/micro-$$(date +%Y%m%d-%H%M%S).json \
		--benchmark-sort=name --benchmark-columns=min,median,mean,ops,rounds

bench-memory: setup
	$(BIN)/python -m benchmarks.memory --out $(BENCH_RESULTS)

# Write-to-visible and watch latency across workers (SQLite and the Spanner emulator, under
# a background load), the change feed's cost on the cache-hit path, and the hit rate by
# cache TTL (benchmarks/freshness; ~3-4 minutes). BENCH_FRESHNESS_ARGS=--no-spanner etc.
# The client library's near cache against real servers (benchmarks/client): hit latency,
# checks/s, RPCs saved on a Zipf trace, staleness after another process's write, memory per
# cached decision, the server's cost of 100 change streams. BENCH_CLIENT_ARGS=--short: a smoke.
.PHONY: bench-client
BENCH_CLIENT_ARGS ?=
bench-client: setup bench-h2load
	$(BIN)/python -m benchmarks.client --out $(BENCH_RESULTS) $(BENCH_CLIENT_ARGS)

bench-overload: setup bench-h2load
	$(BIN)/python -m benchmarks.overload --out $(BENCH_RESULTS) $(BENCH_OVERLOAD_ARGS)

.PHONY: bench-overload-smoke
bench-overload-smoke: setup bench-h2load
	$(BIN)/python -m benchmarks.overload --smoke --out $(BENCH_RESULTS)/overload-smoke

.PHONY: bench-freshness
BENCH_FRESHNESS_ARGS ?=
bench-freshness: setup bench-h2load
	$(BIN)/python -m benchmarks.freshness --out $(BENCH_RESULTS) $(BENCH_FRESHNESS_ARGS)

# The capacity plan (docs/CAPACITY.md): the model's tables with the simulator's hit rates
# (~1 minute of CPU; fixed seeds, so the output is what the document quotes).
.PHONY: bench-capacity
bench-capacity: setup
	mkdir -p $(BENCH_RESULTS)
	$(BIN)/python -m benchmarks.capacity --out $(BENCH_RESULTS)

# The Node.js client of tests/interop proves other languages need only protos/.
NODE_DEPS := tests/interop/node/node_modules/.package-lock.json
interop-deps: $(NODE_DEPS)
$(NODE_DEPS): tests/interop/node/package-lock.json
	@if command -v npm >/dev/null; then \
		cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node.js interop test will be skipped"; fi

# Stubs in other languages for client teams (buf.gen.yaml; docs/API.md, "For client teams"):
#   generate-clients  installs the plugins (Debian packages protoc-gen-go and
#                     protoc-gen-go-grpc; ts-proto from npm into clients/typescript), then
#                     writes Go and TypeScript stubs to clients/{go,typescript}/generated/
#   check-clients     also compiles them (CI): go vet against Debian's Go gRPC and protobuf
#                     libraries, tsc --noEmit against @grpc/grpc-js
#   stubs-wheel       builds the Python stubs package (clients/python) into dist/
.PHONY: client-plugins generate-clients check-clients stubs-wheel
CLIENT_PLUGIN_DEBS := protoc-gen-go protoc-gen-go-grpc
CLIENT_CHECK_DEBS := golang-go golang-google-grpc-dev golang-google-protobuf-dev
TS_PLUGIN_DEPS := clients/typescript/node_modules/.package-lock.json
GO_CHECK := $(VENV)/go-check
# The Debian packages of these targets: root (CI) installs them with apt-get; anyone else
# gets them without root or sudo, downloaded with their missing dependencies (~25 packages,
# Go among them) and unpacked into DEB_ROOT (clients/fetch_debs.py). FETCH_DEBS=1 does that
# as root too; FETCH_DEBS= installs through sudo instead.
DEB_ROOT := $(abspath $(VENV)/debroot)
FETCH_DEBS ?= $(shell [ "$$(id -u)" = 0 ] || echo 1)
WITH_DEBS := PATH="$(DEB_ROOT)/usr/bin:$$PATH"
define deb_install
if [ -n "$(FETCH_DEBS)" ]; then \
	echo "fetching the Debian packages $(1) and their missing dependencies into $(DEB_ROOT) (no root needed)"; \
	$(BIN)/python clients/fetch_debs.py $(DEB_ROOT) $(1); \
else \
	echo "installing the Debian packages $(1) and their dependencies with apt-get (needs root: $(if $(SUDO),through sudo,as root))"; \
	$(APT_GET) install -y -q --no-install-recommends $(1) \
		|| { $(APT_GET) update -q && $(APT_GET) install -y -q --no-install-recommends $(1); }; \
fi
endef
client-plugins: setup $(TS_PLUGIN_DEPS)
	@$(WITH_DEBS); command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null \
		|| { $(call deb_install,$(CLIENT_PLUGIN_DEBS)); }
$(TS_PLUGIN_DEPS): clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error

generate-clients: setup client-plugins
	$(WITH_DEBS) $(BIN)/buf generate

check-clients: generate-clients
	@$(WITH_DEBS); command -v go >/dev/null && { [ -d /usr/share/gocode/src/google.golang.org/grpc ] \
		|| [ -d $(DEB_ROOT)/usr/share/gocode/src/google.golang.org/grpc ]; } \
		|| { $(call deb_install,$(CLIENT_CHECK_DEBS)); }
	cd clients/typescript && node_modules/.bin/tsc -p tsconfig.json
	rm -rf $(GO_CHECK)/src && mkdir -p $(GO_CHECK)/src/stubs
	cp -r clients/go/generated/entitlements $(GO_CHECK)/src/stubs/
	$(WITH_DEBS) GO111MODULE=off \
		GOPATH=$(abspath $(GO_CHECK)):/usr/share/gocode:$(DEB_ROOT)/usr/share/gocode \
		GOCACHE=$(abspath $(GO_CHECK))/cache GOFLAGS= go vet stubs/entitlements/v1
	@echo "Go and TypeScript stubs generated and compiled"

stubs-wheel: setup
	$(BIN)/python -m pip wheel --quiet --no-deps clients/python -w dist

# Regenerates generated/ from protos/ (messages, gRPC stubs and their .pyi type stubs).
generate: setup
	rm -rf generated/entitlements
	$(PROTOC) --python_out=generated --mypy_out=generated \
		--grpc_python_out=generated --mypy_grpc_out=generated $(PROTOS)
	find generated -type d -exec touch {}/__init__.py \;
	rm -f generated/__init__.py

# Fails when generated/ differs from what protos/ produce.
check-generated: setup
	rm -rf $(VENV)/generated-check && mkdir -p $(VENV)/generated-check
	$(PROTOC) --python_out=$(VENV)/generated-check --mypy_out=$(VENV)/generated-check \
		--grpc_python_out=$(VENV)/generated-check --mypy_grpc_out=$(VENV)/generated-check $(PROTOS)
	find $(VENV)/generated-check -type d -exec touch {}/__init__.py \;
	rm -f $(VENV)/generated-check/__init__.py
	diff -r --exclude=__pycache__ $(VENV)/generated-check generated \
		|| (echo "generated/ is stale: run 'make generate' and commit" && exit 1)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy

buf-lint: setup
	$(BIN)/buf lint

# Compares protos/ with the released API (a buf image committed in docs/api/): fails on
# any change that breaks clients of the release. After a release: make release-api-image.
RELEASED_API := docs/api/entitlements-v1-released.binpb
breaking: setup
	$(BIN)/buf breaking --against $(RELEASED_API)

release-api-image: setup
	$(BIN)/buf build -o $(RELEASED_API)

ci: lint typecheck buf-lint check-generated test

clean:
	rm -rf $(VENV) build *.egg-info
