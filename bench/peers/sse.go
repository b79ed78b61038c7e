package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Errors of the SSE reader.
var (
	// errLineTooLong: a line (without its end) is longer than the reader's
	// line bound. The stream cannot be resynchronised after it.
	errLineTooLong = errors.New("benchpeers: SSE line longer than the bound")
	// errEventTooLarge: an event's data lines add up to more than the
	// reader's event bound.
	errEventTooLarge = errors.New("benchpeers: SSE event larger than the bound")
)

// sseEvent is one dispatched Server-Sent Event. Its slices are valid until
// the reader's next call.
type sseEvent struct {
	// Type is the "event:" field, "message" when the event had none.
	Type []byte
	// ID is the "id:" field of this event, nil when it had none (the
	// reader does not carry the last id over, as a browser would: the
	// benchmark wants to know which events had one).
	ID []byte
	// Data is the event's data lines joined by "\n".
	Data []byte
}

// sseReader is a minimal Server-Sent Events parser with explicit bounds:
// a line longer than maxLine bytes is errLineTooLong, an event whose data
// adds up to more than maxEvent bytes is errEventTooLarge. Memory per
// reader is its read buffer plus what the longest line and event really
// needed (lines longer than the buffer are assembled in a side buffer), so
// a thousand readers with a generous bound cost little.
//
// Lines end with LF; a CR before it is dropped (CRLF). A lone CR does not
// end a line (neither QLC nor Centrifugo writes one): it stays in the value.
// Fields: "data" (appended, one LF between lines), "event", "id"; "retry",
// comments (lines starting with ':') and unknown fields are ignored. A
// blank line dispatches the event if it has data (an event without data is
// dropped, as the HTML standard says); a partial event at the end of the
// stream is dropped. One space after the field's colon is removed.
//
// Its methods are not safe for concurrent use: one reader per connection.
type sseReader struct {
	br                *bufio.Reader
	maxLine, maxEvent int

	long          []byte // a line longer than br's buffer, assembled
	typ, id, data []byte
	hasID         bool
}

// Default bounds and buffer size of the benchmark's readers.
const (
	defaultReadBuf  = 4 << 10
	defaultMaxLine  = 1 << 20
	defaultMaxEvent = 1 << 20
)

// newSSEReader reads events from r through a buffer of bufSize bytes (at
// least 16), with lines of at most maxLine bytes and events of at most
// maxEvent bytes of data.
func newSSEReader(r io.Reader, bufSize, maxLine, maxEvent int) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, bufSize), maxLine: maxLine, maxEvent: maxEvent}
}

var (
	fieldData  = []byte("data")
	fieldEvent = []byte("event")
	fieldID    = []byte("id")
	typMessage = []byte("message")
)

// readLine returns the next line without its end (LF or CRLF). The slice
// is valid until the next read.
func (s *sseReader) readLine() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Longer than the buffer: assemble it, keeping within the bound
		// (+1 for a CR that the end will drop).
		s.long = append(s.long[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(s.long) > s.maxLine+1 {
				return nil, errLineTooLong
			}
			line, err = s.br.ReadSlice('\n')
			s.long = append(s.long, line...)
		}
		line = s.long
	}
	switch {
	case err == io.EOF && len(line) > s.maxLine+1:
		return nil, errLineTooLong // the same answer whatever the buffer's size
	case err == io.EOF && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > s.maxLine {
		return nil, errLineTooLong
	}
	return line, nil
}

// Next returns the next event. At the end of the stream it returns io.EOF
// (a partial event is dropped), or io.ErrUnexpectedEOF when the stream ends
// in the middle of a line; other errors are the connection's or the bounds'.
func (s *sseReader) Next() (sseEvent, error) {
	s.typ, s.id, s.data, s.hasID = s.typ[:0], s.id[:0], s.data[:0], false
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if !hasData {
				s.typ, s.id, s.hasID = s.typ[:0], s.id[:0], false
				continue
			}
			ev := sseEvent{Type: s.typ, Data: s.data}
			if len(ev.Type) == 0 {
				ev.Type = typMessage
			}
			if s.hasID {
				ev.ID = s.id
			}
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch {
		case bytes.Equal(name, fieldData):
			extra := len(value)
			if hasData {
				extra++
			}
			if len(s.data)+extra > s.maxEvent {
				return sseEvent{}, errEventTooLarge
			}
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			hasData = true
		case bytes.Equal(name, fieldEvent):
			s.typ = append(s.typ[:0], value...)
		case bytes.Equal(name, fieldID):
			if bytes.IndexByte(value, 0) < 0 {
				s.id, s.hasID = append(s.id[:0], value...), true
			}
		}
	}
}
