package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// protocol is how a reader's stream is framed.
type protocol int

const (
	// protoQLC: QLC's run events (GET /v1/runs/{id}/events): the reader is
	// subscribed once the 200 headers arrive; token_delta events carry
	// "seq" (and "from_seq" when coalesced) and "time", the token's log
	// time; run_completed, run_failed and run_cancelled end the run;
	// "lagged" means the gateway dropped the reader.
	protoQLC protocol = iota
	// protoCentrifugo: Centrifugo's uni_sse pushes: subscribed at the
	// connect push (the channels of the token's "channels" claim are
	// subscribed server-side by then); publications carry the publisher's
	// payload (same fields as QLC's token_delta, "time" = when it was sent
	// to the HTTP API); a "run_completed" payload ends the stream; a
	// disconnect push (3008 "slow": the client's queue overflowed) drops it.
	protoCentrifugo
)

// endReason is why a reader stopped.
type endReason int

const (
	endNone     endReason = iota // still reading (or never connected)
	endDone                      // got the end of the stream
	endLagged                    // QLC dropped it: it fell behind
	endDropped                   // Centrifugo disconnected it
	endError                     // HTTP or stream error, EOF before the end
	endDeadline                  // the round's deadline
)

func (e endReason) String() string {
	return [...]string{"none", "done", "lagged", "dropped", "error", "deadline"}[e]
}

// readerStats is what one reader saw. Only its reader writes it, until
// the reader returns.
type readerStats struct {
	subscribed bool
	// Every token frame, and the tokens (log entries) they carried.
	frames, tokens uint64
	// The same after the warm-up (tokens of seq above warmSeq).
	mFrames, mTokens uint64
	// Source times ("time" field) of the first and last measured frames,
	// and the receive time of the last measured frame.
	firstSrc, lastSrc, lastRecv time.Time
	// Latency of each measured frame: receive time - its source time.
	lat hist
	end endReason
	err error
}

// countFrame adds a token frame received at now to st; frames of seq up to
// warmSeq are the warm-up: counted in frames and tokens only.
func (st *readerStats) countFrame(f frame, now time.Time, warmSeq uint64) {
	n := f.Tokens()
	st.frames++
	st.tokens += n
	if f.Seq <= warmSeq || !f.HasTime {
		return
	}
	if lo := warmSeq + 1; f.FromSeq < lo {
		n = f.Seq - lo + 1
	}
	st.mFrames++
	st.mTokens += n
	if st.firstSrc.IsZero() || f.Time.Before(st.firstSrc) {
		st.firstSrc = f.Time
	}
	if f.Time.After(st.lastSrc) {
		st.lastSrc = f.Time
	}
	st.lastRecv = now
	st.lat.record(now.Sub(f.Time))
}

var (
	typRunCompleted = []byte("run_completed")
	typRunFailed    = []byte("run_failed")
	typRunCancelled = []byte("run_cancelled")
	typLagged       = []byte("lagged")
)

// readStream reads one stream to its end and fills st. subscribed is
// called once, when the reader is subscribed (see protocol).
func readStream(body io.Reader, proto protocol, warmSeq uint64, subscribed func(), st *readerStats) {
	sub := func() {
		if !st.subscribed {
			st.subscribed = true
			subscribed()
		}
	}
	if proto == protoQLC {
		sub()
	}
	sr := newSSEReader(body, defaultReadBuf, defaultMaxLine, defaultMaxEvent)
	for {
		ev, err := sr.Next()
		now := time.Now()
		if err != nil {
			st.end, st.err = endError, fmt.Errorf("after %d frames: %w", st.frames, err)
			if errors.Is(err, io.EOF) {
				st.err = fmt.Errorf("the stream ended before its end event (%d frames)", st.frames)
				if proto == protoCentrifugo {
					// uni_sse ends the response without a word when it
					// disconnects a client (3008 "slow": its queue overflowed).
					st.end = endDropped
				}
			}
			return
		}
		data := ev.Data
		if proto == protoCentrifugo {
			switch classifyPush(data) {
			case pushConnect:
				sub()
				continue
			case pushDisconnect:
				st.end, st.err = endDropped, fmt.Errorf("disconnected by the server: %.200s", data)
				return
			case pushOther:
				continue
			}
		} else if bytes.Equal(ev.Type, typLagged) {
			st.end, st.err = endLagged, fmt.Errorf("lagged: %.200s", data)
			return
		}
		f := parseFrame(data)
		switch {
		case bytes.Equal(f.Type, tokenDelta):
			st.countFrame(f, now, warmSeq)
		case bytes.Equal(f.Type, typRunCompleted):
			st.end = endDone
			return
		case bytes.Equal(f.Type, typRunFailed), bytes.Equal(f.Type, typRunCancelled):
			st.end, st.err = endError, fmt.Errorf("the run ended badly: %.300s", data)
			return
		}
	}
}

// runReader sends req with client and reads its stream into st. A
// response other than 200 is an error.
func runReader(ctx context.Context, client *http.Client, req *http.Request, proto protocol, warmSeq uint64, subscribed func(), st *readerStats) {
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		st.end, st.err = endError, err
		if ctx.Err() != nil {
			st.end = endDeadline
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		st.end, st.err = endError, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		return
	}
	readStream(resp.Body, proto, warmSeq, subscribed, st)
	if st.end == endError && ctx.Err() != nil {
		st.end = endDeadline
	}
}
