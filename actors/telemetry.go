package actors

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qlc-project/qlc/messages"
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

func newSketch() *ddsketch.DDSketch {
	s, err := ddsketch.LogCollapsingLowestDenseDDSketch(sketchAccuracy, sketchBins)
	if err != nil {
		panic(fmt.Sprintf("actors: sketch: %v", err)) // constant arguments: cannot happen
	}
	return s
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
		_ = w.itl.DecodeAndMergeWith(itl) // a worker's sketch; a bad one is dropped whole or in part
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
		return strings.Compare(a.Endpoint+"\x00"+a.Model, b.Endpoint+"\x00"+b.Model)
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
			r.s = newSketch()
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
