# devfleet: build, run and test. `make run` and `make test` are the two commands in README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS     := $(CURDIR)/.bin
export PATH := $(TOOLS):$(PATH)

# Code generators, pinned: `make generate` must reproduce proto/gen and proto/apidoc byte for byte.
PROTOC_VERSION            := 3.21.12
PROTOC_GEN_GO_VERSION     := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION      := v2.33.0
# Carries google/api/{annotations,http}.proto, which Debian does not package.
GOOGLEAPIS_MODULE         := github.com/grpc-ecosystem/grpc-gateway@v1.16.0

.PHONY: build run test test-unit test-race test-fuzz test-e2e lint generate check-generated tools deps-test bench clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: build, start a single-node dev cluster with a demo fleet, show the CLI using it, and keep
## it running until Ctrl-C. The demo fleet runs on in-memory hypervisors; where the machine can
## (root, libvirt and QEMU installable), two real local libvirt hosts join it in region "local"
## and run a real demo devserver (see it with virsh).
DEV_GRPC  := 127.0.0.1:7401
RUN_HOSTS := /tmp/devfleet-run/hosts
run: build
	@$(GO) build -o $(BIN)/ ./e2e/libvirthost/hostsctl
	@df="$(BIN)/devfleet --addr $(DEV_GRPC)"; \
	  $(BIN)/hostsctl down --dir $(RUN_HOSTS) >/dev/null 2>&1 || true; \
	  hosts=""; \
	  if hosts=$$($(BIN)/hostsctl up --n 2 --dir $(RUN_HOSTS) 2>/tmp/devfleet-run-hosts.log); then :; else \
	    echo "make run: no real libvirt hosts here (see /tmp/devfleet-run-hosts.log; needs root and the libvirt/QEMU packages)."; \
	    echo "make run: continuing with the in-memory hypervisors only."; hosts=""; fi; \
	  $(BIN)/devfleetd --dev --log-level warn --guest-shutdown-grace 2s --operators ops & pid=$$!; `# test guests have no OS to power off: cut them after 2s` \
	  trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; $(BIN)/hostsctl down --dir $(RUN_HOSTS) >/dev/null 2>&1 || true' EXIT INT TERM; \
	  for i in $$(seq 150); do $$df --timeout 2s devserver show carol-ml >/dev/null 2>&1 && break; sleep 0.2; done; \
	  set -x; \
	  sleep 0.2; $$df cluster status; \
	  $$df host list --region eu-west; \
	  $$df host cordon fra1-h1 --reason "make run: disk swap"; \
	  $$df devserver create dana-dev --owner dana --flavor large --region eu-west --expires-in 72h; \
	  $$df devserver list; \
	  $$df capacity report --region eu-west; \
	  $$df capacity lose --region us-east; \
	  $$df --as dana devserver migrate dana-dev --region us-east --monitor; \
	  set +x; \
	  if [ -n "$$hosts" ]; then \
	    set -x; \
	    $$df region add local; $$df site add lab1 --region local; \
	    $$df flavor add tiny --cpus 1 --memory-mib 256 --disk-gib 0 --description "a real TCG guest on a local libvirt host"; \
	    while read -r name uri mig; do $$df host add "lab1-$$name" --site lab1 --libvirt "$$uri" --migration-uri "$$mig" --cpus 2 --memory-mib 4096 --disk-gib 20 --cpu-overcommit 4; done <<<"$$hosts"; \
	    $$df devserver create demo-dev --owner demo --flavor tiny --region local --permanent; \
	    $$df pool set --region local --profile www --target 2; \
	    set +x; \
	    for i in $$(seq 100); do $$df devserver show demo-dev -o json | grep -q RUNNING && break; sleep 0.2; done; \
	    for i in $$(seq 100); do $$df pool list | grep -qE '^local +www +2 +2 ' && break; sleep 0.2; done; \
	    set -x; \
	    $$df devserver show demo-dev; \
	    $$df pool list; \
	    $$df container claim --profile www --region local --owner demo; \
	    $$df container list; \
	    to=lab1-h2; $$df devserver show demo-dev | grep -q 'lab1-h2' && to=lab1-h1; \
	    $$df --as demo devserver migrate demo-dev --to-host $$to --monitor; \
	    $$df flavor add tiny-plus --cpus 1 --memory-mib 384 --disk-gib 0 --description "tiny, with more memory"; \
	    $$df --as demo devserver migrate demo-dev --flavor tiny-plus --monitor; \
	    on=$$($$df devserver show demo-dev -o json | sed -n 's/.*"host": "\([^"]*\)".*/\1/p'); \
	    $$df --as ops drain start --hosts $$on --reason "make run: maintenance" --dry-run; \
	    id=$$($$df --as ops drain start --hosts $$on --reason "make run: maintenance" | awk 'NR==1 {sub(":", "", $$2); print $$2}'); \
	    set +x; for i in $$(seq 100); do $$df doctor demo-dev | grep -q "being migrated" && break; sleep 0.1; done; set -x; \
	    $$df doctor demo-dev; \
	    $$df drain status $$id --monitor; \
	    $$df events watch --topic drain --topic migration --since 5m --timeout 3s; \
	    $$df drain list; \
	    $$df host uncordon $$on; \
	    set +x; \
	    while read -r name uri mig; do echo "+ virsh -c '$$uri' list"; virsh -c "$$uri" list; done <<<"$$hosts"; \
	  fi; \
	  echo; echo "devfleetd --dev keeps running; try: export DEVFLEET_ADDR=$(DEV_GRPC); $(BIN)/devfleet --help   (Ctrl-C stops it)"; \
	  wait $$pid

