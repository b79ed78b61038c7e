package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runState is what the fault injector may know of a run in flight.
type runState struct {
	id string

	mu        sync.Mutex
	streaming bool // a token arrived
	ended     bool
	endedAt   time.Time       // when the terminal event arrived
	lastAt    time.Time       // when the last event arrived
	hist      []mark          // every event so far: a fault may be marked after it happened
	faultAt   time.Time       // a fault hit its coordinator; zero: none pending
	resumed   bool            // since faultAt: a stage_restarted or stage_started arrived
	live      map[string]bool // steps that streamed a token since their stage_started
	recovered []time.Duration
	resumes   []time.Duration // fault → the resuming stage_restarted / stage_started
	made      []time.Duration // fault → that event's time (logged by the new coordinator)
	lostFault int             // faults after which the run ended with no new token
}

// mark is an event's type and arrival time.
type mark struct {
	typ  string
	at   time.Time
	made time.Time // the event's own time (the coordinator's clock); zero if none
}

// fault notes that the run's coordinator was hit at t. t may be in the
// past (a docker command returns after its fault took effect): the events
// that arrived since count.
func (s *runState) fault(t time.Time) bool {
	return s.markFault(t, false)
}

// faultReader starts the recovery clock for a fault of the reader's path
// (the gateway), not of the run: the next token received ends it.
func (s *runState) faultReader(t time.Time) bool {
	return s.markFault(t, true)
}

func (s *runState) markFault(t time.Time, resumed bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.ended && s.endedAt.Before(t)) || !s.faultAt.IsZero() {
		return false
	}
	s.faultAt, s.resumed = t, resumed
	for _, m := range s.hist {
		if s.faultAt.IsZero() {
			break // recovered (or ended) already
		}
		if !m.at.Before(t) {
			s.step(m)
		}
	}
	return true
}

// observe feeds the recovery clock: from the fault to the first token after
// the run resumed elsewhere.
func (s *runState) observe(e event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAt = e.at
	switch e.Type {
	case evTokenDelta:
		s.streaming = true
		if s.live == nil {
			s.live = map[string]bool{}
		}
		s.live[e.step()] = true
	case evStageStarted, evStageRestarted, evStageCompleted, evStepSkipped:
		delete(s.live, e.step())
	}
	if terminal(e.Type) {
		s.ended, s.endedAt = true, e.at
	}
	m := mark{e.Type, e.at, e.Time}
	s.hist = append(s.hist, m)
	s.step(m)
}

// step moves a pending fault's clock on by one event.
func (s *runState) step(m mark) {
	if s.faultAt.IsZero() {
		return
	}
	switch {
	case m.typ == evStageRestarted || m.typ == evStageStarted:
		if !s.resumed {
			s.resumes = append(s.resumes, m.at.Sub(s.faultAt))
			if !m.made.IsZero() {
				s.made = append(s.made, m.made.Sub(s.faultAt))
			}
		}
		s.resumed = true
	case m.typ == evTokenDelta && s.resumed:
		s.recovered = append(s.recovered, m.at.Sub(s.faultAt))
		s.faultAt = time.Time{}
	case terminal(m.typ):
		s.lostFault++
		s.faultAt = time.Time{}
	}
}

// runResult is one run's outcome and checks.
type runResult struct {
	id          string
	refused     string // POST not accepted: the error code
	lost        bool
	status      string // completed, failed, cancelled
	code        string // run_failed code
	reason      string
	defects     []string
	reconnects  int
	restarts    int
	retries     int
	fallbacks   int
	restartGaps []time.Duration // stage_restarted → next token (live)

	cancelAsked  bool
	cancelStatus int // the DELETE's HTTP status
	tokensAfter  int // token events after run_cancelled, or log growth after it

	recovered []time.Duration
	resumes   []time.Duration
	made      []time.Duration
	lostFault int
}

// driver runs the load: workers that start runs and follow each to its end.
type driver struct {
	base       string
	profile    string
	cancelRate float64
	runTimeout time.Duration

	mu       sync.Mutex
	rng      *rand.Rand
	started  int
	inflight map[string]*runState
	results  []*runResult
}

func newDriver(base, profile string, cancelRate float64, runTimeout time.Duration, seed uint64) *driver {
	return &driver{base: base, profile: profile, cancelRate: cancelRate, runTimeout: runTimeout,
		rng: rand.New(rand.NewPCG(seed, seed+1)), inflight: map[string]*runState{}}
}

