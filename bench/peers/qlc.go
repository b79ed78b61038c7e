package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// qlcStages is the pipeline every QLC profile has (stagework.Stages): a
// profile must set all four, so "one stage of N tokens" is four stages of
// N/4 tokens each, back to back at the same pace.
var qlcStages = []string{"generator", "refiner", "validator", "curator"}

// Names of the profiles in the file the benchmark gives its gateways.
const (
	profPaced = "peers-paced" // fan-out, 100 tokens/s
	profFull  = "peers-full"  // fan-out, zero latency
	profOne   = "peers-one"   // TTFT: three 1-token simulated stages, the curator on the mock
	profFour  = "peers-four"  // TTFT: all four stages on the mock
)

// qlcProfileFile writes the profile file (YAML) of one gateway. Fan-out:
// the generator's simulated model waits leadIn before its first token, so
// that the readers connect and subscribe before tokens flow (a reader late
// all the same replays from seq 1: the warm-up takes those tokens); every
// later token, the first of each later stage included, comes one interval
// after the one before (paced) or at once (full). With mockURL (the base
// URL of an OpenAI-compatible server), the TTFT profiles too, streaming
// ttftTokens tokens a stage from it.
func qlcProfileFile(cfg fanConfig, leadIn time.Duration, mockURL string, ttftTokens int) string {
	per := max(cfg.Tokens/len(qlcStages), 1)
	iv := cfg.interval()
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by bench/peers (make bench-peers) for one gateway run.\n")
	fmt.Fprintf(&b, "default_profile: %s\nproviders:\n", profPaced)
	fmt.Fprintf(&b, "  peers-lead: {kind: sim, sim: {ttft: %s, itl: %s, output_tokens: %d, truncate_at_max_tokens: true}}\n", leadIn, iv, per)
	fmt.Fprintf(&b, "  peers-pace: {kind: sim, sim: {ttft: %s, itl: %s, output_tokens: %d, truncate_at_max_tokens: true}}\n", iv, iv, per)
	fmt.Fprintf(&b, "  peers-full-lead: {kind: sim, sim: {ttft: %s, output_tokens: %d, truncate_at_max_tokens: true}}\n", leadIn, per)
	fmt.Fprintf(&b, "  peers-instant: {kind: sim, sim: {output_tokens: %d, truncate_at_max_tokens: true}}\n", per)
	if mockURL != "" {
		fmt.Fprintf(&b, "  peers-one-sim: {kind: sim, sim: {output_tokens: 1, truncate_at_max_tokens: true}}\n")
		// The breaker stays off: a benchmark wants every request to go out.
		fmt.Fprintf(&b, "  peers-mock: {kind: openai, base_url: %q, breaker: {failures: -1}}\n", mockURL)
	}
	b.WriteString("profiles:\n")
	prof := func(name, desc string, provider func(i int) string, maxTokens func(i int) int) {
		fmt.Fprintf(&b, "  %s:\n    description: %s\n    stages:\n", name, desc)
		for i, s := range qlcStages {
			fmt.Fprintf(&b, "      %s: {provider: %s, model: bench-model, temperature: 0, max_tokens: %d}\n", s, provider(i), maxTokens(i))
		}
	}
	perStage := func(int) int { return per }
	prof(profPaced, fmt.Sprintf("bench-peers fan-out, %g tokens/s", cfg.Rate), func(i int) string {
		if i == 0 {
			return "peers-lead"
		}
		return "peers-pace"
	}, perStage)
	prof(profFull, "bench-peers fan-out, zero latency", func(i int) string {
		if i == 0 {
			return "peers-full-lead"
		}
		return "peers-instant"
	}, perStage)
	if mockURL != "" {
		last := len(qlcStages) - 1
		prof(profOne, "bench-peers TTFT, one stage on the mock", func(i int) string {
			if i == last {
				return "peers-mock"
			}
			return "peers-one-sim"
		}, func(i int) int {
			if i == last {
				return ttftTokens
			}
			return 1
		})
		prof(profFour, "bench-peers TTFT, four stages on the mock", func(int) string { return "peers-mock" }, func(int) int { return ttftTokens })
	}
	return b.String()
}

// qlcWarmSeq is the seq of the warm-th token of a run whose stages have
// per tokens each: the log opens with stage_started (seq 1), and each stage
// boundary adds stage_completed and the next stage_started. 0 for no
// warm-up.
func qlcWarmSeq(warm, per int) uint64 {
	if warm <= 0 {
		return 0
	}
	return uint64(warm + 1 + 2*((warm-1)/per))
}

// qlcTarget starts QLC gateways (cmd/gateway -local) for fan-out rounds.
type qlcTarget struct {
	bin  string // the built cmd/gateway
	work string // a private folder for data folders, profile files, logs
	seq  int
}

func (t *qlcTarget) Name() string { return "QLC" }

// qlcGateway is a running gateway.
type qlcGateway struct {
	proc     *child
	dir      string
	base     string // http://127.0.0.1:port
	key      string // the dev tenant's key
	client   *http.Client
	profile  string
	runID    string
	warmSeq  uint64
	expected uint64 // the run's tokens
	warm     uint64 // of which the warm-up
}

