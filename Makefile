# linen — build, test, demo and benchmarks.
#
#   sudo make demo    the main job: a simulated node with pods on a bridge network
#   sudo make test    everything CI runs (installs what the tests need)
#   sudo make bench   ADD/DEL latency against the reference plugins

GO      ?= go
BIN     := bin
DEBPKGS := iproute2 nftables iptables iperf3 iputils-ping containernetworking-plugins conntrack dnsmasq-base containerd runc

.PHONY: all build deps lint unit test test-vm bench demo clean fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $(BIN)/linen-cni ./cmd/linen-cni
	$(GO) build -trimpath -ldflags=-s -o $(BIN)/linen ./cmd/linen
	$(GO) build -trimpath -ldflags=-s -o $(BIN)/linen-etcd ./cmd/linen-etcd

# Debian packages the tests and the demo use; installed only when missing.
deps:
	@missing=""; for p in $(DEBPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit and namespace tests of every package, with the race detector.
unit:
	$(GO) test -race -count=1 -timeout 20m ./...

# Integration tests drive the built binaries through libcni.
integration: build
	LINEN_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m ./test/...

# Tests that need kernel modules this host may lack (ipvlan, 8021q, dummy,
# bridge VLAN filtering) run in a qemu VM booting Debian's kernel; VM_PKGS
# overrides the package list. See scripts/test-vm.md.
VM_PKGS ?=
test-vm: deps
	VM_PKGS="$(VM_PKGS)" GO="$(GO)" ./scripts/test-vm.sh

test: deps lint build unit test-vm

fuzz:
	./scripts/fuzz.sh 20s

bench: deps build
	$(BIN)/linen bench cni

demo: deps build
	$(BIN)/linen demo

clean:
	rm -rf $(BIN)
