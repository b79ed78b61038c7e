package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFan is a fan-out target in this process: an SSE server in QLC's
// framing whose Drive sends tokens tokens to every reader; reader lagIdx
// (if ≥ 0) is told "lagged" after 3 tokens and cut off, as QLC does.
type fakeFan struct {
	tokens, warm, lagIdx int
	srv                  *httptest.Server

	mu    sync.Mutex
	conns map[int]chan string
}

func (f *fakeFan) Name() string { return "fake" }

func (f *fakeFan) Start(context.Context, fanConfig) (fanServer, error) {
	f.conns = map[int]chan string{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.URL.Query().Get("i"))
		ch := make(chan string, f.tokens+2)
		f.mu.Lock()
		f.conns[i] = ch
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		n := 0
		for ev := range ch {
			if i == f.lagIdx && n == 3 {
				fmt.Fprint(w, "event: lagged\ndata: {\"type\":\"lagged\",\"next_seq\":4}\n\n")
				return
			}
			fmt.Fprint(w, ev)
			w.(http.Flusher).Flush()
			n++
		}
	}))
	return f, nil
}

func (f *fakeFan) PID() int                      { return os.Getpid() }
func (f *fakeFan) Prepare(context.Context) error { return nil }
func (f *fakeFan) Protocol() protocol            { return protoQLC }
func (f *fakeFan) WarmSeq() uint64               { return uint64(f.warm) }
func (f *fakeFan) Expected() (uint64, uint64)    { return uint64(f.tokens), uint64(f.tokens - f.warm) }
func (f *fakeFan) Close()                        { f.srv.Close() }
func (f *fakeFan) ReaderRequest(i int) (*http.Request, error) {
	return http.NewRequest(http.MethodGet, f.srv.URL+"/?i="+strconv.Itoa(i), nil)
}

func (f *fakeFan) Drive(context.Context) (sourceStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for seq := 1; seq <= f.tokens+1; seq++ {
		typ := "token_delta"
		if seq > f.tokens {
			typ = "run_completed"
		}
		ev := fmt.Sprintf("id: %d\nevent: %s\ndata: {\"seq\":%d,\"type\":%q,\"time\":%q}\n\n", seq, typ, seq, typ, time.Now().UTC().Format(time.RFC3339Nano))
		for _, ch := range f.conns {
			ch <- ev
		}
		time.Sleep(200 * time.Microsecond)
	}
	for _, ch := range f.conns {
		close(ch)
	}
	return sourceStats{Sent: f.tokens}, nil
}

// A round against a server in this process: every reader subscribes, the
// ones that read to the end got every token, the warm-up is left out of
// the measured figures, the lagged reader is counted lost, and the
// process figures are read.
func TestFanRound(t *testing.T) {
	const readers, tokens, warm = 8, 40, 10
	f := &fakeFan{tokens: tokens, warm: warm, lagIdx: 5}
	cfg := fanConfig{Mode: modePaced, Readers: readers, Rate: 100, Dials: 3, Settle: 10 * time.Millisecond, Deadline: 20 * time.Second}
	res, err := runFanRound(context.Background(), f, cfg, 1, readerClient(readers))
	if err != nil {
		t.Fatal(err)
	}
	if res.Subscribed != readers || res.Done != readers-1 || res.Lost != 1 || res.Incomplete != 0 {
		t.Fatalf("readers: %+v", res)
	}
	if !strings.Contains(res.FirstProblem, "reader 5: lagged") {
		t.Fatalf("problem: %q", res.FirstProblem)
	}
	if want := uint64((readers-1)*tokens + 3); res.Tokens != want || res.Frames != want {
		t.Fatalf("deliveries %d, frames %d, want %d", res.Tokens, res.Frames, want)
	}
	if want := uint64((readers - 1) * (tokens - warm)); res.MTokens != want {
		t.Fatalf("measured %d, want %d", res.MTokens, want)
	}
	if res.DeliveriesPerS <= 0 || res.WindowSecs <= 0 || res.P99ms < res.P50ms || res.MaxMs < res.P99ms || res.SourceRate <= 0 {
		t.Fatalf("figures: %+v", res)
	}
	if res.RSSIdleMiB <= 0 || res.RSSPeakMiB < res.RSSIdleMiB || res.RSSAfterMiB <= 0 {
		t.Fatalf("memory: %+v", res)
	}

	// A reader that misses tokens but reaches the end is "incomplete".
	var st [2]readerStats
	for i := range st {
		st[i].end = endDone
		for seq := uint64(1); seq <= 5; seq++ {
			if i == 1 && seq == 3 {
				continue
			}
			st[i].countFrame(frame{Seq: seq, FromSeq: seq, Time: time.Now(), HasTime: true}, time.Now(), 1)
		}
	}
	var r roundResult
	summarise(&r, st[:], 5, 4)
	if r.Done != 2 || r.Incomplete != 1 || !strings.Contains(r.FirstProblem, "reader 1 got 4 tokens") {
		t.Fatalf("incomplete: %+v", r)
	}
}

// A round whose readers cannot connect ends at its deadline, saying so.
func TestFanRoundDeadline(t *testing.T) {
	f := &fakeFan{tokens: 10, lagIdx: -1}
	cfg := fanConfig{Mode: modePaced, Readers: 2, Rate: 100, Dials: 2, Settle: time.Millisecond, Deadline: 300 * time.Millisecond}
	blocked := &blockingFan{fakeFan: f}
	start := time.Now()
	res, err := runFanRound(context.Background(), blocked, cfg, 1, readerClient(2))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second || res.Subscribed != 0 || res.Lost != 2 {
		t.Fatalf("%v: %+v", time.Since(start), res)
	}
}

// blockingFan's server never answers its readers.
type blockingFan struct {
	*fakeFan
	release chan struct{}
}

func (b *blockingFan) Start(ctx context.Context, cfg fanConfig) (fanServer, error) {
	b.release = make(chan struct{})
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-b.release:
		case <-r.Context().Done():
		}
	}))
	return b, nil
}

func (b *blockingFan) Drive(context.Context) (sourceStats, error) { return sourceStats{}, nil }
func (b *blockingFan) Close()                                     { close(b.release); b.srv.Close() }
