package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Event types (docs/api.md, "Events").
const (
	EventRunPlanned     = "run_planned"
	EventStageStarted   = "stage_started"
	EventTokenDelta     = "token_delta"
	EventStageCompleted = "stage_completed"
	EventStageRestarted = "stage_restarted"
	EventStepSkipped    = "step_skipped"
	EventRanking        = "ranking"
	EventStepNote       = "step_note"
	EventRunCompleted   = "run_completed"
	EventRunFailed      = "run_failed"
	EventRunCancelled   = "run_cancelled"
	EventLagged         = "lagged"
)

// Part says which bytes of a split delta's text an event carries.
type Part struct {
	Offset int `json:"offset"`
	End    int `json:"end"`
	Size   int `json:"size"`
}

// PlannedStep is one step of a run_planned event.
type PlannedStep struct {
	Step      string   `json:"step"`
	Stage     string   `json:"stage"`
	Model     string   `json:"model"`
	Provider  string   `json:"provider"`
	Inputs    []string `json:"inputs"`
	MinInputs int      `json:"min_inputs"`
	Final     bool     `json:"final"`
	Layer     int      `json:"layer"`
}

// Event is one event of a run's stream: the fields of every type (those a
// type does not have are zero), its SSE id, and its JSON as received.
type Event struct {
	// ID is the SSE id: the seq, or "seq:end" for a part of a split delta
	// that is not its last; empty for lagged.
	ID   string    `json:"-"`
	Seq  uint64    `json:"seq"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`

	Step     string `json:"step,omitempty"`
	Stage    string `json:"stage,omitempty"`
	Model    string `json:"model,omitempty"`
	Provider string `json:"provider,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
	Fallback bool   `json:"fallback,omitempty"`
	Final    bool   `json:"final,omitempty"`
	Note     string `json:"note,omitempty"`

	Text    string `json:"text,omitempty"`
	Tokens  int64  `json:"tokens,omitempty"`
	FromSeq uint64 `json:"from_seq,omitempty"`
	Part    *Part  `json:"part,omitempty"`

	OutputBytes int     `json:"output_bytes,omitempty"`
	AnswerBytes int     `json:"answer_bytes,omitempty"`
	Usage       *Usage  `json:"usage,omitempty"`
	TTFTMs      float64 `json:"ttft_ms,omitempty"`
	DurationMs  float64 `json:"duration_ms,omitempty"`

	Reason string `json:"reason,omitempty"`
	Code   string `json:"code,omitempty"`

	Strategy string        `json:"strategy,omitempty"`
	Steps    []PlannedStep `json:"steps,omitempty"`

	Aggregate bool   `json:"aggregate,omitempty"`
	Ranked    []Rank `json:"ranked,omitempty"`

	Kind    string `json:"kind,omitempty"`
	Message string `json:"message,omitempty"`

	NextSeq uint64 `json:"next_seq,omitempty"`

	// JSON is the event's data exactly as received.
	JSON json.RawMessage `json:"-"`
}

// Terminal reports whether the event ends the run's log.
func (e *Event) Terminal() bool {
	return e.Type == EventRunCompleted || e.Type == EventRunFailed || e.Type == EventRunCancelled
}

// sseReader parses a text/event-stream. Lines are read with a
// bufio.Reader, so no line length limit applies (the gateway keeps events
// within 16 KiB anyway).
type sseReader struct {
	r *bufio.Reader
}

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReaderSize(r, 16<<10)} }

// ErrBadEvent is returned for an event whose data is not an event's JSON.
var ErrBadEvent = errors.New("client: bad event")

// next returns the next event with data (comments and empty events are
// skipped). A stream that ends mid-event returns io.ErrUnexpectedEOF; one
// that ends between events io.EOF.
func (s *sseReader) next() (Event, error) {
	var id, typ string
	var data bytes.Buffer
	hasData, partial := false, false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && (partial || line != "") {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if !hasData {
				id, typ, partial = "", "", false
				continue
			}
			ev := Event{}
			if err := json.Unmarshal(data.Bytes(), &ev); err != nil {
				return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
			}
			ev.ID, ev.JSON = id, append(json.RawMessage(nil), data.Bytes()...)
			if ev.Type == "" {
				ev.Type = typ
			}
			return ev, nil
		}
		partial = true
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			typ = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		}
	}
}

// Cursor is where a reader of a run's log is: the id of the last event it
// has ("" for none), as Last-Event-ID takes it.
type Cursor string

// After is the cursor of a reader that has every event up to seq.
func After(seq uint64) Cursor {
	if seq == 0 {
		return ""
	}
	return Cursor(strconv.FormatUint(seq, 10))
}
