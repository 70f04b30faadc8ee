# open-local — see README.md. Every target works on a fresh Debian machine with
# Go and root; third-party binaries are built from modules pinned in go.mod
# and hack/tools/*, cached under $(OPEN_LOCAL_CACHE).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export OPEN_LOCAL_CACHE ?= /var/cache/open-local
CLUSTER_DIR ?= /tmp/open-local/cluster
GO_TEST_FLAGS ?= -count=1 -timeout 70m
MODULE := github.com/open-local/open-local

.PHONY: all deps build harness tools verify test test-short bench generate cluster-up cluster-down demo demo-down images clean

all: build

# Versions stamped into our binaries: hack/version.sh is their one source
# (the image build uses it too).
## build: what ships (agent, csi, scheduler, the kubectl plugin kubectl-open_local) into bin/
build:
	@mkdir -p bin
	go build -ldflags "$$(hack/version.sh ldflags ours)" -o bin/ ./agent ./csi ./kubectl-open_local
	go build -ldflags "$$(hack/version.sh ldflags scheduler)" -o bin/ ./scheduler

## harness: the development CLIs under hack/ (demo, localcluster, loopvg, procruntime) into bin/
harness:
	@mkdir -p bin
	go build -o bin/ ./hack/...

## deps: the Debian packages demo and test use (lvm2, xfsprogs, qemu, …; hack/deps.sh)
deps:
	@hack/deps.sh

## tools: etcd, kube-apiserver, kube-controller-manager, kubectl, kwok, CSI sidecars, helm (cached)
tools:
	@hack/tools.sh >/dev/null

## verify: go.mod and go.sum are tidy, Go files are gofmt'ed (seconds; make test runs it first)
verify:
	go mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi

## test: every test: unit, real lvm2 on loop devices, the local real cluster, the VM with device-mapper
test: verify deps tools
	OPEN_LOCAL_TOOLS_DIR=$$(hack/tools.sh) go test $(GO_TEST_FLAGS) ./...

## test-short: the fast loop: unit tests only, no control plane, no VM, no tool build, no loop device or lvm2
## (capability.Require skips those under -short). The suites that need a cluster for every test are
## type-checked (go vet), not linked: linking ~50 test binaries is most of this target's time.
## Go's test cache is on, so unchanged packages are not run again; SHORT_FLAGS=-count=1 runs everything.
CLUSTER_SUITES := ./csi/e2e ./csi/snapshot ./csi/sanity ./csi/sanity/snapshots ./scheduler/e2e ./test/contention
SHORT_FLAGS ?=
test-short:
	go vet $(CLUSTER_SUITES)
	go test -short $(SHORT_FLAGS) $$(go list ./... | grep -v -x -F $(foreach p,$(CLUSTER_SUITES),-e $(MODULE)/$(p:./%=%)))

## bench: stock kube-scheduler vs ours, interleaved, on a local cluster with kwok nodes; prints one table
## (BENCH_RUNS pairs, default 2; OPEN_LOCAL_BENCH_NODES / OPEN_LOCAL_BENCH_PODS override the workload)
BENCH_RUNS ?= 2
bench: tools
	OPEN_LOCAL_TOOLS_DIR=$$(hack/tools.sh) OPEN_LOCAL_STOCK_SCHEDULER=$$(hack/stock-scheduler.sh) OPEN_LOCAL_BENCH_RUNS=$(BENCH_RUNS) \
	  go test ./scheduler/e2e -count=1 -run XXX -bench StockVsOurs -benchtime 1x -timeout 60m -v

## generate: deepcopy, CRD YAML (into the chart), typed client/listers/informers
generate:
	hack/update-codegen.sh

## images: the node, controller and scheduler images (needs a Docker engine; REGISTRY=, TAG=, PUSH=1)
images:
	deploy/images/build.sh

## cluster-up / cluster-down: the local control plane alone, detached
cluster-up: tools harness
	bin/localcluster up --dir $(CLUSTER_DIR)

cluster-down:
	@if [ -x bin/localcluster ]; then bin/localcluster down --dir $(CLUSTER_DIR); else go run ./hack/localcluster down --dir $(CLUSTER_DIR); fi

## demo / demo-down: the article's walkthrough on the local cluster (see README)
demo: deps tools build harness
	hack/demo.sh up

demo-down:
	hack/demo.sh down

clean: cluster-down
	rm -rf bin
