package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// Defaults for Config; see the fields for why.
const (
	DefaultMaxLineSize  = 1 << 20 // 1 MiB: far above any real chunk, far below memory trouble
	DefaultMaxEventSize = 1 << 20 // 1 MiB of joined data per event
	DefaultBufferSize   = 4 << 10 // 4 KiB: holds many typical 150-300 byte events per read
)

var (
	// ErrLineTooLong is returned (wrapped, with the limit) when a line is
	// longer than Config.MaxLineSize bytes, its terminator not counted.
	ErrLineTooLong = errors.New("sse: line too long")
	// ErrEventTooLarge is returned (wrapped, with the limit) when an event's
	// joined data would exceed Config.MaxEventSize bytes.
	ErrEventTooLarge = errors.New("sse: event too large")
	// ErrIncomplete is returned when the input ends inside an event: data
	// lines without the blank line that dispatches them, or an unterminated
	// line. The unfinished event is discarded, as the standard says. It wraps
	// io.ErrUnexpectedEOF.
	ErrIncomplete = fmt.Errorf("sse: stream ended inside an event: %w", io.ErrUnexpectedEOF)
	// errNegativeRead guards against a broken io.Reader.
	errNegativeRead = errors.New("sse: reader returned an invalid count")
)

// maxEmptyReads is how many (0, nil) reads in a row are tolerated before
// giving up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// Config bounds and observes a Decoder. The zero value is valid: zero fields
// take their defaults.
type Config struct {
	// MaxLineSize is the longest line accepted, in bytes without its
	// terminator; a longer line fails the stream with ErrLineTooLong.
	// 0 means DefaultMaxLineSize.
	MaxLineSize int
	// MaxEventSize bounds the joined data of one event, in bytes; a larger
	// event fails the stream with ErrEventTooLarge. 0 means DefaultMaxEventSize.
	MaxEventSize int
	// BufferSize is the initial read buffer; it grows (up to MaxLineSize+1)
	// only for lines longer than it. 0 means DefaultBufferSize.
	BufferSize int
	// OnComment, if set, is called for every comment line with the text after
	// the ':' (one leading space stripped). The slice is valid only during the
	// call. It is called on the goroutine calling Next and must not block.
	// Use it to reset a stall timer on keep-alives such as OpenRouter's
	// ": OPENROUTER PROCESSING".
	OnComment func(comment []byte)
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		MaxLineSize:  DefaultMaxLineSize,
		MaxEventSize: DefaultMaxEventSize,
		BufferSize:   DefaultBufferSize,
	}
}

