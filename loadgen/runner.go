package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/tokenizer"
)

// cancelEndTimeout bounds how long a cancel probe waits for its stream to
// end after the DELETE; longer is an error ("cancel_not_ended").
const cancelEndTimeout = 10 * time.Second

// runner is one load in progress. The dispatcher (one goroutine) starts
// requests; each request runs in its own goroutine and records its Result
// under mu; the ticker goroutine samples progress and nodes. All of them
// end before Run returns.
type runner struct {
	cfg   Config
	c     *client.Client
	count func(string) int
	start time.Time
	tl    *timeline

	sent, inFlight, done, errs atomic.Int64
	slots                      chan struct{} // open loop: MaxInFlight

	mu    sync.Mutex // guards agg
	agg   *aggregate
	nodes *nodeSampler // owned by the ticker goroutine until it ends
}

// Run drives one load as cfg says and returns its report. It returns when
// the load is over: Requests sent or Duration passed, then the requests in
// flight ended (or Drain ran out); or ctx is done (Ctrl-C): the requests
// in flight are stopped (QLC runs cancelled with DELETE, best effort) and
// counted as interrupted, and the report is still returned. The error is
// non-nil only for a config that cannot run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cc := client.DefaultConfig()
	cc.BaseURL, cc.APIKey, cc.HTTPClient, cc.UserAgent = cfg.URL, cfg.APIKey, cfg.HTTPClient, "qlc-load"
	cc.MinBackoff = 50 * time.Millisecond
	c, err := client.New(cc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	r := &runner{cfg: cfg, c: c, agg: newAggregate(cfg)}
	r.count = func(s string) int { return 1 }
	if cfg.Target == TargetChat && cfg.Tokenizer != "chunks" {
		enc, err := tokenizer.Get(cfg.Tokenizer)
		if err != nil {
			return nil, fmt.Errorf("%w: tokenizer: %v", ErrBadConfig, err)
		}
		r.count = enc.Count
	}
	var before scrape
	if cfg.ServerMetrics != "" {
		before, err = scrapeMetrics(ctx, cfg.HTTPClient, cfg.ServerMetrics, cfg.MetricsKey)
		if err != nil {
			cfg.Logger.Warn("server metrics: first scrape failed; no comparison", "error", err)
		}
	}
	r.start = cfg.now()
	r.tl = newTimeline(cfg.Duration + cfg.Drain)
	r.nodes = newNodeSampler(cfg.Nodes, cfg.HTTPClient)

	reqCtx, stopReqs := context.WithCancel(ctx)
	defer stopReqs()
	tickCtx, stopTick := context.WithCancel(context.Background())
	tickDone := make(chan struct{})
	go r.tick(tickCtx, tickDone)

	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		r.slots = make(chan struct{}, cfg.MaxInFlight)
		r.openLoop(reqCtx, &wg)
	} else {
		r.closedLoop(reqCtx, &wg)
	}
	// Sending is over; the requests in flight have Drain to end.
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	drain := time.NewTimer(cfg.Drain)
	select {
	case <-allDone:
	case <-drain.C:
		stopReqs()
		<-allDone
	case <-ctx.Done():
		<-allDone
	}
	drain.Stop()
	end := cfg.now()
	stopTick()
	<-tickDone

	rep := r.report(end)
	if before != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		rep.Agreement = r.agreement(actx, before, rep)
		cancel()
	}
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// plan is what the dispatcher decided for one request, from its index
// alone (reproducible whatever the goroutines' order).
type plan struct {
	i           int
	item        *MixItem
	query       string
	probe       string
	cancelAfter time.Duration // cancel probe: after the first event
	dropAfter   int           // reconnect probe: after this many events
}

