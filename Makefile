# warren — build, test and demo. `make demo` and `make test` are all a newcomer needs.
GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: all build test lint release-check unit load fuzz demo bench release clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/warren ./cmd/warren-coord

# test: formatting, vet, the dependency rules, every package's tests with the race detector, the
# process-level tests against the built binaries, and a short run of every fuzz target.
test: lint release-check build unit load fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# release-check: the whole module type-checks and vets for the other release platforms, so code that
# only builds on Linux shows at once (Linux-only parts live in *_linux.go files with *_other.go stubs).
# `make release` builds all six binaries; CI runs it after `make test`.
release-check:
	GOOS=windows $(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)

unit:
	$(GO) test -race -shuffle=on -timeout 20m $(PKGS)

# Load tests measure times, which the race detector distorts: they skip under -race and run here.
load:
	$(GO) test -count=1 -timeout 5m -run 'TestCoordRestartUnderLoad' ./e2e/

# Every fuzz target for a few seconds: a smoke run that catches regressions in the decoders
# (scripts/fuzz.sh says which failure is Go's own and how it is still checked). 3 s each keeps
# `make test` well under 15 minutes on a 2-core machine; `make fuzz FUZZTIME=10m` for a real run.
FUZZTIME ?= 3s
FUZZ     := ./control:FuzzDecode ./control:FuzzSideChannel ./control:FuzzRelayConsent ./peer:FuzzParseProbe ./peer:FuzzParseStreamHeader ./peer:FuzzGROSplit ./peer:FuzzUnpad ./tun:FuzzHandleFrame ./socks:FuzzParseUDPHeader ./netstack:FuzzInject ./socks:FuzzHandshake ./coord/store:FuzzVerifyPassword ./coord/store:FuzzParseAuthKey ./acl:FuzzParse ./coord/operatorapi:FuzzDecodeRequest ./coord/abuse:FuzzParseBlockList ./internal/flagfile:FuzzParse ./internal/packet:FuzzParse ./internal/packet:FuzzChecksum ./internal/webui:FuzzReadJSON ./node:FuzzAnswerDNS ./internal/peercred:FuzzParseDiagReply ./internal/tcptun:FuzzReadFrame ./coord:FuzzClusterDecode ./internal/portmap:FuzzDecodePMP ./internal/portmap:FuzzDecodePCP ./internal/portmap:FuzzParseSSDP ./internal/portmap:FuzzParseDescription ./internal/portmap:FuzzParseSOAP
fuzz:
	@GO=$(GO) scripts/fuzz.sh $(FUZZTIME) $(FUZZ)

demo: build
	$(GO) run ./demo

# bench: warren side by side with plain loopback TCP and wireguard-go peers (gVisor netstacks behind
# SOCKS5; as root also kernel TUN in two netns, and `warren run`), each peer at GOMAXPROCS=1 and Go's
# default, plus UDP round trips, then the idle cost of a 10-node network (a separate module in bench/,
# so the product never depends on wireguard-go). About 15 min on 2 cores;
# BENCHFLAGS=-h lists the knobs.
BENCHFLAGS ?=
bench: build
	cd bench && $(GO) build -o ../$(BIN)/bench/ ./cmd/wgpeer && \
	  $(GO) run ./cmd/benchtable -bin ../$(BIN) -wgpeer ../$(BIN)/bench/wgpeer $(BENCHFLAGS)

# release: static, reproducible-path binaries of warren and warren-coord for every platform in
# PLATFORMS, as bin/release/warren_VERSION_OS_ARCH[.exe] (flat, so the directory uploads as is and
# `sha256sum -c SHA256SUMS` checks it), plus SHA256SUMS.
PLATFORMS   ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
RELEASE_DIR := $(BIN)/release
release:
	rm -rf $(RELEASE_DIR) && mkdir -p $(RELEASE_DIR)
	@set -e; for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  tmp=$(RELEASE_DIR)/.$${os}_$${arch}; echo "release $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$tmp/ ./cmd/warren ./cmd/warren-coord; \
	  for c in warren warren-coord; do mv $$tmp/$$c$$ext $(RELEASE_DIR)/$${c}_$(VERSION)_$${os}_$${arch}$$ext; done; \
	  rmdir $$tmp; done
	cd $(RELEASE_DIR) && if command -v sha256sum >/dev/null; then sha256sum -- warren*; else shasum -a 256 -- warren*; fi > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS
	@cat $(RELEASE_DIR)/SHA256SUMS

clean:
	rm -rf $(BIN)