// load runs concurrency workers until more() says stop (it is asked before
// each run, with the number of runs started so far). It returns when every
// run has ended or timed out.
func (d *driver) load(ctx context.Context, concurrency int, more func(started int) bool) {
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d.mu.Lock()
				if !more(d.started) {
					d.mu.Unlock()
					return
				}
				d.started++
				n := d.started
				cancelAt := -1
				if d.rng.Float64() < d.cancelRate {
					cancelAt = 5 + d.rng.IntN(300) // token events before the DELETE
				}
				d.mu.Unlock()
				r := d.runOne(ctx, n, cancelAt)
				d.mu.Lock()
				d.results = append(d.results, r)
				d.mu.Unlock()
				if r.refused != "" {
					time.Sleep(200 * time.Millisecond) // the cluster said no: do not spin
				}
			}
		}()
	}
	wg.Wait()
}

// streaming returns runs in flight that have streamed a token.
func (d *driver) streaming() []*runState { return d.streamingSteps(0) }

// streamingSteps returns runs in flight with at least n steps streaming at
// once (each has streamed a token since it started and has not ended).
func (d *driver) streamingSteps(n int) []*runState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*runState
	for _, s := range d.inflight {
		s.mu.Lock()
		if s.streaming && !s.ended && len(s.live) >= n {
			out = append(out, s)
		}
		s.mu.Unlock()
	}
	return out
}

// liveSteps is how many of the run's steps are streaming now.
func (s *runState) liveSteps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

func (d *driver) inflightRuns() []*runState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*runState, 0, len(d.inflight))
	for _, s := range d.inflight {
		out = append(out, s)
	}
	return out
}

func (d *driver) resultsCopy() []*runResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*runResult(nil), d.results...)
}

// apiError is the OpenAI error shape.
type apiError struct {
	Error struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

func (d *driver) post(ctx context.Context, n int) (string, string) {
	body := fmt.Sprintf(`{"query":"Chaos question %d: how does a replicated log survive the loss of a node?","profile":%q}`, n, d.profile)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/v1/runs", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", "post_error"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		var e apiError
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return "", fmt.Sprintf("%d %s", resp.StatusCode, e.Error.Code)
		}
		return "", strconv.Itoa(resp.StatusCode)
	}
	var v struct{ ID string }
	if err := json.Unmarshal(b, &v); err != nil || v.ID == "" {
		return "", "bad_response"
	}
	return v.ID, ""
}

// stream reads the run's events from seq from until the stream ends or fn
// returns false.
// stream reads a run's events from from (a seq, or "seq:bytes" inside a
// split delta; see resumeAt) until fn returns false or the stream ends.
func (d *driver) stream(ctx context.Context, id string, from string, fn func(event) bool) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/runs/"+id+"/events?from_seq="+from, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := streamClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusServiceUnavailable {
			return fmt.Errorf("chaos: events: HTTP %d: %w", resp.StatusCode, errUnavailable)
		}
		return fmt.Errorf("chaos: events: HTTP %d", resp.StatusCode)
	}
	return readSSE(resp.Body, fn)
}

func (d *driver) get(ctx context.Context, id string) (*runView, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/runs/"+id, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("chaos: GET run: HTTP %d", resp.StatusCode)
	}
	var v runView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	return &v, nil
}