func (r *runner) plan(i int) plan {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(i)+1))
	p := plan{i: i}
	p.item = &r.agg.mix[r.agg.pick(rng)]
	p.query = p.item.Query
	if p.query == "" {
		p.query = makeQuery(p.item.QueryWords, i)
	}
	x := rng.Float64()
	switch {
	case x < r.cfg.CancelProbes:
		p.probe = "cancel"
		p.cancelAfter = time.Duration(rng.Float64() * float64(r.cfg.CancelWithin))
	case x < r.cfg.CancelProbes+r.cfg.ReconnectProbes && r.cfg.Target != TargetChat:
		p.probe = "reconnect"
		p.dropAfter = 1 + rng.IntN(r.cfg.ReconnectWithin)
	}
	return p
}

func (r *runner) openLoop(ctx context.Context, wg *sync.WaitGroup) {
	sched := NewSchedule(r.cfg.Arrival, r.cfg.Rate, r.cfg.Seed)
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for i := 0; i < r.cfg.Requests; i++ {
		off := sched.Next()
		if off >= r.cfg.Duration {
			return
		}
		at := r.start.Add(off)
		if d := at.Sub(r.cfg.now()); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		p := r.plan(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.do(ctx, p, at)
		}()
	}
}

func (r *runner) closedLoop(ctx context.Context, wg *sync.WaitGroup) {
	var next atomic.Int64
	deadline := r.start.Add(r.cfg.Duration)
	for w := 0; w < r.cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				now := r.cfg.now()
				if i >= r.cfg.Requests || !now.Before(deadline) {
					return
				}
				r.do(ctx, r.plan(i), now)
			}
		}()
	}
	wg.Wait() // a closed loop's sending ends with its workers
}

// do sends one request scheduled at sched and records its Result.
func (r *runner) do(ctx context.Context, p plan, sched time.Time) {
	res := &Result{Index: p.i, Mix: p.item.Name, ScheduledMs: ms(sched.Sub(r.start)), Probe: p.probe}
	if r.slots != nil {
		select {
		case r.slots <- struct{}{}:
			defer func() { <-r.slots }()
		case <-ctx.Done():
			res.Outcome = OutcomeInterrupted
			r.record(res)
			return
		}
	}
	r.sent.Add(1)
	r.tl.add(r.start, r.cfg.now(), func(s *second) { s.sent.Add(1) })
	r.inFlight.Add(1)
	res.QueueMs = ms(r.cfg.now().Sub(sched))
	m := newMeasure(res, sched, func(at time.Time, n int64) {
		r.tl.add(r.start, at, func(s *second) { s.tokens.Add(n) })
	})
	if r.cfg.Target == TargetChat {
		r.doChat(ctx, p, m)
	} else {
		r.doRun(ctx, p, m)
	}
	r.inFlight.Add(-1)
	r.record(res)
}

// errCode names an error for the report's errors by code.
func errCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		if ae.Code != "" {
			return fmt.Sprintf("%d %s", ae.Status, ae.Code)
		}
		return fmt.Sprintf("http_%d", ae.Status)
	}
	if errors.Is(err, client.ErrBadEvent) || errors.Is(err, client.ErrBadChunk) {
		return "bad_event"
	}
	return "connection"
}

func (r *runner) doRun(ctx context.Context, p plan, m *measure) {
	req := client.RunRequest{Query: p.query, Profile: p.item.Profile, MaxTokens: p.item.MaxTokens}
	// The request's own context: a cancel probe bounds its wait with it.
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var s *client.Stream
	var err error
	switch r.cfg.Target {
	case TargetRunsStream:
		s, err = r.c.CreateRunStream(rctx, req)
	default:
		var run *client.Run
		run, err = r.c.CreateRun(rctx, req)
		if err == nil {
			if r.cfg.Target == TargetWS {
				s = r.c.EventsWS(rctx, run.ID, "")
			} else {
				s = r.c.Events(rctx, run.ID, "")
			}
		}
	}
	if err != nil {
		r.endErr(ctx, m, err)
		return
	}
	m.res.RunID = s.RunID()
	var probe *cancelProbe
	defer func() {
		if probe != nil {
			probe.stop()
		}
	}()
	var streamErr error
	dropped := false
	for {
		ev, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			streamErr = err
			break
		}
		if m.runEvent(&ev) {
			break
		}
		if p.probe == "cancel" && probe == nil {
			probe = r.startCancel(rctx, cancel, s.RunID(), p.cancelAfter)
		}
		if p.probe == "reconnect" && m.res.Events == p.dropAfter {
			s.Drop()
			dropped = true
		}
	}
	s.Close()
	m.res.Reconnects = s.Reconnects()
	if p.probe == "reconnect" && !dropped {
		m.res.Probe = "reconnect-missed" // the run ended within fewer events
	}
	if probe != nil {
		probe.finish(m)
	}
	if ctx.Err() != nil && !m.ended {
		r.interrupted(m, s.RunID())
		return
	}
	if cause := context.Cause(rctx); errors.Is(cause, errCancelNotEnded) {
		m.fail("cancel_not_ended", cause.Error())
	}
	m.finish(streamErr)
	if streamErr != nil && m.res.Code == "stream_lost" {
		m.res.Code = errCode(streamErr)
		if m.res.Code == "connection" {
			m.res.Code = "stream_lost"
		}
	}
}

