package actors

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Telemetry keeps live statistics per (endpoint, model) of the stage
// attempts that this process's coordinators ran: TTFT and inter-token
// latency as DDSketches (relative accuracy 1 %, at most sketchBins bins
// each: the lowest collapse first, the tail stays exact to 1 %), tokens,
// time streaming, cost, and failures by kind and by upstream HTTP status.
//
// It covers a sliding window: statistics go into the current window, which
// becomes the previous one after Window; a reading merges both (between
// Window and twice Window of history). Hedging reads its TTFT p95 here, and
// Engine.ModelStats merges every node's for the cluster's view.
//
// Safe for concurrent use; every method holds one mutex briefly (a
// coordinator records once per attempt, never per token).
type Telemetry struct {
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	cur      map[modelKey]*modelWindow
	prev     map[modelKey]*modelWindow
	curStart time.Time
}

// TelemetryWindow is the default window of Telemetry.
const TelemetryWindow = 5 * time.Minute

// sketchBins bounds each sketch's memory (a few KiB) and encoding; with
// relative accuracy 1 %, 2048 bins span 1 µs to beyond an hour before
// anything collapses.
const (
	sketchAccuracy = 0.01
	sketchBins     = 2048
)

// maxTelemetryModels bounds the (endpoint, model) pairs a window keeps;
// past it, attempts of new pairs are not recorded (the profiles file names
// the models, so only a huge file gets there).
const maxTelemetryModels = 1024

type modelKey struct{ endpoint, model string }

type modelWindow struct {
	attempts, succeeded     int64
	errors                  map[string]int64
	httpStatus              map[int32]int64
	ttft, itl               *ddsketch.DDSketch
	inputTokens, outputTkns int64
	streamSeconds, costUSD  float64
}

// sketchMapping is every sketch's index mapping: a peer's sketch with
// another does not decode.
var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(sketchAccuracy)
	if err != nil {
		panic(fmt.Sprintf("actors: sketch mapping: %v", err)) // constant argument: cannot happen
	}
	return m
}()

// newSketch is a window's sketch: dense, its lowest bins collapsing past
// sketchBins.
func newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(sketchMapping, store.NewCollapsingLowestDenseStore(sketchBins), store.NewCollapsingLowestDenseStore(sketchBins))
}

func newModelWindow() *modelWindow {
	return &modelWindow{errors: map[string]int64{}, httpStatus: map[int32]int64{}, ttft: newSketch(), itl: newSketch()}
}

// NewTelemetry returns an empty Telemetry over window (TelemetryWindow if 0).
func NewTelemetry(window time.Duration) *Telemetry {
	if window <= 0 {
		window = TelemetryWindow
	}
	t := &Telemetry{window: window, now: time.Now}
	t.cur, t.prev = map[modelKey]*modelWindow{}, map[modelKey]*modelWindow{}
	return t
}

// rotate makes the current window the previous one when it is over.
// t.mu is held.
func (t *Telemetry) rotate() {
	now := t.now()
	if t.curStart.IsZero() {
		t.curStart = now
	}
	if d := now.Sub(t.curStart); d >= t.window {
		t.prev, t.cur = t.cur, map[modelKey]*modelWindow{}
		if d >= 2*t.window {
			t.prev = map[modelKey]*modelWindow{} // idle for two windows: nothing recent
		}
		t.curStart = now
	}
}

// current returns the window to record into for k (nil past
// maxTelemetryModels). t.mu is held.
func (t *Telemetry) current(k modelKey) *modelWindow {
	t.rotate()
	w := t.cur[k]
	if w == nil {
		if len(t.cur) >= maxTelemetryModels {
			return nil
		}
		w = newModelWindow()
		t.cur[k] = w
	}
	return w
}

