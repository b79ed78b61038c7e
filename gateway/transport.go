package gateway

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// transport writes a run's events to one reader (SSE, WebSocket, OpenAI
// chunks). Its methods are called from one goroutine, the pump's, and may
// block for as long as the transport's write timeout. A transport holds no
// buffer between calls: it encodes into a pooled one (getBuf) and gives it
// back before it returns, so an idle or slow reader costs its cursor and
// its connection, never a copy of what it was sent.
type transport interface {
	// writeEvents writes a batch of events as wire events cut by a spanner
	// (each within the server's MaxEventBytes), starting off bytes into the
	// text of evs[0] (a reader that resumed inside a split delta), and
	// flushes.
	writeEvents(evs []*messages.RunEvent, off int) error
	// writeLagged tells the reader it was dropped and where to resume.
	writeLagged(nextSeq uint64) error
	// ping keeps an idle connection open through proxies.
	ping() error
}

// pump copies a subscription into a transport until the run ends (nil), the
// reader is dropped for lagging (the *actors.LaggedError), the connection
// fails, or ctx ends. skip is how many text bytes of the subscription's
// first event the reader already has (it resumed inside a split delta, see
// fromSeq). It closes the subscription.
func pump(ctx context.Context, sub *actors.Subscription, t transport, pingEvery time.Duration, skip int) error {
	defer sub.Close()
	idle := time.NewTimer(pingEvery)
	defer idle.Stop()
	for {
		evs, err := sub.Next(ctx, idle.C)
		if err != nil {
			var lagged *actors.LaggedError
			switch {
			case errors.Is(err, actors.ErrIdle):
				if err := t.ping(); err != nil {
					return err
				}
				idle.Reset(pingEvery)
				continue
			case err == io.EOF:
				return nil
			case errors.As(err, &lagged):
				_ = t.writeLagged(lagged.NextSeq)
				return err
			}
			return err
		}
		off := 0
		if skip > 0 {
			// Only a delta is ever split; a reader that has all of one
			// starts after it.
			if d := evs[0].GetTokenDelta(); d != nil {
				if skip < len(d.Text) {
					off = skip
				} else {
					evs = evs[1:]
				}
			}
			skip = 0
			if len(evs) == 0 {
				continue
			}
		}
		if err := t.writeEvents(evs, off); err != nil {
			return err
		}
		idle.Reset(pingEvery)
	}
}

// bufPool holds the buffers wire events are encoded into. A writer takes
// one for a batch and gives it back when the batch is written, so the
// memory they use grows with the readers writing at the same moment, not
// with those connected, and never with the largest event a reader saw.
var bufPool sync.Pool // of *[]byte

// writeBufSize is the size of the buffer a transport with bound max
// writes through: two events, so that a batch of small events is one write
// and a batch of large ones costs a write per event at most.
func writeBufSize(max int) int { return 2 * max }

// getBuf returns an empty pooled buffer of capacity at least n.
func getBuf(n int) *[]byte {
	if p, ok := bufPool.Get().(*[]byte); ok {
		if cap(*p) >= n && cap(*p) <= 2*n {
			return p
		}
		// A buffer of another server's size (tests run several): let it go.
	}
	b := make([]byte, 0, n)
	return &b
}

// putBuf gives a buffer back to the pool.
func putBuf(p *[]byte) {
	*p = (*p)[:0]
	bufPool.Put(p)
}
