# Rampart. `make demo` and `make test` are the two commands the README promises; both work
# on a fresh machine (they build what is missing).
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
BIN_DIR := $(shell bash e2e/tools/build.sh --print)
export PATH := $(BIN_DIR):$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: controlplane
controlplane: ## build kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, helm, cyclonus and the CSI stack from Go modules (cached)
	@bash e2e/tools/build.sh >/dev/null

.PHONY: up
up: ## start the local control plane; writes .local/kubeconfig
	@bash e2e/controlplane/up.sh

.PHONY: down
down: ## stop the local control plane and remove its state
	@bash e2e/controlplane/down.sh

.PHONY: build
build: ## build the operator
	$(CARGO) build --workspace

.PHONY: crds
crds: build ## regenerate crds/ and the admission policy in config/admission/ (and the chart's copies, which its templates print) from the Rust types
	./target/debug/rampart crd > crds/rampart.dev_hardeningprofiles.yaml
	cp crds/rampart.dev_hardeningprofiles.yaml charts/rampart/crd/rampart.dev_hardeningprofiles.yaml
	./target/debug/rampart admission-policy > config/admission/admission_policy.yaml
	cp config/admission/admission_policy.yaml charts/rampart/admission/admission_policy.yaml

.PHONY: chart-readme
chart-readme: ## rewrite the values table in charts/rampart/README.md from values.yaml
	@python3 e2e/tools/chart-readme.py

.PHONY: unit
unit: ## unit tests, CRD freshness and the local CSI driver's tests (no cluster needed)
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p rampart --test crds_fresh
	$(CARGO) test -p rampart --test crd_descriptions
	$(CARGO) test -p rampart --test admission_policy_fresh
	cd e2e/tools/csi-hostpath && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go test ./...

.PHONY: e2e
e2e: controlplane ## end-to-end tests on the local control plane (starts and stops it if needed)
	@bash e2e/run-tests.sh

.PHONY: test
test: unit e2e ## everything CI runs

.PHONY: demo
demo: controlplane build ## the sample estate, the operator, a Ready profile and its drift report
	@bash e2e/demo.sh

.PHONY: lint
lint: ## rustfmt, clippy, helm lint, checkov over the chart and config/, server-side dry-run
	@bash e2e/lint.sh

.PHONY: bench
bench: controlplane ## the scale benchmark (not part of make test); N=1000 make bench for more namespaces
	@bash e2e/bench.sh

.PHONY: bench-admission
bench-admission: controlplane ## what the admission policy costs Rampart's writes: p50/p99 with the policy on and off (part of make bench too)
	@BENCH_ADMISSION_ONLY=1 bash e2e/bench.sh

.PHONY: bench-peers
bench-peers: controlplane ## Rampart beside Kyverno (built from Go modules, cached) at N=100 and N=1000 (not part of make test)
	@bash e2e/bench-peers.sh

IMAGE ?= ghcr.io/rampart-dev/rampart:0.1.0

.PHONY: image
image: ## build the container image (needs a Docker engine; this project's CI machine has none)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image needs a running Docker engine (docker info failed); build the image where one runs"; exit 1; }
	docker build -t $(IMAGE) .

.PHONY: sbom
sbom: ## CycloneDX SBOM of the Rust dependencies in target/sbom/
	@command -v cargo-cyclonedx >/dev/null || cargo install cargo-cyclonedx --locked
	cargo cyclonedx --format json --override-filename rampart-sbom
	# One SBOM per workspace crate: the operator's is what ships; the test harness's is kept beside it.
	mkdir -p target/sbom && mv rampart-sbom.json target/sbom/ && mv e2e/rampart-sbom.json target/sbom/rampart-e2e-sbom.json
	@echo "target/sbom/rampart-sbom.json ($$(grep -c '"bom-ref"' target/sbom/rampart-sbom.json) bom-refs)"

.PHONY: deny
deny: ## cargo deny: licences, bans and sources (advisories where the RustSec database is reachable)
	@command -v cargo-deny >/dev/null || cargo install cargo-deny --locked
	cargo deny check licenses bans sources
	@cargo deny check advisories || echo "advisories: NOT checked or NOT clean, see above (the RustSec database must be fetchable from GitHub)"
