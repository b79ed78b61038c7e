package gateway

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// transport writes a run's events to one reader (SSE, WebSocket, OpenAI
// chunks). Its methods are called from one goroutine, the pump's, and may
// block for as long as the transport's write timeout.
type transport interface {
	// writeEvents writes evs, grouped into spans (see coalesce), and flushes:
	// one batch is one write to the connection.
	writeEvents(evs []*messages.RunEvent, spans []span) error
	// writeLagged tells the reader it was dropped and where to resume.
	writeLagged(nextSeq uint64) error
	// ping keeps an idle connection open through proxies.
	ping() error
}

// pump copies a subscription into a transport until the run ends (nil), the
// reader is dropped for lagging (the *actors.LaggedError), the connection
// fails, or ctx ends. It closes the subscription.
func pump(ctx context.Context, sub *actors.Subscription, t transport, pingEvery time.Duration) error {
	defer sub.Close()
	var spans []span
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
		spans = coalesce(spans, evs)
		if err := t.writeEvents(evs, spans); err != nil {
			return err
		}
		idle.Reset(pingEvery)
	}
}