func (d *driver) cancel(id string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, d.base+"/v1/runs/"+id, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// runOne starts a run, follows its live stream to the end (reconnecting from
// the last seq if the stream breaks), cancels it after cancelAt token events
// (never if negative), then replays the whole log and reads the resource to
// check the transcript.
func (d *driver) runOne(ctx context.Context, n, cancelAt int) *runResult {
	r := &runResult{}
	id, refused := d.post(ctx, n)
	if refused != "" {
		r.refused = refused
		return r
	}
	r.id = id
	st := &runState{id: id}
	d.mu.Lock()
	d.inflight[id] = st
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.inflight, id)
		d.mu.Unlock()
		st.mu.Lock()
		r.recovered, r.resumes, r.made, r.lostFault = st.recovered, st.resumes, st.made, st.lostFault
		st.mu.Unlock()
	}()

	rctx, rcancel := context.WithTimeout(ctx, d.runTimeout)
	defer rcancel()
	var live []event
	next, partEnd := uint64(1), 0 // where to resume
	tokens := 0
	var cancelDone chan int
	var restartAt time.Time
	ended := false
	for !ended && rctx.Err() == nil {
		err := d.stream(rctx, id, resumeAt(next, partEnd), func(e event) bool {
			live = append(live, e)
			st.observe(e)
			if e.Type == evLagged {
				return false // resume from next
			}
			switch {
			case !e.last():
				next, partEnd = e.Seq, e.Part.End
			case e.Seq >= next:
				next, partEnd = e.Seq+1, 0
			}
			switch {
			case e.Type == evStageRestarted:
				r.restarts++
				restartAt = e.at
			case e.Type == evTokenDelta:
				if !restartAt.IsZero() {
					r.restartGaps = append(r.restartGaps, e.at.Sub(restartAt))
					restartAt = time.Time{}
				}
				tokens++
				if tokens == cancelAt && cancelDone == nil {
					r.cancelAsked = true
					cancelDone = make(chan int, 1)
					go func() { // owned by runOne: it waits on cancelDone
						cancelDone <- d.cancel(id)
					}()
				}
			case terminal(e.Type):
				ended = true
			}
			return true
		})
		if ended || rctx.Err() != nil {
			break
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			time.Sleep(100 * time.Millisecond)
		} else {
			time.Sleep(20 * time.Millisecond) // a stream that ended early: no spinning
		}
		r.reconnects++
	}
	if cancelDone != nil {
		r.cancelStatus = <-cancelDone
	}
	if !ended {
		r.lost = true
		r.defects = append(r.defects, analyze(live).defects...)
		return r
	}

	t := analyze(live)
	r.defects = append(r.defects, t.defects...)
	r.retries, r.fallbacks = t.retries, t.fallback
	r.status = strings.TrimPrefix(t.term.Type, "run_")
	r.code, r.reason = t.term.Code, t.term.Reason

	// The other copy: the whole log replayed from seq 1, and the resource.
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if t.term.Type == evRunCancelled {
		// Anything the run still produced would show here.
		time.Sleep(time.Second)
	}
	// Both reads retry while the gateway is unreachable (restarting), as a
	// client does; a wrong answer is not retried.
	var replay []event
	if err := retryUnreachable(cctx, func() error {
		replay = replay[:0]
		return d.stream(cctx, id, "1", func(e event) bool { replay = append(replay, e); return true })
	}); err != nil {
		r.defects = append(r.defects, "replay: "+err.Error())
	}
	rt := analyze(replay)
	for _, x := range rt.defects {
		r.defects = append(r.defects, "replay-"+x)
	}
	if rt.term == nil {
		r.defects = append(r.defects, "replay-missing-terminal: the replayed log has no terminal event")
	}
	if s := compareSegments(t.segments, rt.segments); s != "" {
		r.defects = append(r.defects, s)
	}
	var v *runView
	err := retryUnreachable(cctx, func() (err error) {
		v, err = d.get(cctx, id)
		return err
	})
	if err != nil {
		r.defects = append(r.defects, "resource: "+err.Error())
		return r
	}
	r.defects = append(r.defects, compareResource(t, v)...)
	if t.term.Type == evRunCancelled {
		// Tokens after the cancel: seen live after run_cancelled, in the
		// replayed log after it, or the log grown past it.
		for _, e := range live {
			if e.Type == evTokenDelta && e.Seq > t.term.Seq {
				r.tokensAfter += int(e.Seq - e.first() + 1)
			}
		}
		for _, e := range replay {
			if e.Type == evTokenDelta && e.Seq > t.term.Seq {
				r.tokensAfter += int(e.Seq - e.first() + 1)
			}
		}
		if v.LastSeq > t.term.Seq {
			r.tokensAfter += int(v.LastSeq - t.term.Seq)
		}
	}
	return r
}

// unreachable says whether err means the gateway could not be reached or
// was going away: a refused or reset connection, a 503, or a connection
// closed before any answer — what a client sees of a restarting gateway
// behind a proxy (docker's published ports) that accepts the connection
// and then has nowhere to forward it.
func unreachable(err error) bool {
	var ue *url.Error
	return errors.Is(err, errUnavailable) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &ue) && errors.Is(ue.Err, io.EOF)) ||
		// net/http's name for a connection closed before any answer (its
		// error value is not exported).
		strings.Contains(err.Error(), "server closed idle connection")
}

// errUnavailable is a 503: the gateway is shutting down (or not ready).
var errUnavailable = errors.New("service unavailable")

// retryUnreachable calls fn until it succeeds or fails with something else
// than a refused or reset connection (a gateway restarting), or ctx ends.
func retryUnreachable(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !unreachable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
