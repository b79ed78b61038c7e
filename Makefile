# QLC — see README.md. Every target works on a fresh machine with Go 1.26.
GO        ?= go
PKGS      := ./...
# `docker compose` (plugin) where present, else the standalone docker-compose.
COMPOSE   ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COVER_PKGS ?= $(PKGS)
RACE_PKGS := ./actors/... ./quota/... ./cluster/... ./topology/... ./gateway/... ./stagework/... ./tokenizer/... ./chaos/... ./cmd/... ./loadgen/... ./client/... ./internal/tracing/... ./internal/spanstore/...

.PHONY: run test vet fmt-check cover bench profile fuzz proto build images compose-up compose-down integ cluster chaos chaos-smoke overload-smoke soak tokenizer-corpus bench-tokenizer tokenizer-generate

## run: the whole system on localhost:8080 (one process, simulated models)
run:
	$(GO) run ./cmd/gateway -local -addr localhost:8080 -trace-store 4096

## test: every test (unit + race + browser); .ci/run calls this. One package
## at a time (-p 1): the multi-process cluster tests must not share the two
## cores with other packages' tests (CPU starvation makes false suspicions).
test: vet fmt-check
	$(GO) test -p 1 -count=1 -timeout 15m $(PKGS)
	$(GO) test -p 1 -race -count=1 -timeout 15m $(RACE_PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -name '*.pb.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## cover: statement coverage per package (a table) and the packages held to 90 %
## (tokenizer; stagework with openai and sse, without the simulator; cluster);
## only some: make cover COVER_PKGS="./tokenizer/ ./stagework/... ./cluster/"
cover:
	GO="$(GO)" COVER_PKGS="$(COVER_PKGS)" ./scripts/cover.sh

## bench: the figures in BENCHMARKS.md
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20x -skip IdleSubscriberMemory ./gateway/
	$(GO) test -run '^$$' -bench IdleSubscriberMemory -benchtime 1x ./gateway/
	$(GO) test -run '^$$' -bench 'IdleSSESubscribers|SSEReadersRSS' -benchtime 1x ./cmd/gateway/
	$(GO) test -run '^$$' -bench Admission -benchtime 2000x ./gateway/
	$(GO) test -run '^$$' -bench . -benchmem ./stagework/...
	$(GO) test -run '^$$' -bench . -benchtime 1s ./gateway/store/
	$(GO) test -run '^$$' -bench FairSharing -benchtime 1x ./actors/
	$(GO) test -run '^$$' -bench FitPrompt100KB ./actors/
	$(GO) test -run '^$$' -bench MoAWallTime -benchtime 3x ./actors/
	$(GO) test -run '^$$' -bench StragglerDeadline -benchtime 10x ./actors/
	$(GO) test -run '^$$' -bench 'CrossNode|Remote' -benchtime 300x ./cmd/node/
	$(GO) test -run '^$$' -bench AdmissionCluster -benchtime 200x ./cmd/node/
	$(GO) test -run '^$$' -bench TokenizerThroughput -benchtime 20000x ./cmd/node/
	./scripts/idle-rss.sh
	@echo "tokenizer figures: make tokenizer-corpus && make bench-tokenizer

## scale: throughput against node count on the compose cluster (issue 15): for SCALE_NODES node counts,
## each node container under --cpus SCALE_NODE_CPUS and the gateway under a whole CPU, the highest Poisson
## rate of `fast` runs (64 tokens a stage) whose answer TTFT p99 stays within 2× the unloaded p99; a table
## on stdout, scale.md/.json/.svg in .qlc/scale/<time>/ (about 13 min for 1,2,3,4; SCALE_NODES=1,3 about
## 7 min). Not in make test. Under flock /tmp/qlc-chaos.lock; builds the images first (FROM scratch).
SCALE_NODES ?= 1,2,3,4
SCALE_NODE_CPUS ?= 0.2
SCALE_ARGS ?= -docker-shares 8192
.PHONY: scale
scale: images
	CGO_ENABLED=0 $(GO) build -o bin/linux/qlc-scale ./cmd/qlc-scale
	COMPOSE="$(COMPOSE)" flock /tmp/qlc-chaos.lock bin/linux/qlc-scale -sizes $(SCALE_NODES) -node-cpus $(SCALE_NODE_CPUS) $(SCALE_ARGS)

## scalesim: the tables of docs/scale.md — run placement at 10–500 nodes (about 3 min), then membership with
## 50–500 in-process members of the shipped configuration (about 5 min; two busy cores, under flock
## /tmp/qlc-bench.lock). Other sizes or a stretched time scale (the starvation check):
## make scalesim SCALESIM_ARGS="-what membership -members 250,500 -scale 4"; members over 4 processes on real
## loopback UDP/TCP: SCALESIM_ARGS="-what membership -members 500 -procs 4 -scale 5"
SCALESIM_ARGS ?=
.PHONY: scalesim
scalesim:
	flock /tmp/qlc-bench.lock $(GO) run ./cmd/qlc-scalesim $(SCALESIM_ARGS)

## profile: a gateway and two nodes as processes under bounded load (20 s of 8 concurrent runs on the
## instant profile), CPU and heap profiles from each ops listener (/debug/pprof), rendered as SVG and
## text top listings into .qlc/profile/<time>/ (installs Debian's graphviz for the SVGs when missing).
## Shorter or harder: make profile PROFILE_SECONDS=10 PROFILE_CONCURRENCY=32 PROFILE_RUN=quick
profile:
	GO="$(GO)" PROFILE_SECONDS="$(PROFILE_SECONDS)" PROFILE_CONCURRENCY="$(PROFILE_CONCURRENCY)" PROFILE_RUN="$(PROFILE_RUN)" ./scripts/profile.sh

## gateway-capacity: what one gateway carries per CPU (runs/s, tokens/s, CPU per 1000 tokens beside
## the nodes'), BENCHMARKS.md "Issue 18 item 3"; about 1 min; under flock /tmp/qlc-bench.lock.
## Two gateways behind the balancer: make gateway-capacity GATEWAYS=2 GATEWAY_CPUS="1 1"
GATEWAYS ?= 1
GATEWAY_CPUS ?= 1 1
.PHONY: gateway-capacity
gateway-capacity:
	GO="$(GO)" GATEWAYS="$(GATEWAYS)" GATEWAY_CPUS="$(GATEWAY_CPUS)" flock /tmp/qlc-bench.lock ./scripts/gateway-capacity.sh

## bench-peers: QLC side by side with Centrifugo v6.9.1 (uni_sse) and httputil.ReverseProxy, the
## table of BENCHMARKS.md's issue 11 (about 5 min, bounded; Centrifugo is built once into .qlc/bin,
## outside go.mod; under flock /tmp/qlc-bench.lock). Shrink it: BENCH_PEERS_ARGS="-rounds 1 -readers 100"
.PHONY: bench-peers
bench-peers:
	GO="$(GO)" BENCH_PEERS_ARGS="$(BENCH_PEERS_ARGS)" ./scripts/bench-peers.sh

## load: qlc-load against a gateway already running (make run in another terminal):
## LOAD_ARGS are qlc-load's flags (default: 40 runs of `fast`, 4 at a time); the
## report goes to .qlc/qlc-load.{json,html}
LOAD_ARGS ?= -profile fast -c 4 -n 40 -d 2m
.PHONY: load load-agreement
load:
	@mkdir -p .qlc
	QLC_API_KEY=$${QLC_API_KEY:-$$(sed -n 's/.*"tenant_key": *"\([^"]*\)".*/\1/p' .qlc/dev-keys.json)} \
	  $(GO) run ./cmd/qlc-load $(LOAD_ARGS) -json .qlc/qlc-load.json -html .qlc/qlc-load.html

## load-agreement: qlc-load against the gateway as `make run` starts it, compared with the
## gateway's own histograms and usage ledger; fails past AGREE_WITHIN % (5); ~1 min
load-agreement:
	GO="$(GO)" LOAD_ARGS="$(LOAD_ARGS)" ./scripts/load-agreement.sh

## fuzz: each fuzz target for 30 s (failing inputs land in testdata/fuzz; keep interesting ones there by hand)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecoder$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/sse/
	$(GO) test -run '^$$' -fuzz '^FuzzParseChunk$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/openai/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/
	$(GO) test -run '^$$' -fuzz '^FuzzNextToken$$' -fuzztime 30s -fuzzminimizetime 2s ./stagework/sim/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRunRequest$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzChatRequest$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzEventJSON$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzParseResume$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzParseTenantsFile$$' -fuzztime 30s -fuzzminimizetime 2s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzEncode$$' -fuzztime 30s -fuzzminimizetime 2s ./tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzMergeModelStats$$' -fuzztime 30s -fuzzminimizetime 2s ./actors/
	$(GO) test -run '^$$' -fuzz '^FuzzSign$$' -fuzztime 30s -fuzzminimizetime 2s ./internal/neardup/
	$(GO) test -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime 20s -fuzzminimizetime 2s ./tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzReadWAL$$' -fuzztime 20s -fuzzminimizetime 2s ./quota/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime 20s -fuzzminimizetime 2s ./quota/
	$(GO) test -run '^$$' -fuzz '^FuzzSSEFrames$$' -fuzztime 30s -fuzzminimizetime 2s ./client/
	$(GO) test -run '^$$' -fuzz '^FuzzParseChatChunk$$' -fuzztime 30s -fuzzminimizetime 2s ./client/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMix$$' -fuzztime 30s -fuzzminimizetime 2s ./loadgen/
	$(GO) test -run '^$$' -fuzz '^FuzzReadSSE$$' -fuzztime 30s -fuzzminimizetime 2s ./chaos/
	$(GO) test -run '^$$' -fuzz '^FuzzSSEReader$$' -fuzztime 30s -fuzzminimizetime 2s ./bench/peers/

## proto: regenerate messages/*.pb.go (Debian's protoc + pinned protoc-gen-go)
proto:
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--go_out=. --go_opt=module=github.com/qlc-project/qlc \
		-I messages messages/*.proto

build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

## images: static linux binaries in bin/linux/ and the FROM-scratch images (the Dockerfile's
## prebuilt target: nothing is pulled; `docker compose up --build` builds from source instead)
images:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '-s -w' -o bin/linux/ ./cmd/node ./cmd/gateway
	docker build -q --target prebuilt --build-arg BIN=node -t qlc-node:dev .
	docker build -q --target prebuilt --build-arg BIN=gateway -t qlc-gateway:dev .

## cluster: three nodes and a gateway as local processes (http://localhost:8080)
cluster:
	./scripts/cluster.sh

## chaos: every fault scenario against the docker compose cluster (images built from the working tree, about 6 min),
## then the group partitions (split, asymmetric: iptables, SKIPPED without root; about 3 min more); against local
## processes, saying so, where there is no Docker engine; then the overload scenario (issue 18:
## 3× the measured capacity for $(OVERLOAD) on CPU-limited local nodes, about 1.5 min); then the limits
## scenario (issue 17: a tenant's budget under splits, pauses and kills, history-checked; local processes,
## about 1 min); prints figure tables
OVERLOAD ?= 60s
chaos:
	@if docker info >/dev/null 2>&1; then \
	  backend="-backend compose"; \
	else \
	  echo "make chaos: no Docker engine on this machine: running the scenarios against local processes"; \
	  backend=""; \
	fi; rc=0; \
	for s in all split asymmetric; do COMPOSE="$(COMPOSE)" $(GO) run ./chaos $$backend -scenario $$s || rc=$$?; done; \
	$(GO) run ./chaos -scenario overload -duration $(OVERLOAD) || rc=$$?; \
	$(GO) run ./chaos -scenario limits || rc=$$?; exit $$rc

## chaos-smoke: the short version (about 2 min)
chaos-smoke:
	$(GO) run ./chaos -scenario all -runs 12 -faults 3 -concurrency 4 -pause-min 2s -pause-max 3s -hang-rate 0 -timeout 90s

## overload-smoke: the overload scenario's short version (15 s at 3× the measured capacity, about 50 s;
## CI runs it): exits 1 on its correctness goals only — no admitted run lost, restarted or moved, no
## member declared dead, nothing fenced, every refusal with Retry-After; its speed goals are printed,
## not enforced (they need a quiet machine: BENCHMARKS.md, issue 18)
overload-smoke:
	$(GO) run ./chaos -scenario overload -duration 15s

## soak: a local cluster (3 nodes, a gateway) under steady mixed load (chain and moa runs, cancels,
## Last-Event-ID resumes, two tenants, a node replaced every minute) for $(SOAK); RSS, heap,
## goroutines and open files of each process sampled every second; fails on an upward trend after
## warm-up or goroutines that do not come back. Table on stdout; samples.csv, SVG plots and
## report.md in .qlc/soak/. The documented run: SOAK=1h make soak. SOAK_FAULT_EVERY=0: no replacements
SOAK ?= 3m
SOAK_FAULT_EVERY ?= 1m
soak:
	$(GO) run ./chaos -scenario soak -duration $(SOAK) -fault-every $(SOAK_FAULT_EVERY) -concurrency 6

## integ: the compose cluster end to end (skipped, saying so, without a Docker engine)
integ:
	./scripts/integ.sh

## compose-up / compose-down: three nodes and two gateways behind a balancer in docker (http://localhost:8080). The
## cluster key and the first admin key are made on first use in .qlc/compose.env (0600) and reused;
## compose-up adds a key of the tenant dev there. ./scripts/compose.sh runs any compose command with them.
compose-up: images
	COMPOSE="$(COMPOSE)" ./scripts/compose-up.sh
compose-down:
	COMPOSE="$(COMPOSE)" ./scripts/compose.sh --profile observability down -v

## observability-up: compose-up, then the profile observability: Prometheus (http://localhost:9091),
## Grafana with the QLC dashboard (http://localhost:3000) and Jaeger (http://localhost:16686). Pulls
## their images: for machines that can. compose-down stops everything.
.PHONY: observability-up dashboard
observability-up: compose-up
	COMPOSE="$(COMPOSE)" ./scripts/compose.sh --profile observability up -d prometheus grafana jaeger

## dashboard: deploy/grafana's tests alone (make test runs them too): the dashboard's structure, the
## provisioning files, and every panel's query evaluated by Debian's prometheus (apt-get install
## prometheus) scraping three nodes and a gateway under load, each query's series and peak listed; about 30 s
dashboard:
	$(GO) test -count=1 -v ./deploy/grafana/

## tokenizer-corpus: build the >= 20 MB corpus from Debian packages and compare every document with the reference
tokenizer-corpus:
	bash tokenizer/corpus/build.sh
	QLC_TOKENIZER_CORPUS=$(CURDIR)/tokenizer/corpus/data $(GO) test -count=1 -run 'TestCorpus$$' -timeout 30m -v ./tokenizer/ | grep -E 'docs,|^(ok|FAIL|---)'

## bench-tokenizer: single-thread encode throughput on the corpus, worst cases, Count allocations
bench-tokenizer: tokenizer-corpus
	QLC_TOKENIZER_CORPUS=$(CURDIR)/tokenizer/corpus/data GOMAXPROCS=1 taskset -c 0 $(GO) test -run '^$$' -bench 'Encode|Classify' -benchtime 1x ./tokenizer/
	GOMAXPROCS=1 taskset -c 0 $(GO) test -run '^$$' -bench 'Count' -benchtime 2000x ./tokenizer/
	GOMAXPROCS=1 taskset -c 0 $(GO) test -run '^$$' -bench WorstCase -benchtime 3x ./tokenizer/

## tokenizer-generate: regenerate the Unicode 16 tables (needs QLC_REGEX_SYNTAX_TABLES=<rust regex checkout>/regex-syntax/src/unicode_tables)
tokenizer-generate:
	$(GO) generate ./tokenizer/
