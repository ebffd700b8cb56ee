# Switchboard — common tasks. `make run` and `make test` are all a newcomer needs.

SHELL := /usr/bin/env bash
CACHE_DIR ?= $(HOME)/.cache/switchboard
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
TOOLS_DIR ?= $(CACHE_DIR)/tools
BUF_VERSION ?= 1.75.0
export SWITCHBOARD_BUF ?= $(TOOLS_DIR)/node_modules/.bin/buf
OPENAI_SDK_VERSION ?= 3.54.0
SCHEMATHESIS_VERSION ?= 4.32.5
export SWITCHBOARD_PYTHON ?= $(TOOLS_DIR)/venv/bin/python
export SWITCHBOARD_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
export SWITCHBOARD_TEST_REDIS_URL ?= redis://127.0.0.1:6379
# A fixed local demo key so the README walk-through works with no configuration.
# Set your own (or issue keys) for anything but a laptop.
DEMO_KEY ?= sb-demo-key-change-me

.PHONY: run build test tools lint fmt bench clean-test-dbs help

help:
	@echo "make run    - build and start every component on embedded defaults (SQLite, mock model)"
	@echo "make test   - run every test (needs PostgreSQL and Redis on 127.0.0.1; see README)"
	@echo "make lint   - rustfmt check and clippy with warnings as errors"
	@echo "make tools  - install the test tools (buf for gRPC reflection; the openai SDK and Schemathesis in a virtualenv)"
	@echo "make bench  - latency side by side: upstream directly, LLM proxy, whole gateway"

build:
	cargo build --release --bin switchboard

run: build
	@if [ -z "$$CHAT_GATEWAY_API_KEY" ]; then \
	  echo "CHAT_GATEWAY_API_KEY is unset: using the demo key '$(DEMO_KEY)' (local use only)"; \
	fi
	CHAT_GATEWAY_API_KEY="$${CHAT_GATEWAY_API_KEY:-$(DEMO_KEY)}" $(CARGO_TARGET_DIR)/release/switchboard

tools: $(SWITCHBOARD_BUF) $(TOOLS_DIR)/venv/.openai-$(OPENAI_SDK_VERSION) $(TOOLS_DIR)/venv/.schemathesis-$(SCHEMATHESIS_VERSION)

$(SWITCHBOARD_BUF):
	mkdir -p $(TOOLS_DIR)
	npm install --no-audit --no-fund --silent --prefix $(TOOLS_DIR) @bufbuild/buf@$(BUF_VERSION)
	$(SWITCHBOARD_BUF) --version

# The official OpenAI SDK, for the test that drives the OpenAI-compatible API with it.
$(TOOLS_DIR)/venv/.openai-$(OPENAI_SDK_VERSION):
	mkdir -p $(TOOLS_DIR)
	python3 -m venv $(TOOLS_DIR)/venv
	$(TOOLS_DIR)/venv/bin/pip install --quiet --disable-pip-version-check 'openai==$(OPENAI_SDK_VERSION)'
	touch $@

# Schemathesis, for the test that fuzzes every route from /openapi.json (same virtualenv).
$(TOOLS_DIR)/venv/.schemathesis-$(SCHEMATHESIS_VERSION): $(TOOLS_DIR)/venv/.openai-$(OPENAI_SDK_VERSION)
	$(TOOLS_DIR)/venv/bin/pip install --quiet --disable-pip-version-check 'schemathesis==$(SCHEMATHESIS_VERSION)'
	$(TOOLS_DIR)/venv/bin/schemathesis --version
	touch $@

# Doc examples are not tests here; the last line sums every test binary's result.
test: tools clean-test-dbs
	@mkdir -p $(CACHE_DIR); set -o pipefail; cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee $(CACHE_DIR)/test.log; \
	  status=$${PIPESTATUS[0]}; \
	  awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' $(CACHE_DIR)/test.log; \
	  exit $$status

bench:
	cargo run --release -p switchboard-e2e --example bench

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Each PostgreSQL test makes a database of its own; drop the ones earlier runs left.
clean-test-dbs:
	@if command -v psql >/dev/null; then \
	  psql "$(SWITCHBOARD_TEST_POSTGRES_URL)" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sb_test_%'" 2>/dev/null \
	  | while read -r db; do psql "$(SWITCHBOARD_TEST_POSTGRES_URL)" -qc "DROP DATABASE IF EXISTS $$db" >/dev/null 2>&1 || true; done; \
	fi