// AttemptDone records a finished attempt: its TTFT, its inter-token
// latencies (an encoded sketch from the worker; may be empty), its whole
// duration, usage and cost.
func (t *Telemetry) AttemptDone(endpoint, model string, ttft, duration time.Duration, itl []byte, input, output int64, cost float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.current(modelKey{endpoint, model})
	if w == nil {
		return
	}
	w.attempts++
	w.succeeded++
	if ttft > 0 {
		_ = w.ttft.Add(ttft.Seconds())
	}
	if len(itl) > 0 {
		mergeEncoded(&w.itl, itl) // a worker's sketch; a bad one is dropped
	}
	w.inputTokens += input
	w.outputTkns += output
	if s := (duration - ttft).Seconds(); s > 0 && output > 1 {
		w.streamSeconds += s
	}
	w.costUSD += cost
}

// AttemptFailed records a failed attempt: its kind (timeout, rate_limited,
// server, ...) and the upstream HTTP status if there was one.
func (t *Telemetry) AttemptFailed(endpoint, model, kind string, status int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.current(modelKey{endpoint, model})
	if w == nil {
		return
	}
	w.attempts++
	if kind == "" {
		kind = "internal"
	}
	w.errors[kind]++
	if status > 0 {
		w.httpStatus[status]++
	}
}

// TTFTQuantile is the q-quantile of endpoint/model's recent TTFTs, or def
// with fewer than min samples.
func (t *Telemetry) TTFTQuantile(endpoint, model string, q float64, min int, def time.Duration) time.Duration {
	k := modelKey{endpoint, model}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	s := newSketch()
	for _, w := range []*modelWindow{t.prev[k], t.cur[k]} {
		if w != nil {
			_ = s.MergeWith(w.ttft)
		}
	}
	if s.GetCount() < float64(min) {
		return def
	}
	v, err := s.GetValueAtQuantile(q)
	if err != nil {
		return def
	}
	return time.Duration(v * float64(time.Second))
}

// Snapshot returns the statistics of every (endpoint, model) seen in the
// last one to two windows, sorted by endpoint and model.
func (t *Telemetry) Snapshot() []*messages.ModelStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	merged := map[modelKey]*messages.ModelStats{}
	sketches := map[modelKey][2]*ddsketch.DDSketch{}
	for _, win := range []map[modelKey]*modelWindow{t.prev, t.cur} {
		for k, w := range win {
			m := merged[k]
			if m == nil {
				m = &messages.ModelStats{Endpoint: k.endpoint, Model: k.model, Errors: map[string]int64{}, HttpStatus: map[int32]int64{},
					Window: durationpb.New(t.window)}
				merged[k] = m
				sketches[k] = [2]*ddsketch.DDSketch{newSketch(), newSketch()}
			}
			m.Attempts += w.attempts
			m.Succeeded += w.succeeded
			for kind, n := range w.errors {
				m.Errors[kind] += n
			}
			for st, n := range w.httpStatus {
				m.HttpStatus[st] += n
			}
			m.InputTokens += w.inputTokens
			m.OutputTokens += w.outputTkns
			m.StreamSeconds += w.streamSeconds
			m.CostUsd += w.costUSD
			_ = sketches[k][0].MergeWith(w.ttft)
			_ = sketches[k][1].MergeWith(w.itl)
		}
	}
	out := make([]*messages.ModelStats, 0, len(merged))
	for k, m := range merged {
		if s := sketches[k][0]; !s.IsEmpty() {
			s.Encode(&m.Ttft, false)
		}
		if s := sketches[k][1]; !s.IsEmpty() {
			s.Encode(&m.Itl, false)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *messages.ModelStats) int {
		return cmp.Or(strings.Compare(a.Endpoint, b.Endpoint), strings.Compare(a.Model, b.Model))
	})
	return out
}

// ITLRecorder collects one attempt's inter-token latencies in a worker
// (one sketch per attempt, no allocation per token) and encodes them for
// StageAttemptDone. Not safe for concurrent use: the worker's stream
// goroutine owns it.
type ITLRecorder struct {
	s    *ddsketch.DDSketch
	last time.Time
}

