package gateway

import (
	"context"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/qlc-project/qlc/messages"
)

// wsLaggedCode is the close code sent to a WebSocket reader that fell behind
// (4000-4999 are free for applications); the close reason holds next_seq.
const wsLaggedCode websocket.StatusCode = 4000

// wsTransport writes each wire event (an event, a coalesced span, or a part
// of a split delta) as one text message of at most max bytes.
type wsTransport struct {
	ctx          context.Context
	conn         *websocket.Conn
	writeTimeout time.Duration
	max          int // Config.MaxEventBytes
}

func (t *wsTransport) writeEvents(evs []*messages.RunEvent, off int) error {
	bp := getBuf(t.max)
	defer putBuf(bp)
	sp := spanner{evs: evs, off: off, budget: textBudget(t.max)}
	for s, ok := sp.next(); ok; s, ok = sp.next() {
		if err := t.write(appendEventJSON((*bp)[:0], evs, s, textBudget(t.max))); err != nil {
			return err
		}
	}
	return nil
}

func (t *wsTransport) writeLagged(nextSeq uint64) error {
	bp := getBuf(t.max)
	defer putBuf(bp)
	b := append(*bp, `{"type":"lagged","next_seq":`...)
	b = strconv.AppendUint(b, nextSeq, 10)
	b = append(b, '}')
	if err := t.write(b); err != nil {
		return err
	}
	return t.conn.Close(wsLaggedCode, "lagged; resume from_seq="+strconv.FormatUint(nextSeq, 10))
}

func (t *wsTransport) ping() error {
	ctx, cancel := context.WithTimeout(t.ctx, t.writeTimeout)
	defer cancel()
	return t.conn.Ping(ctx)
}

func (t *wsTransport) write(b []byte) error {
	ctx, cancel := context.WithTimeout(t.ctx, t.writeTimeout)
	defer cancel()
	return t.conn.Write(ctx, websocket.MessageText, b)
}