## test: install what the tests need, then run every check CI runs.
test: deps-test lint check-generated test-race test-fuzz test-e2e

# Tools for generation, and libvirt + QEMU for the tests on real hosts (installed once here: the
# test packages that start hosts run in parallel).
deps-test: tools
	$(GO) run ./e2e/libvirthost/hostsctl deps

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test-unit:
	$(GO) test -count=1 ./...

# Every package but e2e, with the race detector (e2e runs real processes, below).
test-race:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /e2e)

# Each fuzz target runs briefly; the committed seeds in testdata/fuzz run in every plain `go test`.
FUZZ_TIME ?= 10s
test-fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZ_TIME) ./controlplane/fsm
	$(GO) test -run '^$$' -fuzz '^FuzzApplyCommands$$' -fuzztime $(FUZZ_TIME) ./controlplane/fsm
	$(GO) test -run '^$$' -fuzz '^FuzzValidateHost$$' -fuzztime $(FUZZ_TIME) ./controlplane/validate
	$(GO) test -run '^$$' -fuzz '^FuzzValidateDevserver$$' -fuzztime $(FUZZ_TIME) ./controlplane/validate

test-e2e:
	$(GO) test -count=1 -timeout 20m ./e2e/...

## bench: the figures docs/benchmarks.md records.
bench: build
	$(BIN)/devfleet bench apply --clients 1,64,256
	$(BIN)/devfleet bench scale
	$(BIN)/devfleet bench events
	$(GO) test -run '^$$' -bench Libvirt -benchtime 3x ./controlplane/hypervisor

## tools: protoc from Debian and the pinned protoc plugins.
tools:
	@if ! command -v protoc >/dev/null || ! protoc --version | grep -q "$(PROTOC_VERSION)"; then \
	  echo "installing protoc $(PROTOC_VERSION) (Debian protobuf-compiler)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; \
	fi
	@mkdir -p $(TOOLS)
	@check() { [ -x "$(TOOLS)/$$1" ] && $(GO) version -m "$(TOOLS)/$$1" | grep -q "mod.*$$2"; }; \
	  check protoc-gen-go $(PROTOC_GEN_GO_VERSION) || GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); \
	  check protoc-gen-go-grpc $(PROTOC_GEN_GO_GRPC_VERSION) || GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION); \
	  check protoc-gen-grpc-gateway $(GRPC_GATEWAY_VERSION) || GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION); \
	  check protoc-gen-openapiv2 $(GRPC_GATEWAY_VERSION) || GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

## generate: regenerate the Go, gateway and OpenAPI code from proto/.
generate: tools
	@googleapis=$$($(GO) mod download -json $(GOOGLEAPIS_MODULE) | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/third_party/googleapis; \
	  gateway=$$($(GO) list -m -f '{{.Dir}}' github.com/grpc-ecosystem/grpc-gateway/v2); \
	  rm -rf proto/gen && mkdir -p proto/gen && rm -f proto/apidoc/*.json; \
	  inc="-I proto -I $$googleapis -I $$gateway -I /usr/include"; \
	  protoc $$inc \
	    --go_out=proto/gen --go_opt=paths=source_relative \
	    --go-grpc_out=proto/gen --go-grpc_opt=paths=source_relative \
	    --grpc-gateway_out=proto/gen --grpc-gateway_opt=paths=source_relative \
	    --openapiv2_out=proto/apidoc --openapiv2_opt=allow_merge=true,merge_file_name=devfleet,json_names_for_fields=false,disable_default_errors=false \
	    proto/devfleet/v1/*.proto; \
	  protoc $$inc --go_out=proto/gen --go_opt=paths=source_relative proto/devfleet/fsm/v1/*.proto

## check-generated: fail when the committed generated code differs from what `make generate` makes.
check-generated: generate
	@if [ -n "$$(git status --porcelain -- proto/gen proto/apidoc)" ]; then \
	  echo "generated code is stale; run 'make generate' and commit:"; git status --porcelain -- proto/gen proto/apidoc; exit 1; fi

clean:
	rm -rf $(BIN)