func (r *runner) doChat(ctx context.Context, p plan, m *measure) {
	model := p.item.Model
	if model == "" {
		prof := p.item.Profile
		if prof == "" {
			prof = "balanced"
		}
		model = "qlc-" + prof
		if r.cfg.ChatThinking {
			model += "-thinking"
		}
	}
	req := client.ChatStreamRequest{Model: model, IncludeUsage: true,
		Messages: []client.ChatMessage{{Role: "user", Content: p.query}}}
	if p.item.MaxTokens > 0 {
		mt := p.item.MaxTokens
		req.MaxTokens = &mt
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s, err := r.c.ChatStream(rctx, req)
	if err != nil {
		r.endErr(ctx, m, err)
		return
	}
	m.res.RunID = s.RunID
	if s.RunID == "" && p.probe == "cancel" {
		m.res.Probe = "" // not QLC: nothing to cancel by id
	}
	var probe *cancelProbe
	defer func() {
		if probe != nil {
			probe.stop()
		}
	}()
	var streamErr error
	for {
		ch, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			streamErr = err
			break
		}
		if m.chatChunk(&ch, r.count) {
			break
		}
		if m.res.Probe == "cancel" && probe == nil {
			probe = r.startCancel(rctx, cancel, s.RunID, p.cancelAfter)
		}
	}
	s.Close()
	if probe != nil {
		probe.finish(m)
	}
	if ctx.Err() != nil && !m.ended {
		r.interrupted(m, "") // closing the stream cancels QLC's run
		return
	}
	if cause := context.Cause(rctx); errors.Is(cause, errCancelNotEnded) {
		m.fail("cancel_not_ended", cause.Error())
	}
	m.finish(streamErr)
	if streamErr != nil && m.res.Code == "stream_lost" {
		if c := errCode(streamErr); c != "connection" {
			m.res.Code = c
		}
	}
}

// endErr ends a request refused or failed before its stream.
func (r *runner) endErr(ctx context.Context, m *measure, err error) {
	if ctx.Err() != nil {
		m.res.Outcome = OutcomeInterrupted
		return
	}
	m.fail(errCode(err), err.Error())
	m.finish(nil)
}

// interrupted ends a request the load stopped, cancelling its run (best
// effort: the server must not go on for a load that is gone).
func (r *runner) interrupted(m *measure, runID string) {
	m.res.Outcome, m.res.Code, m.res.Error = OutcomeInterrupted, "", ""
	if runID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = r.c.CancelRun(ctx, runID)
	}
}

var errCancelNotEnded = errors.New("the stream did not end within 10 s of the cancel")

// cancelProbe sends DELETE /v1/runs/{id} once its timer fires, and bounds
// how long the stream may go on after it.
type cancelProbe struct {
	timer  *time.Timer
	sentAt atomic.Int64 // unix ns of the DELETE; 0: not sent
	wait   *time.Timer
	mu     sync.Mutex // guards wait
}

