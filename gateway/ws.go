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

// wsTransport writes each event (or coalesced span) as one text message.
type wsTransport struct {
	ctx          context.Context
	conn         *websocket.Conn
	writeTimeout time.Duration
	buf          []byte
}

func (t *wsTransport) writeEvents(evs []*messages.RunEvent, spans []span) error {
	for _, s := range spans {
		t.buf = appendEventJSON(t.buf[:0], evs, s)
		if err := t.write(t.buf); err != nil {
			return err
		}
	}
	return nil
}

func (t *wsTransport) writeLagged(nextSeq uint64) error {
	b := append(t.buf[:0], `{"type":"lagged","next_seq":`...)
	b = strconv.AppendUint(b, nextSeq, 10)
	b = append(b, '}')
	t.buf = b
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
