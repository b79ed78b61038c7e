package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/qlc-project/qlc/gateway/consoleweb"
	"github.com/qlc-project/qlc/messages"
)

// consoleRoutes adds the console's page and API to mux.
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.Handle("GET /console", consoleweb.Handler())
	mux.Handle("GET /console/", consoleweb.Handler())
	mux.HandleFunc("GET /v1/admin/console", s.consoleSnapshot)
	mux.HandleFunc("GET /v1/admin/console/events", s.consoleEvents)
	mux.HandleFunc("GET /v1/admin/console/runs/{id}", s.consoleRun)
}

// consoleSnapshot answers the latest snapshot once (for scripts); with
// ?fresh=1, or before the first, it waits (at most 3 s) for the nodes to be
// asked after the request came.
func (s *Server) consoleSnapshot(w http.ResponseWriter, r *http.Request) {
	asked := time.Now()
	wake, cancel := s.console.watch() // counts as watched: the nodes are asked now
	defer cancel()
	if seq, _ := s.console.latestSnapshot(); seq == 0 || r.URL.Query().Get("fresh") != "" {
		deadline := time.NewTimer(3 * time.Second)
		defer deadline.Stop()
	wait:
		for !s.console.nodesAskedSince(asked) {
			select {
			case <-wake:
			case <-deadline.C:
				break wait
			case <-r.Context().Done():
				return
			}
		}
	}
	_, b := s.console.latestSnapshot()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// consoleEvents streams snapshots as SSE: "event: snapshot", "id:" the
// snapshot's sequence number, "data:" its JSON. Each is the whole state; a
// reader that falls behind gets the latest and never a queue.
func (s *Server) consoleEvents(w http.ResponseWriter, r *http.Request) {
	wake, cancel := s.console.watch()
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	write := func(b []byte) error {
		if s.cfg.WriteTimeout > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if write([]byte(": console\n\n")) != nil {
		return
	}
	var sent uint64
	ping := time.NewTicker(max(s.cfg.PingInterval, time.Second))
	defer ping.Stop()
	for {
		if seq, b := s.console.latestSnapshot(); seq != sent && b != nil {
			sent = seq
			out := make([]byte, 0, len(b)+48)
			out = append(out, "id: "...)
			out = strconv.AppendUint(out, seq, 10)
			out = append(out, "\nevent: snapshot\ndata: "...)
			out = append(out, b...) // JSON has no raw newline
			out = append(out, "\n\n"...)
			if write(out) != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		case <-wake:
		case <-ping.C:
			if write([]byte(": ping\n\n")) != nil {
				return
			}
		}
	}
}

// consoleTimelineEntry is one row of a run's event timeline: an event, or
// a stretch of one step's token deltas folded into one row.
type consoleTimelineEntry struct {
	Seq    uint64    `json:"seq"`
	ToSeq  uint64    `json:"to_seq,omitempty"` // a folded stretch's last
	At     time.Time `json:"at"`
	Type   string    `json:"type"`
	Step   string    `json:"step,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Tokens int64     `json:"tokens,omitempty"`
}

// consoleSpan is one span of a run's trace on the wire.
type consoleSpan struct {
	SpanID     string            `json:"span_id"`
	Parent     string            `json:"parent_span_id,omitempty"`
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Service    string            `json:"service"`
	Instance   string            `json:"instance"`
	StartUs    int64             `json:"start_us"` // Unix microseconds
	EndUs      int64             `json:"end_us"`
	Status     string            `json:"status,omitempty"`
	StatusMsg  string            `json:"status_message,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// consoleTimelineMax bounds a run's timeline rows.
const consoleTimelineMax = 2000

// consoleRun answers one run's details: its resource (steps), its event
// timeline and its trace's spans from every process's span store.
func (s *Server) consoleRun(w http.ResponseWriter, r *http.Request) {
	h, err := s.engine.Hub(r.PathValue("id"))
	if err != nil {
		writeError(w, errNotFound("run_not_found", fmt.Sprintf("no run %q on this gateway (finished runs leave the console once evicted)", r.PathValue("id"))))
		return
	}
	out := struct {
		Run           runView                `json:"run"`
		Timeline      []consoleTimelineEntry `json:"timeline"`
		Spans         []consoleSpan          `json:"spans"`
		SpansComplete bool                   `json:"spans_complete"`
	}{Run: s.view(h), Timeline: consoleTimeline(h.Events(1)), Spans: []consoleSpan{}, SpansComplete: true}
	out.Run.Answer = "" // the console shows structure, not text
	for i := range out.Run.Steps {
		out.Run.Steps[i].Output = ""
	}
	for i := range out.Run.Stages {
		out.Run.Stages[i].Output = ""
	}
	if h.TraceID != "" {
		spans, complete := s.engine.TraceSpans(h.TraceID)
		out.SpansComplete = complete
		for _, sp := range spans {
			out.Spans = append(out.Spans, consoleSpan{SpanID: sp.SpanId, Parent: sp.ParentSpanId, Name: sp.Name, Kind: sp.Kind,
				Service: sp.Service, Instance: sp.Instance, StartUs: sp.Start.AsTime().UnixMicro(), EndUs: sp.End.AsTime().UnixMicro(),
				Status: sp.Status, StatusMsg: sp.StatusMessage, Attributes: sp.Attributes})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

// consoleTimeline folds a run's log into timeline rows: each event, with a
// run of one step's token deltas as one row (their count of tokens).
func consoleTimeline(evs []*messages.RunEvent) []consoleTimelineEntry {
	out := []consoleTimelineEntry{}
	for _, ev := range evs {
		e := consoleTimelineEntry{Seq: ev.Seq, At: ev.GetTime().AsTime().UTC(), Type: eventType(ev)}
		switch k := ev.GetKind().(type) {
		case *messages.RunEvent_TokenDelta:
			e.Step = stepOf(k.TokenDelta.Step, k.TokenDelta.Stage)
			if n := len(out); n > 0 && out[n-1].Type == evTokenDelta && out[n-1].Step == e.Step {
				out[n-1].ToSeq = ev.Seq
				out[n-1].Tokens += int64(k.TokenDelta.Tokens)
				continue
			}
			e.Tokens = int64(k.TokenDelta.Tokens)
		case *messages.RunEvent_StageStarted:
			m := k.StageStarted
			e.Step = stepOf(m.Step, m.Stage)
			e.Detail = fmt.Sprintf("%s/%s, attempt %d", m.Provider, m.Model, m.Attempt)
			if m.Fallback {
				e.Detail += " (fallback)"
			}
		case *messages.RunEvent_StageCompleted:
			e.Step = stepOf(k.StageCompleted.Step, k.StageCompleted.Stage)
		case *messages.RunEvent_StageRestarted:
			e.Step, e.Detail = stepOf(k.StageRestarted.Step, k.StageRestarted.Stage), k.StageRestarted.Reason
		case *messages.RunEvent_StepSkipped:
			e.Step, e.Detail = stepOf(k.StepSkipped.Step, k.StepSkipped.Stage), k.StepSkipped.Reason
		case *messages.RunEvent_StepNote:
			e.Step, e.Detail = k.StepNote.Step, k.StepNote.Message
		case *messages.RunEvent_RunFailed:
			e.Detail = k.RunFailed.Code + ": " + k.RunFailed.Reason
		case *messages.RunEvent_RunCancelled:
			e.Detail = k.RunCancelled.Reason
		}
		if len(e.Detail) > 300 {
			e.Detail = strings.ToValidUTF8(e.Detail[:300], "")
		}
		if len(out) == consoleTimelineMax {
			break
		}
		out = append(out, e)
	}
	return out
}
