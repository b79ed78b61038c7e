package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Modes of a fan-out round.
const (
	modePaced = "paced" // the source sends tokens at a fixed rate
	modeFull  = "full"  // the source sends as fast as the server accepts
)

// fanConfig is one fan-out configuration: how many readers, which mode,
// and how much the source sends.
type fanConfig struct {
	Mode    string
	Readers int
	// Tokens is the number of tokens the source sends in paced mode, and
	// QLC's in full mode (Centrifugo's full-speed publisher is bounded by
	// FullMax and FullFor instead: it has no natural end).
	Tokens int
	// Rate is the paced source's tokens per second.
	Rate float64
	// Warm tokens at the start are a warm-up: delivered and counted in the
	// CPU cost, but left out of deliveries/s and latency.
	Warm int
	// FullMax and FullFor bound a full-speed publisher (messages, time);
	// Batch is its messages per API request.
	FullMax int
	FullFor time.Duration
	Batch   int
	// Dials is how many readers connect at once.
	Dials int
	// Settle is the wait after a server starts (idle RSS) and after the
	// readers leave (RSS after).
	Settle time.Duration
	// Deadline bounds the round from the first reader's connection.
	Deadline time.Duration
}

// interval is the paced source's time between tokens.
func (c fanConfig) interval() time.Duration {
	return time.Duration(float64(time.Second) / c.Rate)
}

// fanTarget starts servers for fan-out rounds.
type fanTarget interface {
	// Name is the target's name in the table.
	Name() string
	// Start starts a fresh server for one round of cfg and waits until it
	// serves.
	Start(ctx context.Context, cfg fanConfig) (fanServer, error)
}

// fanServer is one running server of a round.
type fanServer interface {
	// PID is the server's process id: its CPU and memory are measured.
	PID() int
	// Prepare is called before any reader connects (QLC creates the run).
	Prepare(ctx context.Context) error
	// ReaderRequest is reader i's request.
	ReaderRequest(i int) (*http.Request, error)
	// Protocol is how the readers' streams are framed.
	Protocol() protocol
	// WarmSeq is the seq of the last warm-up token.
	WarmSeq() uint64
	// Drive makes the source send its tokens, once every reader is
	// subscribed, and returns when it has (at once, with zero stats, when
	// the server is its own source).
	Drive(ctx context.Context) (sourceStats, error)
	// Expected is how many tokens a reader that read to the end must have
	// got (the run's, or what Drive sent), and how many of them come after
	// the warm-up.
	Expected() (total, measured uint64)
	// Close stops the server.
	Close()
}

// sourceStats is what an external source (the publisher) did.
type sourceStats struct {
	// Sent is how many tokens it sent.
	Sent int
	// Lag is how late its last token went out against the schedule (paced):
	// a server whose API answers slowly holds the publisher back.
	Lag time.Duration
}

