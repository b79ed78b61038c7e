package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	EventModelChosen    = "model_chosen" // the cost/quality optimiser's choice for a step
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
	// Received is when the event's last byte was read from the connection
	// (the read that completed it), taken before its JSON was parsed: a
	// load generator's arrival time, free of the reader's own parsing.
	Received time.Time `json:"-"`
}

// Terminal reports whether the event ends the run's log.
func (e *Event) Terminal() bool {
	return e.Type == EventRunCompleted || e.Type == EventRunFailed || e.Type == EventRunCancelled
}

// sseReader parses a text/event-stream. Lines are read with a
// bufio.Reader, so no line length limit applies (the gateway keeps events
// within 16 KiB anyway).
type sseReader struct {
	r     *bufio.Reader
	stamp *stampReader
	data  []byte // the current event's data, reused
}

func newSSEReader(r io.Reader) *sseReader {
	st := &stampReader{r: r}
	return &sseReader{r: bufio.NewReaderSize(st, 16<<10), stamp: st}
}

// stampReader notes when each read from the connection returned bytes.
// The buffered reader above it reads only when it has run out, so when an
// event's last line is taken from the buffer, the latest read is the one
// that delivered that line's end: the event's arrival time.
type stampReader struct {
	r  io.Reader
	at time.Time
}

func (s *stampReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.at = time.Now()
	}
	return n, err
}

// ErrBadEvent is returned for an event whose data is not an event's JSON.
var ErrBadEvent = errors.New("client: bad event")

// next returns the next event with data (comments and empty events are
// skipped). A stream that ends mid-event returns io.ErrUnexpectedEOF; one
// that ends between events io.EOF.
func (s *sseReader) next() (Event, error) {
	f, err := s.nextFrame()
	if err != nil {
		return Event{}, err
	}
	ev := Event{}
	if err := json.Unmarshal(f.Data, &ev); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	ev.ID, ev.JSON, ev.Received = f.ID, append(json.RawMessage(nil), f.Data...), f.Received
	if ev.Type == "" {
		ev.Type = f.Event
	}
	return ev, nil
}

// frame is one SSE event as framed on the wire, before its data is parsed.
type frame struct {
	ID, Event string
	// Data is the event's data lines joined by "\n"; valid until the next
	// call.
	Data []byte
	// Received: see Event.Received.
	Received time.Time
}

// nextFrame returns the next SSE event that has data.
func (s *sseReader) nextFrame() (frame, error) {
	var id, typ string
	s.data = s.data[:0]
	hasData, partial := false, false
	for {
		line, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: gather it whole.
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = s.r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if err == io.EOF && (partial || len(line) != 0) {
				return frame{}, io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if !hasData {
				id, typ, partial = "", "", false
				continue
			}
			return frame{ID: id, Event: typ, Data: s.data, Received: s.stamp.at}, nil
		}
		partial = true
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			id = string(value)
		case "event":
			typ = string(value)
		case "data":
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
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