// validate rejects negative sizes and fills zero ones with defaults.
func (c *Config) validate() error {
	if c.MaxLineSize < 0 || c.MaxEventSize < 0 || c.BufferSize < 0 {
		return fmt.Errorf("sse: negative size in config (line %d, event %d, buffer %d)",
			c.MaxLineSize, c.MaxEventSize, c.BufferSize)
	}
	if c.MaxLineSize == 0 {
		c.MaxLineSize = DefaultMaxLineSize
	}
	if c.MaxEventSize == 0 {
		c.MaxEventSize = DefaultMaxEventSize
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	// A buffer never needs to be larger than the longest legal line plus one
	// byte (the one that proves it too long).
	c.BufferSize = min(c.BufferSize, c.MaxLineSize+1)
	return nil
}

// Event is one dispatched event. Its slices alias the Decoder's buffers and
// are valid only until the next call to Next or Reset; copy what you keep.
type Event struct {
	// Type is the event's "event" field; empty means the default, "message".
	Type []byte
	// Data is the event's data lines joined by "\n" (no trailing newline).
	Data []byte
	// ID is the last event ID seen so far in the stream (it persists across
	// events, as the standard says); empty if none.
	ID []byte
}

// Decoder reads events from an io.Reader. Create it with NewDecoder.
type Decoder struct {
	rd  io.Reader
	cfg Config

	// buf[r:w] holds bytes read but not yet consumed. The first scanned of
	// them are known to contain no line terminator (the current partial line).
	buf     []byte
	r, w    int
	scanned int
	// skipLF is set when a line ended with '\r' as the last buffered byte: a
	// '\n' arriving next belongs to that "\r\n" and is dropped.
	skipLF bool
	// started is set once the first line has been seen (the BOM is only
	// skipped there).
	started bool
	// rerr is the reader's error, returned once the buffer is used up.
	rerr error
	// err is sticky: once set, Next returns it forever.
	err error

	// The event being assembled.
	data    []byte
	hasData bool
	typ     []byte

	// Stream state that outlives events.
	id       []byte
	retry    time.Duration
	hasRetry bool
}

// NewDecoder returns a Decoder reading from r, or an error if cfg is invalid.
func NewDecoder(r io.Reader, cfg Config) (*Decoder, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Decoder{cfg: cfg, buf: make([]byte, cfg.BufferSize)}
	d.Reset(r)
	return d, nil
}

// Reset makes d read a new stream from r, keeping its buffers and Config.
func (d *Decoder) Reset(r io.Reader) {
	d.rd = r
	d.r, d.w, d.scanned = 0, 0, 0
	d.skipLF, d.started = false, false
	d.rerr, d.err = nil, nil
	d.data, d.hasData, d.typ = d.data[:0], false, d.typ[:0]
	d.id, d.retry, d.hasRetry = d.id[:0], 0, false
}

// LastEventID is the stream's last event ID (the "id" field most recently
// seen); empty if none.
func (d *Decoder) LastEventID() string { return string(d.id) }

// Retry is the reconnection time most recently sent in a "retry" field, and
// whether one was sent at all.
func (d *Decoder) Retry() (time.Duration, bool) { return d.retry, d.hasRetry }

// Buffered is how many bytes have been read from the reader but not yet
// decoded.
func (d *Decoder) Buffered() int { return d.w - d.r }

// Ready reports whether Next will return without reading from the reader:
// an event, or an error, is already buffered. It may answer false when Next
// would not block (it does not decode what it cannot be sure of), never
// true when Next would. It consumes nothing.
func (d *Decoder) Ready() bool {
	if d.err != nil || d.rerr != nil {
		return true
	}
	b := d.buf[d.r:d.w]
	if d.skipLF && len(b) > 0 && b[0] == '\n' {
		b = b[1:]
	}
	hasData := false
	for {
		i := indexEOL(b)
		if i < 0 {
			return false // no complete line left: Next would read
		}
		line := b[:i]
		if len(line) == 0 {
			if hasData {
				return true // the blank line that dispatches the event
			}
		} else if name, _, _ := bytes.Cut(line, []byte{':'}); string(name) == "data" {
			hasData = true
		}
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
	}
}

// Next returns the next event. At a clean end of input (between events) it
// returns io.EOF; if the input ends inside an event it returns ErrIncomplete.
// Other errors are ErrLineTooLong, ErrEventTooLarge (both wrapped) or the
// reader's error wrapped. Errors are sticky.
func (d *Decoder) Next() (Event, error) {
	if d.err != nil {
		return Event{}, d.err
	}
	d.data, d.hasData, d.typ = d.data[:0], false, d.typ[:0]
	for {
		line, err := d.readLine()
		if err != nil {
			if err == io.EOF && d.hasData {
				err = ErrIncomplete
			}
			d.err = err
			return Event{}, err
		}
		if len(line) == 0 {
			if !d.hasData {
				// A blank line with no data: the standard resets the event
				// type and dispatches nothing.
				d.typ = d.typ[:0]
				continue
			}
			return Event{Type: d.typ, Data: d.data, ID: d.id}, nil
		}
		if line[0] == ':' {
			if d.cfg.OnComment != nil {
				c := line[1:]
				if len(c) > 0 && c[0] == ' ' {
					c = c[1:]
				}
				d.cfg.OnComment(c)
			}
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			n := len(d.data) + len(value)
			if d.hasData {
				n++
			}
			if n > d.cfg.MaxEventSize {
				d.err = fmt.Errorf("%w (limit %d bytes)", ErrEventTooLarge, d.cfg.MaxEventSize)
				return Event{}, d.err
			}
			if d.hasData {
				d.data = append(d.data, '\n')
			}
			d.data = append(d.data, value...)
			d.hasData = true
		case "event":
			d.typ = append(d.typ[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				d.id = append(d.id[:0], value...)
			}
		case "retry":
			if ms, ok := parseDigits(value); ok {
				d.retry, d.hasRetry = time.Duration(ms)*time.Millisecond, true
			}
		}
	}
}

// maxRetryMillis keeps a retry value inside time.Duration.
const maxRetryMillis = int64(1<<63-1) / int64(time.Millisecond)

// parseDigits parses a non-empty run of ASCII digits; anything else, or a
// value too large for a time.Duration in milliseconds, is rejected.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n > maxRetryMillis {
			return 0, false
		}
	}
	return n, true
}

