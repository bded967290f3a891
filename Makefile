# warren — build, test and demo. `make demo` and `make test` are all a newcomer needs.
GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: all build test lint unit load fuzz demo bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/warren ./cmd/warren-coord

# test: formatting, vet, the dependency rules, every package's tests with the race detector, the
# process-level tests against the built binaries, and a short run of every fuzz target.
test: lint build unit load fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -shuffle=on -timeout 20m $(PKGS)

# Load tests measure times, which the race detector distorts: they skip under -race and run here.
load:
	$(GO) test -count=1 -timeout 5m -run 'TestCoordRestartUnderLoad' ./e2e/

# Every fuzz target for a few seconds: a smoke run that catches regressions in the decoders.
FUZZTIME ?= 5s
FUZZ     := ./control:FuzzDecode ./control:FuzzSideChannel ./control:FuzzRelayConsent ./peer:FuzzParseProbe ./peer:FuzzParseStreamHeader ./socks:FuzzParseUDPHeader ./netstack:FuzzInject ./socks:FuzzHandshake ./coord/store:FuzzVerifyPassword ./coord/store:FuzzParseAuthKey ./acl:FuzzParse ./coord/operatorapi:FuzzDecodeRequest ./coord/abuse:FuzzParseBlockList ./internal/flagfile:FuzzParse ./internal/packet:FuzzParse
fuzz:
	@for t in $(FUZZ); do pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; done

demo: build
	$(GO) run ./demo

# bench: warren side by side with plain loopback TCP and two wireguard-go+gVisor peers (a separate
# module in bench/, so the product never depends on wireguard-go). BENCHFLAGS=-h lists the knobs.
BENCHFLAGS ?=
bench: build
	cd bench && $(GO) build -o ../$(BIN)/bench/ ./cmd/wgpeer && \
	  $(GO) run ./cmd/benchtable -bin ../$(BIN) -wgpeer ../$(BIN)/bench/wgpeer $(BENCHFLAGS)

clean:
	rm -rf $(BIN)