// Chunk records a chunk of n tokens that arrived at: after the first, the
// gap since the previous chunk counts n times as gap/n.
func (r *ITLRecorder) Chunk(at time.Time, n int) {
	if n <= 0 {
		n = 1
	}
	if !r.last.IsZero() {
		if r.s == nil {
			// Sparse: an attempt's gaps fill tens of bins, and the
			// sketch is encoded once and dropped.
			r.s = ddsketch.NewDDSketch(sketchMapping, store.NewSparseStore(), store.NewSparseStore())
		}
		gap := at.Sub(r.last).Seconds() / float64(n)
		_ = r.s.AddWithCount(math.Max(gap, 0), float64(n))
	}
	r.last = at
}

// Encode returns the encoded sketch, nil if no gap was recorded.
func (r *ITLRecorder) Encode() []byte {
	if r.s == nil || r.s.IsEmpty() {
		return nil
	}
	var b []byte
	r.s.Encode(&b, false)
	return b
}

// ModelStatsView is the cluster's merged statistics of one (endpoint,
// model), as GET /v1/stats/models shows them. Latencies are in
// milliseconds; a quantile is absent (nil) without samples.
type ModelStatsView struct {
	Endpoint string `json:"endpoint"`
	Model    string `json:"model"`
	// WindowSeconds: the statistics cover between one and two windows.
	WindowSeconds float64 `json:"window_seconds"`
	Nodes         int     `json:"nodes"` // nodes that ran attempts of it in the window
	Attempts      int64   `json:"attempts"`
	Succeeded     int64   `json:"succeeded"`
	Failed        int64   `json:"failed"`
	ErrorRate     float64 `json:"error_rate"`   // failed / attempts
	TimeoutRate   float64 `json:"timeout_rate"` // failed with kind timeout / attempts
	// Errors counts failed attempts by kind; HTTPStatus by upstream status.
	Errors     map[string]int64 `json:"errors"`
	HTTPStatus map[string]int64 `json:"http_status"`
	TTFTms     Quantiles        `json:"ttft_ms"`
	ITLms      Quantiles        `json:"itl_ms"` // per token, TTFT excluded
	// TokensPerSecond is output tokens over the time spent streaming after
	// the first token, of the attempts that succeeded.
	TokensPerSecond *float64 `json:"tokens_per_second"`
	InputTokens     int64    `json:"input_tokens"`
	OutputTokens    int64    `json:"output_tokens"`
	CostUSD         float64  `json:"cost_usd"`
	// Price is the profiles file's declared price per 1000 tokens, if any.
	Price *PricePer1K `json:"price_per_1k,omitempty"`
	// BreakerOpenNodes of the BreakerNodes that call this endpoint (every
	// node that answered and has it configured) have its circuit breaker
	// open now; a breaker guards all of an endpoint's models.
	BreakerOpenNodes int `json:"breaker_open_nodes"`
	BreakerNodes     int `json:"breaker_nodes"`
}

// BreakerCount is, for one endpoint, how many of the nodes that answered
// have its circuit breaker open or half open, of the Nodes that have it.
type BreakerCount struct {
	Open, HalfOpen, Nodes int
}

// MergeBreakers counts the nodes' circuit breakers per endpoint
// (ModelStatsReply.breakers). Unknown states count as closed.
func MergeBreakers(replies []*messages.ModelStatsReply) map[string]BreakerCount {
	out := map[string]BreakerCount{}
	for _, r := range replies {
		for endpoint, state := range r.GetBreakers() {
			c := out[endpoint]
			c.Nodes++
			switch state {
			case "open":
				c.Open++
			case "half-open":
				c.HalfOpen++
			}
			out[endpoint] = c
		}
	}
	return out
}

// breakerStates is this process's circuit breaker state per endpoint
// (those with a breaker), for ModelStatsReply.
func (e *Engine) breakerStates() map[string]string {
	out := map[string]string{}
	for name, p := range e.cat.providers() {
		if g, ok := p.(*stagework.Guarded); ok {
			out[name] = g.State().String()
		}
	}
	return out
}

// PricePer1K is a model's price in US dollars per 1000 tokens.
type PricePer1K struct {
	Input  float64 `json:"input_usd"`
	Output float64 `json:"output_usd"`
}

// PriceOf is model's price in the profiles file per 1000 tokens, nil
// without one.
func PriceOf(cfg *stagework.Config, model string) *PricePer1K {
	p, ok := cfg.Price(model)
	if !ok {
		return nil
	}
	return &PricePer1K{Input: p.Input / 1000, Output: p.Output / 1000}
}