// readLine returns the next line without its terminator. The slice aliases
// d.buf and is valid until the next readLine. At the end of input it returns
// io.EOF, or ErrIncomplete if an unterminated line (other than a comment) is
// left over.
func (d *Decoder) readLine() ([]byte, error) {
	for {
		if d.skipLF && d.r < d.w {
			d.skipLF = false
			if d.buf[d.r] == '\n' {
				d.r++
			}
		}
		if i := indexEOL(d.buf[d.r+d.scanned : d.w]); i >= 0 {
			end := d.r + d.scanned + i
			line := d.buf[d.r:end]
			d.r, d.scanned = end+1, 0
			if d.buf[end] == '\r' {
				if d.r < d.w {
					if d.buf[d.r] == '\n' {
						d.r++
					}
				} else {
					d.skipLF = true
				}
			}
			if len(line) > d.cfg.MaxLineSize {
				return nil, d.lineTooLong()
			}
			if !d.started {
				d.started = true
				line = bytes.TrimPrefix(line, bom)
			}
			return line, nil
		}
		d.scanned = d.w - d.r
		if d.scanned > d.cfg.MaxLineSize {
			return nil, d.lineTooLong()
		}
		if d.rerr != nil {
			if d.rerr != io.EOF {
				return nil, fmt.Errorf("sse: read: %w", d.rerr)
			}
			partial := d.buf[d.r:d.w]
			if !d.started {
				partial = bytes.TrimPrefix(partial, bom)
			}
			if len(partial) > 0 && partial[0] != ':' {
				return nil, ErrIncomplete
			}
			return nil, io.EOF
		}
		d.fill()
	}
}

var bom = []byte("\xEF\xBB\xBF")

func (d *Decoder) lineTooLong() error {
	return fmt.Errorf("%w (limit %d bytes)", ErrLineTooLong, d.cfg.MaxLineSize)
}

// indexEOL returns the index of the first '\n' or '\r' in b, or -1.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	// A '\r' before the '\n' ends the line first (lone CR, or CRLF).
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}

// fill reads more input into d.buf, sliding or growing it as needed. It
// records the reader's error in d.rerr.
func (d *Decoder) fill() {
	if d.r > 0 {
		d.w = copy(d.buf, d.buf[d.r:d.w])
		d.r = 0
	}
	if d.w == len(d.buf) {
		// The partial line fills the buffer but is not yet too long: grow,
		// never beyond what proves a line too long.
		n := min(2*len(d.buf), d.cfg.MaxLineSize+1)
		nb := make([]byte, max(n, len(d.buf)+1))
		copy(nb, d.buf[:d.w])
		d.buf = nb
	}
	for range maxEmptyReads {
		n, err := d.rd.Read(d.buf[d.w:])
		if n < 0 || n > len(d.buf)-d.w {
			d.rerr = errNegativeRead
			return
		}
		d.w += n
		if err != nil {
			d.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	d.rerr = io.ErrNoProgress
}