func (r *runner) startCancel(ctx context.Context, cancel context.CancelCauseFunc, runID string, after time.Duration) *cancelProbe {
	p := &cancelProbe{}
	p.timer = time.AfterFunc(after, func() {
		if ctx.Err() != nil {
			return
		}
		p.sentAt.Store(r.cfg.now().UnixNano())
		p.mu.Lock()
		p.wait = time.AfterFunc(cancelEndTimeout, func() { cancel(errCancelNotEnded) })
		p.mu.Unlock()
		dctx, dcancel := context.WithTimeout(ctx, cancelEndTimeout)
		defer dcancel()
		_, _ = r.c.CancelRun(dctx, runID) // a 409: the run ended first (the stream says so)
	})
	return p
}

func (p *cancelProbe) stop() {
	p.timer.Stop()
	p.mu.Lock()
	if p.wait != nil {
		p.wait.Stop()
	}
	p.mu.Unlock()
}

// finish notes what the probe measured: DELETE sent → the stream's end.
func (p *cancelProbe) finish(m *measure) {
	p.stop()
	sent := p.sentAt.Load()
	switch {
	case sent == 0 || !m.cancelled:
		// Not cancelled: the run ended (or failed) first; an ordinary
		// request.
		m.res.Probe = "cancel-missed"
	case m.res.Outcome == OutcomeError:
	default:
		m.res.Outcome = OutcomeCancelled
		m.res.CancelToEndMs = ms(m.end.Sub(time.Unix(0, sent)))
	}
}

// record adds a finished request to the aggregate.
func (r *runner) record(res *Result) {
	now := r.cfg.now()
	res.EndMs = ms(now.Sub(r.start))
	switch res.Outcome {
	case OutcomeOK, OutcomeCancelled:
		r.done.Add(1)
		r.tl.add(r.start, now, func(s *second) { s.done.Add(1) })
	case OutcomeError:
		r.errs.Add(1)
		r.tl.add(r.start, now, func(s *second) { s.errors.Add(1) })
	}
	r.mu.Lock()
	r.agg.add(res)
	r.mu.Unlock()
}

// tick samples in-flight requests and nodes, and writes the progress line,
// once a second until ctx is done.
func (r *runner) tick(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if r.cfg.Progress != nil {
				r.progress(true)
			}
			return
		case now := <-t.C:
			r.tl.add(r.start, now, func(s *second) { s.inFlight.Store(r.inFlight.Load()) })
			r.nodes.sample(ctx, now.Sub(r.start))
			if r.cfg.Progress != nil {
				r.progress(false)
			}
		}
	}
}

func (r *runner) progress(last bool) {
	el := r.cfg.now().Sub(r.start)
	r.mu.Lock()
	p50, p99 := r.agg.ttft.Quantile(0.5), r.agg.ttft.Quantile(0.99)
	toks := r.agg.tokens
	r.mu.Unlock()
	tps := float64(toks) / el.Seconds()
	end := "\r"
	if last {
		end = "\n"
	}
	fmt.Fprintf(r.cfg.Progress, "\r%6.1fs  sent %d  done %d  errors %d  in flight %d  %.1f runs/s  %.0f tok/s  TTFT p50 %v p99 %v   %s",
		el.Seconds(), r.sent.Load(), r.done.Load(), r.errs.Load(), r.inFlight.Load(),
		float64(r.done.Load())/el.Seconds(), tps, p50.Round(time.Millisecond), p99.Round(time.Millisecond), end)
}

// timeline counts what happened in each second of the load. Its seconds
// are fixed at the start (the load's longest possible span); later ones
// land in the last.
type timeline struct{ secs []second }

type second struct {
	sent, done, errors, tokens, inFlight atomic.Int64
}

func newTimeline(span time.Duration) *timeline {
	n := min(int(span/time.Second)+2, 7*24*3600)
	return &timeline{secs: make([]second, n)}
}

func (t *timeline) add(start, at time.Time, f func(*second)) {
	i := int(at.Sub(start) / time.Second)
	f(&t.secs[min(max(i, 0), len(t.secs)-1)])
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