// roundResult is what one round measured.
type roundResult struct {
	Target  string `json:"target"`
	Mode    string `json:"mode"`
	Readers int    `json:"readers"`
	Round   int    `json:"round"`

	Sent         int     `json:"source_sent,omitempty"`   // tokens the publisher sent (Centrifugo)
	SourceLagMs  float64 `json:"source_lag_ms,omitempty"` // how late its last token went out (paced)
	Subscribed   int     `json:"subscribed"`
	ConnectSecs  float64 `json:"connect_s"`
	Done         int     `json:"readers_done"`
	Lost         int     `json:"readers_lost"`       // lagged, dropped, errors, deadline
	Incomplete   int     `json:"readers_incomplete"` // read to the end but missed tokens
	FirstProblem string  `json:"first_problem,omitempty"`

	Tokens         uint64  `json:"token_deliveries"` // every token delivered, warm-up included
	Frames         uint64  `json:"frames"`
	MTokens        uint64  `json:"measured_deliveries"`
	MFrames        uint64  `json:"measured_frames"`
	WindowSecs     float64 `json:"window_s"` // first measured token's source time → last delivery
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	FramesPerS     float64 `json:"frames_per_s"`
	SourceRate     float64 `json:"source_tokens_per_s"` // measured tokens at the source / their span
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`

	ServerCPUSecs  float64 `json:"server_cpu_s"`
	CPUPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	ClientCPUSecs  float64 `json:"client_cpu_s"`
	RSSIdleMiB     float64 `json:"rss_idle_mib"`
	RSSPeakMiB     float64 `json:"rss_peak_mib"`
	RSSAfterMiB    float64 `json:"rss_after_mib"`
	Load1          float64 `json:"loadavg_1m"`
}

const mib = 1 << 20

// runFanRound runs one round: a fresh server, idle RSS, readers connect
// and subscribe, CPU snapshot, the source sends, readers read to the end
// (or the deadline), CPU and peak RSS, readers leave, RSS after, stop.
func runFanRound(ctx context.Context, t fanTarget, cfg fanConfig, round int, client *http.Client) (roundResult, error) {
	res := roundResult{Target: t.Name(), Mode: cfg.Mode, Readers: cfg.Readers, Round: round, Load1: loadAvg()}
	srv, err := t.Start(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer srv.Close()
	pid := srv.PID()
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return res, err
	}
	rss, _, err := memStatus(pid)
	if err != nil {
		return res, err
	}
	res.RSSIdleMiB = float64(rss) / mib

	if err := srv.Prepare(ctx); err != nil {
		return res, err
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	stats := make([]readerStats, cfg.Readers)
	var subscribed sync.WaitGroup
	subscribed.Add(cfg.Readers)
	var subCount atomic.Int64
	var wg sync.WaitGroup
	dials := make(chan struct{}, max(cfg.Dials, 1))
	start := time.Now()
	for i := range cfg.Readers {
		req, err := srv.ReaderRequest(i)
		if err != nil {
			cancel()
			wg.Wait()
			return res, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			once := sync.OnceFunc(func() { subscribed.Done() })
			defer once() // a reader that fails before subscribing must not hold the round
			select {
			case dials <- struct{}{}:
			case <-rctx.Done():
				stats[i].end = endDeadline
				return
			}
			released := false
			release := func() {
				if !released {
					released = true
					<-dials
				}
			}
			defer release()
			runReader(rctx, client, req, srv.Protocol(), srv.WarmSeq(), func() {
				subCount.Add(1)
				release()
				once()
			}, &stats[i])
		}()
	}
	allSub := make(chan struct{})
	go func() { subscribed.Wait(); close(allSub) }()
	select {
	case <-allSub:
	case <-rctx.Done():
	}
	res.ConnectSecs = time.Since(start).Seconds()
	res.Subscribed = int(subCount.Load())

	cpu0, err := cpuTime(pid)
	if err != nil {
		cancel()
		wg.Wait()
		return res, err
	}
	self0, _ := cpuTime(os.Getpid())
	src, derr := srv.Drive(rctx)
	readersDone := make(chan struct{})
	go func() { wg.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-rctx.Done():
		// The deadline: readers still reading are cut off (their context).
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		cancel()
		<-readersDone
		return res, err
	}
	self1, _ := cpuTime(os.Getpid())
	_, hwm, err := memStatus(pid)
	if err != nil {
		cancel()
		<-readersDone
		return res, err
	}
	cancel()
	<-readersDone
	res.RSSPeakMiB = float64(hwm) / mib
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return res, err
	}
	if rss, _, err := memStatus(pid); err == nil {
		res.RSSAfterMiB = float64(rss) / mib
	}

	total, measured := srv.Expected()
	summarise(&res, stats, total, measured)
	res.ServerCPUSecs = (cpu1 - cpu0).Seconds()
	res.ClientCPUSecs = (self1 - self0).Seconds()
	if res.Tokens > 0 {
		res.CPUPerDelivery = res.ServerCPUSecs / float64(res.Tokens) * 1e6
	}
	if derr != nil && res.FirstProblem == "" {
		res.FirstProblem = "source: " + derr.Error()
	}
	res.Sent, res.SourceLagMs = src.Sent, ms(src.Lag)
	if res.Subscribed < cfg.Readers && res.FirstProblem == "" {
		res.FirstProblem = fmt.Sprintf("only %d of %d readers subscribed", res.Subscribed, cfg.Readers)
	}
	return res, nil
}

// summarise folds the readers' stats into res. A reader that read to the
// end must have got expected tokens, measured of them after the warm-up:
// anything else means tokens were lost, or the warm-up was not where the
// benchmark thinks.
func summarise(res *roundResult, stats []readerStats, expected, measured uint64) {
	var h hist
	var firstSrc, lastSrc, lastRecv time.Time
	for i := range stats {
		st := &stats[i]
		res.Tokens += st.tokens
		res.Frames += st.frames
		res.MTokens += st.mTokens
		res.MFrames += st.mFrames
		h.merge(&st.lat)
		if !st.firstSrc.IsZero() && (firstSrc.IsZero() || st.firstSrc.Before(firstSrc)) {
			firstSrc = st.firstSrc
		}
		if st.lastSrc.After(lastSrc) {
			lastSrc = st.lastSrc
		}
		if st.lastRecv.After(lastRecv) {
			lastRecv = st.lastRecv
		}
		if st.end == endDone {
			res.Done++
			if st.tokens != expected || st.mTokens != measured {
				res.Incomplete++
				if res.FirstProblem == "" {
					res.FirstProblem = fmt.Sprintf("reader %d got %d tokens (%d measured), expected %d (%d)", i, st.tokens, st.mTokens, expected, measured)
				}
			}
		} else {
			res.Lost++
			if res.FirstProblem == "" {
				msg := st.end.String()
				if st.err != nil {
					msg += ": " + st.err.Error()
				}
				res.FirstProblem = fmt.Sprintf("reader %d: %s", i, msg)
			}
		}
	}
	if !firstSrc.IsZero() && lastRecv.After(firstSrc) {
		res.WindowSecs = lastRecv.Sub(firstSrc).Seconds()
		res.DeliveriesPerS = float64(res.MTokens) / res.WindowSecs
		res.FramesPerS = float64(res.MFrames) / res.WindowSecs
	}
	// The source's rate: the measured tokens one complete reader got, over
	// the span of their source times.
	var best uint64
	for i := range stats {
		best = max(best, stats[i].mTokens)
	}
	if span := lastSrc.Sub(firstSrc).Seconds(); span > 0 && best > 1 {
		res.SourceRate = float64(best-1) / span
	}
	res.P50ms = ms(h.quantile(0.50))
	res.P99ms = ms(h.quantile(0.99))
	res.MaxMs = ms(h.quantile(1))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errNotReady is returned when a server does not come up in time.
var errNotReady = errors.New("benchpeers: the server did not come up in time")

// readerClient is the HTTP client of the readers: one connection each, no
// compression, no overall timeout (each round has its deadline).
func readerClient(readers int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = readers+16, readers+16
	tr.DisableCompression = true
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: tr}
}