// Quantiles of a latency in milliseconds, with the sample count.
type Quantiles struct {
	Count int64    `json:"count"`
	P50   *float64 `json:"p50"`
	P90   *float64 `json:"p90"`
	P95   *float64 `json:"p95"`
	P99   *float64 `json:"p99"`
	Max   *float64 `json:"max"`
	Mean  *float64 `json:"mean"`
}

// MergeModelStats merges the nodes' replies into one view per (endpoint,
// model), sorted. A sketch that does not decode is left out (the counts
// still add up).
func MergeModelStats(replies []*messages.ModelStatsReply) []ModelStatsView {
	type acc struct {
		v         ModelStatsView
		ttft, itl *ddsketch.DDSketch
	}
	byKey := map[modelKey]*acc{}
	for _, r := range replies {
		for _, m := range r.GetModels() {
			k := modelKey{m.GetEndpoint(), m.GetModel()}
			a := byKey[k]
			if a == nil {
				a = &acc{v: ModelStatsView{Endpoint: k.endpoint, Model: k.model, Errors: map[string]int64{}, HTTPStatus: map[string]int64{}},
					ttft: newSketch(), itl: newSketch()}
				byKey[k] = a
			}
			v := &a.v
			v.Nodes++
			v.WindowSeconds = max(v.WindowSeconds, m.GetWindow().AsDuration().Seconds())
			v.Attempts += m.GetAttempts()
			v.Succeeded += m.GetSucceeded()
			for kind, n := range m.GetErrors() {
				v.Errors[kind] += n
				v.Failed += n
			}
			for st, n := range m.GetHttpStatus() {
				v.HTTPStatus[fmt.Sprint(st)] += n
			}
			v.InputTokens += m.GetInputTokens()
			v.OutputTokens += m.GetOutputTokens()
			v.CostUSD += m.GetCostUsd()
			if tps := m.GetStreamSeconds(); tps > 0 {
				s := 0.0
				if v.TokensPerSecond != nil {
					s = *v.TokensPerSecond
				}
				s += tps // summed seconds for now; divided below
				v.TokensPerSecond = &s
			}
			mergeEncoded(&a.ttft, m.GetTtft())
			mergeEncoded(&a.itl, m.GetItl())
		}
	}
	out := make([]ModelStatsView, 0, len(byKey))
	for _, a := range byKey {
		v := a.v
		if v.Attempts > 0 {
			v.ErrorRate = float64(v.Failed) / float64(v.Attempts)
			v.TimeoutRate = float64(v.Errors["timeout"]) / float64(v.Attempts)
		}
		if v.TokensPerSecond != nil {
			tps := float64(v.OutputTokens) / *v.TokensPerSecond
			v.TokensPerSecond = &tps
		}
		v.TTFTms, v.ITLms = quantilesMs(a.ttft), quantilesMs(a.itl)
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b ModelStatsView) int {
		return cmp.Or(strings.Compare(a.Endpoint, b.Endpoint), strings.Compare(a.Model, b.Model))
	})
	return out
}

// mergeEncoded merges the encoded sketch b into *dst, or nothing if b does
// not decode or holds values outside [0, maxSketchSeconds]. It decodes into
// a sparse sketch of its own under recover (the library panics on some
// malformed input: found by FuzzMergeModelStats, kept in testdata), checks
// every bin, and only then adds the bins to *dst: a bad sketch leaves *dst
// as it was, and a good one costs its own bins, not a copy of *dst (a
// worker's sketch holds tens of bins; the window's up to sketchBins).
func mergeEncoded(dst **ddsketch.DDSketch, b []byte) (ok bool) {
	if len(b) == 0 {
		return false
	}
	type bin struct{ value, count float64 }
	var bins []bin
	func() {
		defer func() {
			if recover() != nil {
				bins = nil
			}
		}()
		tmp, err := ddsketch.DecodeDDSketch(b, store.SparseStoreConstructor, sketchMapping)
		if err != nil || tmp.IsEmpty() {
			return
		}
		good := true
		tmp.ForEach(func(value, count float64) bool {
			if !(value >= 0 && value <= maxSketchSeconds) || !(count > 0 && count <= maxSketchCount) {
				good = false
				return true
			}
			bins = append(bins, bin{value, count})
			return false
		})
		if !good {
			bins = nil
		}
	}()
	if len(bins) == 0 {
		return false
	}
	for _, x := range bins {
		_ = (*dst).AddWithCount(x.value, x.count) // checked: cannot fail
	}
	return true
}

