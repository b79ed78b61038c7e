# QLC — see README.md. Every target works on a fresh machine with Go 1.26.
GO        ?= go
PKGS      := ./...
RACE_PKGS := ./actors/... ./gateway/... ./stagework/... ./cmd/...

.PHONY: run test vet fmt-check bench fuzz proto build

## run: the whole system on localhost:8080 (one process, simulated models)
run:
	$(GO) run ./cmd/gateway -local -addr localhost:8080

## test: every test (unit + race + browser); .ci/run calls this
test: vet fmt-check
	$(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -name '*.pb.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: the figures in BENCHMARKS.md
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20x ./gateway/
	$(GO) test -run '^$$' -bench . -benchmem ./stagework/...
	./scripts/idle-rss.sh

## fuzz: each fuzz target for 30 s (interesting inputs land in testdata/fuzz)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecoder$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/sse/
	$(GO) test -run '^$$' -fuzz '^FuzzParseChunk$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/openai/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/
	$(GO) test -run '^$$' -fuzz '^FuzzNextToken$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRunRequest$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzChatRequest$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzEventJSON$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/

## proto: regenerate messages/*.pb.go (Debian's protoc + pinned protoc-gen-go)
proto:
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--go_out=. --go_opt=module=github.com/qlc-project/qlc \
		-I messages messages/*.proto

build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...
