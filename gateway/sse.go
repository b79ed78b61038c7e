package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// sseTransport writes run events as Server-Sent Events: "id:" is the event's
// seq (the last one of a coalesced span, so Last-Event-ID resumes after it;
// "seq:end" for a part of a split delta that is not its last), "event:" its
// type, "data:" its JSON. No event, framing included, is longer than max.
type sseTransport struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	max          int // Config.MaxEventBytes
}

func newSSETransport(w http.ResponseWriter, writeTimeout time.Duration, maxEvent int) *sseTransport {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := &sseTransport{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout, max: maxEvent}
	_ = t.flush() // headers out now: the reader knows it is subscribed before the first event
	return t
}

func (t *sseTransport) writeEvents(evs []*messages.RunEvent, off int) error {
	bp := getBuf(writeBufSize(t.max))
	defer putBuf(bp)
	b := *bp
	sp := spanner{evs: evs, off: off, budget: textBudget(t.max)}
	for s, ok := sp.next(); ok; s, ok = sp.next() {
		if len(b)+t.max > cap(b) {
			if err := t.write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		b = appendSSEEvent(b, evs, s, t.max)
	}
	if err := t.write(b); err != nil {
		return err
	}
	return t.flush()
}

// appendSSEEvent writes one wire event: id, event and data lines.
func appendSSEEvent(b []byte, evs []*messages.RunEvent, s span, max int) []byte {
	last := evs[s.hi-1]
	b = append(b, "id: "...)
	b = appendEventID(b, evs, s)
	b = append(b, "\nevent: "...)
	b = append(b, eventType(last)...)
	b = append(b, "\ndata: "...)
	b = appendEventJSON(b, evs, s, textBudget(max))
	return append(b, "\n\n"...)
}

// appendEventID writes what a reader that has this event resumes after:
// its (last) seq, or "seq:end" for a part of a delta that is not its last
// (the reader has the delta's text up to byte end). See fromSeq.
func appendEventID(b []byte, evs []*messages.RunEvent, s span) []byte {
	last := evs[s.hi-1]
	b = strconv.AppendUint(b, last.Seq, 10)
	if s.isPart() && s.to < len(last.GetTokenDelta().GetText()) {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(s.to), 10)
	}
	return b
}

func (t *sseTransport) writeLagged(nextSeq uint64) error {
	bp := getBuf(writeBufSize(t.max))
	defer putBuf(bp)
	b := append(*bp, "event: lagged\ndata: {\"type\":\"lagged\",\"next_seq\":"...)
	b = strconv.AppendUint(b, nextSeq, 10)
	b = append(b, "}\n\n"...)
	if err := t.write(b); err != nil {
		return err
	}
	return t.flush()
}

var ssePing = []byte(": ping\n\n")

func (t *sseTransport) ping() error {
	if err := t.write(ssePing); err != nil {
		return err
	}
	return t.flush()
}

// write writes whole events to the connection (net/http buffers at most a
// few KiB of them until flush).
func (t *sseTransport) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if t.writeTimeout > 0 {
		_ = t.rc.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	}
	_, err := t.w.Write(b)
	return err
}

func (t *sseTransport) flush() error {
	if t.writeTimeout > 0 {
		_ = t.rc.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	}
	return t.rc.Flush()
}