// maxSketchCount bounds one bin's count in a peer's sketch: more samples
// than a node could record in a window is not a count QLC made (and an
// infinite or huge one would poison every quantile).
const maxSketchCount = 1 << 40

// maxSketchSeconds bounds the latencies a sketch from a peer may hold (a
// day): anything beyond is not a latency QLC measured.
const maxSketchSeconds = 86400

func quantilesMs(s *ddsketch.DDSketch) Quantiles {
	q := Quantiles{Count: int64(math.Round(s.GetCount()))}
	if s.IsEmpty() {
		return q
	}
	vals, err := s.GetValuesAtQuantiles([]float64{0.5, 0.9, 0.95, 0.99, 1})
	if err != nil {
		return q
	}
	ms := make([]float64, len(vals))
	for i, v := range vals {
		ms[i] = math.Round(v*1e6) / 1e3 // seconds → ms, to the µs
	}
	q.P50, q.P90, q.P95, q.P99, q.Max = &ms[0], &ms[1], &ms[2], &ms[3], &ms[4]
	mean := math.Round(s.GetSum()/s.GetCount()*1e6) / 1e3
	q.Mean = &mean
	return q
}

// ModelStats returns the cluster's live statistics per (endpoint, model):
// every coordinator host is asked together (under one deadline, like
// Attach's lookup) and the sketches merged; complete is false when a node
// did not answer (its attempts are missing). Without a cluster, this
// process's own. Each view gets the profiles file's declared price.
//
// A query to each node rather than gossip: the sketches are a few KiB per
// model, more than memberlist's metadata holds (512 bytes), and merging
// them exactly on demand costs one round trip per node only when asked.
func (e *Engine) ModelStats() (views []ModelStatsView, complete bool) {
	views, _, complete = e.ClusterModelStats()
	return views, complete
}

// ClusterModelStats is ModelStats with the nodes' circuit breakers per
// endpoint (MergeBreakers), also set on each view.
func (e *Engine) ClusterModelStats() (views []ModelStatsView, breakers map[string]BreakerCount, complete bool) {
	var replies []*messages.ModelStatsReply
	complete = true
	if e.placer == nil || e.remote == nil {
		replies = append(replies, &messages.ModelStatsReply{Models: e.deps.telemetry.Snapshot(), Node: e.Address(), Breakers: e.breakerStates()})
	} else {
		nodes := e.coordinatorHosts()
		waits := make([]func() (any, error), len(nodes))
		for i, node := range nodes {
			waits[i] = e.system.Root.RequestFuture(actor.NewPID(node, starterName), &messages.ModelStatsQuery{}, e.cfg.SpawnTimeout/2).Result
		}
		for _, wait := range waits {
			res, err := wait()
			r, ok := res.(*messages.ModelStatsReply)
			if err != nil || !ok {
				complete = false
				continue
			}
			replies = append(replies, r)
		}
	}
	views = MergeModelStats(replies)
	breakers = MergeBreakers(replies)
	for i := range views {
		views[i].Price = PriceOf(e.cat.stages(), views[i].Model)
		b := breakers[views[i].Endpoint]
		views[i].BreakerOpenNodes, views[i].BreakerNodes = b.Open, b.Nodes
	}
	return views, breakers, complete
}

// coordinatorHosts lists the nodes that host coordinators, without moving a
// round robin on (asking them must not change where the next run goes).
func (e *Engine) coordinatorHosts() []string {
	if rr, ok := e.placer.(*roundRobin); ok {
		return append([]string(nil), rr.nodes...)
	}
	return e.placer.Candidates("")
}
