package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// sseTransport writes run events as Server-Sent Events: "id:" is the event's
// seq (the last one of a coalesced span, so Last-Event-ID resumes after it),
// "event:" its type, "data:" its JSON.
type sseTransport struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	buf          []byte
}

func newSSETransport(w http.ResponseWriter, writeTimeout time.Duration) *sseTransport {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := &sseTransport{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout, buf: make([]byte, 0, 4096)}
	_ = t.flush() // headers out now: the reader knows it is subscribed before the first event
	return t
}

func (t *sseTransport) writeEvents(evs []*messages.RunEvent, spans []span) error {
	b := t.buf[:0]
	for _, s := range spans {
		last := evs[s.hi-1]
		b = append(b, "id: "...)
		b = strconv.AppendUint(b, last.Seq, 10)
		b = append(b, "\nevent: "...)
		b = append(b, eventType(last)...)
		b = append(b, "\ndata: "...)
		b = appendEventJSON(b, evs, s)
		b = append(b, "\n\n"...)
	}
	t.buf = b
	return t.write(b)
}

func (t *sseTransport) writeLagged(nextSeq uint64) error {
	b := append(t.buf[:0], "event: lagged\ndata: {\"type\":\"lagged\",\"next_seq\":"...)
	b = strconv.AppendUint(b, nextSeq, 10)
	b = append(b, "}\n\n"...)
	t.buf = b
	return t.write(b)
}

func (t *sseTransport) ping() error { return t.write([]byte(": ping\n\n")) }

func (t *sseTransport) write(b []byte) error {
	if t.writeTimeout > 0 {
		_ = t.rc.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	}
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	return t.flush()
}

func (t *sseTransport) flush() error { return t.rc.Flush() }