// startQLC starts a gateway in local mode on port 0 with the profile file
// text, and waits until it is ready: its address file written, /readyz
// answering 200, the dev keys file read.
func startQLC(ctx context.Context, bin, work, name, profiles string) (*qlcGateway, error) {
	dir, err := os.MkdirTemp(work, name+"-*")
	if err != nil {
		return nil, err
	}
	pf, af := filepath.Join(dir, "profiles.yaml"), filepath.Join(dir, "addrs.json")
	if err := os.WriteFile(pf, []byte(profiles), 0o600); err != nil {
		return nil, err
	}
	args := []string{"-local", "-addr", "127.0.0.1:0", "-addr-file", af, "-data-dir", filepath.Join(dir, "data"),
		"-profiles", pf, "-log-level", "warn", "-ops-addr", "none",
		// Every reader uses the dev tenant's one key; the default (64
		// streams per key) is a guard for real tenants, not for this.
		"-max-streams-per-key", "1000000"}
	p, err := startChild(name, bin, args, cleanEnv(), filepath.Join(dir, "gateway.log"))
	if err != nil {
		return nil, err
	}
	g := &qlcGateway{proc: p, dir: dir, client: &http.Client{Timeout: 30 * time.Second}}
	fail := func(err error) (*qlcGateway, error) {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("%w (log: %s)", err, filepath.Join(dir, "gateway.log"))
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var a struct {
			HTTP string `json:"http"`
		}
		if b, err := os.ReadFile(af); err == nil && json.Unmarshal(b, &a) == nil && a.HTTP != "" {
			g.base = "http://" + a.HTTP
			break
		}
		if p.exited() {
			return fail(fmt.Errorf("benchpeers: the gateway exited at start"))
		}
		if time.Now().After(deadline) {
			return fail(errNotReady)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	for {
		resp, err := g.client.Get(g.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || p.exited() {
			return fail(errNotReady)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "data", "dev-keys.json"))
	if err != nil {
		return fail(err)
	}
	var dk struct {
		TenantKey string `json:"tenant_key"`
	}
	if err := json.Unmarshal(b, &dk); err != nil || dk.TenantKey == "" {
		return fail(fmt.Errorf("benchpeers: no tenant_key in dev-keys.json"))
	}
	g.key = dk.TenantKey
	return g, nil
}

// close stops the gateway; its folder (data, keys, log) goes with the
// run's work folder.
func (g *qlcGateway) close() {
	g.proc.stop(15 * time.Second)
}

// post sends a JSON POST with the tenant's key.
func (g *qlcGateway) post(ctx context.Context, path string, body any) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+g.key)
	req.Header.Set("Content-Type", "application/json")
	return g.client.Do(req)
}

// leadIn is how long the generator waits before its first token: time for
// the readers to connect (about 1 ms each here, with a wide margin).
func leadIn(readers int) time.Duration {
	return time.Second + time.Duration(readers)*3*time.Millisecond
}

func (t *qlcTarget) Start(ctx context.Context, cfg fanConfig) (fanServer, error) {
	t.seq++
	g, err := startQLC(ctx, t.bin, t.work, fmt.Sprintf("qlc-%d", t.seq), qlcProfileFile(cfg, leadIn(cfg.Readers), "", 0))
	if err != nil {
		return nil, err
	}
	g.profile = profPaced
	if cfg.Mode == modeFull {
		g.profile = profFull
	}
	per := max(cfg.Tokens/len(qlcStages), 1)
	g.warmSeq, g.expected, g.warm = qlcWarmSeq(cfg.Warm, per), uint64(per*len(qlcStages)), uint64(cfg.Warm)
	return g, nil
}

func (g *qlcGateway) Expected() (uint64, uint64) { return g.expected, g.expected - g.warm }
func (g *qlcGateway) PID() int                   { return g.proc.pid() }
func (g *qlcGateway) Protocol() protocol         { return protoQLC }
func (g *qlcGateway) WarmSeq() uint64            { return g.warmSeq }
func (g *qlcGateway) Close()                     { g.close() }

// Prepare starts the run; the generator's lead-in gives the readers time
// to subscribe.
func (g *qlcGateway) Prepare(ctx context.Context) error {
	resp, err := g.post(ctx, "/v1/runs", map[string]any{"query": "bench-peers: fan-out", "profile": g.profile})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("benchpeers: POST /v1/runs: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var run struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &run); err != nil || run.ID == "" {
		return fmt.Errorf("benchpeers: POST /v1/runs: no run id in %.200s", b)
	}
	g.runID = run.ID
	return nil
}

func (g *qlcGateway) ReaderRequest(int) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, g.base+"/v1/runs/"+g.runID+"/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+g.key)
	req.Header.Set("Accept", "text/event-stream")
	return req, nil
}

// Drive: the run is its own source; it started at Prepare.
func (g *qlcGateway) Drive(context.Context) (sourceStats, error) { return sourceStats{}, nil }
