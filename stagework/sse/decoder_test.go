package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// result is everything a decode run observed, copied out of the decoder.
type result struct {
	events   []Event
	comments []string
	err      error // final error: io.EOF, ErrIncomplete, ErrLineTooLong, ...
	retry    time.Duration
	hasRetry bool
}

// errClass names an error by the sentinel it matches, so two runs can be
// compared without caring about wrapping text.
func errClass(err error) string {
	for _, s := range []error{ErrIncomplete, ErrLineTooLong, ErrEventTooLarge, io.EOF} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	if err == nil {
		return "<nil>"
	}
	return "other: " + err.Error()
}

func (r result) String() string {
	var b strings.Builder
	for _, e := range r.events {
		fmt.Fprintf(&b, "event{type=%q data=%q id=%q}\n", e.Type, e.Data, e.ID)
	}
	fmt.Fprintf(&b, "comments=%q err=%s retry=%v/%v", r.comments, errClass(r.err), r.retry, r.hasRetry)
	return b.String()
}

func equalResults(a, b result) bool { return a.String() == b.String() }

// decodeAll runs a Decoder over rd to the end and copies out what it saw.
// Before every Next it asks Ready, and a Next that reads after Ready said
// it would not fails the test.
func decodeAll(t testing.TB, rd io.Reader, cfg Config) result {
	t.Helper()
	var res result
	cfg.OnComment = func(c []byte) { res.comments = append(res.comments, string(c)) }
	g := &guardedReader{t: t, r: rd}
	d, err := NewDecoder(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for {
		g.ready = d.Ready()
		ev, err := d.Next()
		g.ready = false
		if err != nil {
			res.err = err
			break
		}
		res.events = append(res.events, Event{
			Type: bytes.Clone(ev.Type), Data: bytes.Clone(ev.Data), ID: bytes.Clone(ev.ID),
		})
		if len(res.events) > 1<<16 {
			t.Fatal("runaway decoder")
		}
	}
	// Sticky: the same error again.
	if _, err := d.Next(); errClass(err) != errClass(res.err) {
		t.Fatalf("error not sticky: first %v, then %v", res.err, err)
	}
	res.retry, res.hasRetry = d.Retry()
	return res
}

// guardedReader fails the test when read while ready is set.
type guardedReader struct {
	t     testing.TB
	r     io.Reader
	ready bool
}

func (g *guardedReader) Read(p []byte) (int, error) {
	if g.ready {
		g.t.Fatal("Next read from the reader after Ready reported an event buffered")
	}
	return g.r.Read(p)
}

// TestReadyWhenAnEventIsBuffered: Ready says so when a whole event (data
// and its blank line) is buffered, whatever the line endings, and not for a
// partial event, a blank line without data, or comments alone.
func TestReadyWhenAnEventIsBuffered(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []bool // Ready before each Next until the end
	}{
		{"data: a\n\ndata: b\n\n", []bool{false, true, false}},
		{"data: a\r\n\r\ndata: b\r\n\r\n", []bool{false, true, false}},
		{"data: a\r\rdata: b\r\r", []bool{false, true, false}},
		{"data: a\n\n: ping\n\nevent: x\ndata: b\ndata: c\n\n", []bool{false, true, false}},
		{"data: a\n\n: ping\n\n", []bool{false, false}},
		{"data: a\n\ndata: b\n", []bool{false, false}},
		{"data: a\n\n\nid: 1\n\n", []bool{false, false}},
	} {
		d, err := NewDecoder(strings.NewReader(tc.in), Config{})
		if err != nil {
			t.Fatal(err)
		}
		var got []bool
		for {
			got = append(got, d.Ready())
			if _, err := d.Next(); err != nil {
				break
			}
		}
		// At the end the reader's EOF is known: Ready is true (Next
		// returns it at once) after a read saw it, which the last
		// entry may or may not reflect; compare all but the last.
		if fmt.Sprint(got[:len(got)-1]) != fmt.Sprint(tc.want[:len(tc.want)-1]) {
			t.Errorf("%q: Ready %v, want %v", tc.in, got, tc.want)
		}
	}
}

// chunkReader returns its input in pieces whose sizes cycle through sizes.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := c.sizes[c.i%len(c.sizes)]
	c.i++
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// splitReader returns data[:at] on the first read and the rest afterwards.
func splitReader(data []byte, at int) io.Reader {
	return io.MultiReader(bytes.NewReader(data[:at]), bytes.NewReader(data[at:]))
}

// reference is a plain decoder over the whole input, written straight from
// the standard's text with no buffering concerns; the streaming decoder must
// agree with it.
func reference(input []byte, cfg Config) result {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	var res result
	in := input
	var data, typ, id []byte
	hasData, first := false, true
	for {
		// Find the next line terminator.
		i := bytes.IndexAny(in, "\r\n")
		if i < 0 {
			tooLong := len(in) > cfg.MaxLineSize
			if first {
				in = bytes.TrimPrefix(in, bom)
			}
			switch {
			case tooLong:
				res.err = ErrLineTooLong
			case hasData || (len(in) > 0 && in[0] != ':'):
				res.err = ErrIncomplete
			default:
				res.err = io.EOF
			}
			return res
		}
		line := in[:i]
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			in = in[i+2:]
		} else {
			in = in[i+1:]
		}
		if len(line) > cfg.MaxLineSize {
			res.err = ErrLineTooLong
			return res
		}
		if first {
			line, first = bytes.TrimPrefix(line, bom), false
		}
		switch {
		case len(line) == 0:
			if hasData {
				res.events = append(res.events, Event{Type: bytes.Clone(typ), Data: bytes.Clone(data), ID: bytes.Clone(id)})
			}
			data, typ, hasData = nil, nil, false
		case line[0] == ':':
			res.comments = append(res.comments, strings.TrimPrefix(string(line[1:]), " "))
		default:
			name, value, _ := strings.Cut(string(line), ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data = append(data, value...)
				hasData = true
				if len(data) > cfg.MaxEventSize {
					res.err = ErrEventTooLarge
					return res
				}
			case "event":
				typ = []byte(value)
			case "id":
				if !strings.Contains(value, "\x00") {
					id = []byte(value)
				}
			case "retry":
				if ms, ok := parseDigits([]byte(value)); ok {
					res.retry, res.hasRetry = time.Duration(ms)*time.Millisecond, true
				}
			}
		}
	}
}

// Streams as real servers send them, used as test cases and fuzz seeds.
var seeds = []string{
	// OpenAI
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\u00e9 \u2615\"},\"finish_reason\":null}],\"usage\":null}\n\ndata: [DONE]\n\n",
	// OpenRouter keep-alives before the first chunk
	": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"\u6771\u4eac\"}}]}\n\ndata: [DONE]\n\n",
	// CRLF and lone-CR line endings, multi-line data, event/id/retry fields
	"event: delta\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\nretry: 1500\r\rdata: \xf0\x9f\x8c\xb8\r\r",
	// BOM, field without colon, unknown field, NUL in id, bad retry
	"\xEF\xBB\xBFdata\nfoo: bar\nid: a\x00b\nretry: 12x\ndata:no-space\n\n",
	// Stream cut inside an event
	"data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n",
	// llama.cpp's non-standard error field, then an id-only block
	"error: {\"code\":500,\"message\":\"boom\"}\n\nid: 9\n\n",
}

func TestDecoderCases(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		cfg   Config
		want  []Event
		notes []string
		err   error
	}{
		{name: "simple", in: "data: hello\n\n", want: []Event{{Data: []byte("hello")}}, err: io.EOF},
		{name: "one space stripped only", in: "data:  two\n\n", want: []Event{{Data: []byte(" two")}}, err: io.EOF},
		{name: "no space", in: "data:x\n\n", want: []Event{{Data: []byte("x")}}, err: io.EOF},
		{name: "multi data", in: "data: a\ndata: b\ndata\n\n", want: []Event{{Data: []byte("a\nb\n")}}, err: io.EOF},
		{name: "empty data dispatches", in: "data:\n\n", want: []Event{{Data: []byte("")}}, err: io.EOF},
		{name: "no data no dispatch", in: "event: x\n\ndata: y\n\n", want: []Event{{Data: []byte("y")}}, err: io.EOF},
		{name: "crlf", in: "data: a\r\n\r\ndata: b\r\n\r\n", want: []Event{{Data: []byte("a")}, {Data: []byte("b")}}, err: io.EOF},
		{name: "lone cr", in: "data: a\r\rdata: b\r\r", want: []Event{{Data: []byte("a")}, {Data: []byte("b")}}, err: io.EOF},
		{name: "cr then lf is one terminator", in: "data: a\r\n\n", want: []Event{{Data: []byte("a")}}, err: io.EOF},
		{name: "event type", in: "event: error\ndata: {}\n\ndata: next\n\n", want: []Event{{Type: []byte("error"), Data: []byte("{}")}, {Data: []byte("next")}}, err: io.EOF},
		{name: "id persists", in: "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n", want: []Event{{Data: []byte("a"), ID: []byte("1")}, {Data: []byte("b"), ID: []byte("1")}, {Data: []byte("c")}}, err: io.EOF},
		{name: "id with NUL ignored", in: "id: 1\n\nid: 2\x003\ndata: a\n\n", want: []Event{{Data: []byte("a"), ID: []byte("1")}}, err: io.EOF},
		{name: "comments", in: ": OPENROUTER PROCESSING\n\n:ping\ndata: a\n\n", want: []Event{{Data: []byte("a")}}, notes: []string{"OPENROUTER PROCESSING", "ping"}, err: io.EOF},
		{name: "bom", in: "\xEF\xBB\xBFdata: a\n\n", want: []Event{{Data: []byte("a")}}, err: io.EOF},
		{name: "bom only at start", in: "data: a\n\n\xEF\xBB\xBFdata: b\n\n", want: []Event{{Data: []byte("a")}}, err: io.EOF},
		{name: "unknown field", in: "foo: bar\ndata: a\n\n", want: []Event{{Data: []byte("a")}}, err: io.EOF},
		{name: "cut after data line", in: "data: a\n\ndata: b\n", want: []Event{{Data: []byte("a")}}, err: ErrIncomplete},
		{name: "cut inside line", in: "data: a\n\ndata: b", want: []Event{{Data: []byte("a")}}, err: ErrIncomplete},
		{name: "trailing comment is fine", in: "data: a\n\n: bye", want: []Event{{Data: []byte("a")}}, notes: nil, err: io.EOF},
		{name: "empty input", in: "", err: io.EOF},
		{name: "line too long", in: "data: a\n\ndata: 0123456789\n\n", cfg: Config{MaxLineSize: 8}, want: []Event{{Data: []byte("a")}}, err: ErrLineTooLong},
		{name: "line at limit", in: "data: 01\n\n", cfg: Config{MaxLineSize: 8}, want: []Event{{Data: []byte("01")}}, err: io.EOF},
		{name: "event too large", in: "data: 0123\ndata: 4567\n\n", cfg: Config{MaxEventSize: 8}, err: ErrEventTooLarge},
		{name: "event at limit", in: "data: 0123\ndata: 456\n\n", cfg: Config{MaxEventSize: 8}, want: []Event{{Data: []byte("0123\n456")}}, err: io.EOF},
		{name: "multibyte", in: "data: \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x8c\xb8 na\xc3\xafve\n\n", want: []Event{{Data: []byte("東京 🌸 naïve")}}, err: io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := reference([]byte(tc.in), tc.cfg)
			want := result{events: tc.want, comments: ref.comments, err: tc.err}
			if !equalResults(ref, want) {
				t.Fatalf("reference disagrees with the table:\n ref %s\nwant %s", ref, want)
			}
			if tc.notes != nil && fmt.Sprint(ref.comments) != fmt.Sprint(tc.notes) {
				t.Fatalf("comments = %q, want %q", ref.comments, tc.notes)
			}
			for _, rd := range readers([]byte(tc.in)) {
				got := decodeAll(t, rd.r, tc.cfg)
				got.retry, got.hasRetry = 0, false
				if !equalResults(got, want) {
					t.Fatalf("%s:\n got %s\nwant %s", rd.name, got, want)
				}
			}
		})
	}
}

func TestDecoderRetryAndLastID(t *testing.T) {
	d, err := NewDecoder(strings.NewReader("retry: 2500\nid: abc\n\nretry: x\ndata: a\n\n"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := d.Next()
	if err != nil || string(ev.Data) != "a" || string(ev.ID) != "abc" {
		t.Fatalf("got %q/%q, %v", ev.Data, ev.ID, err)
	}
	if r, ok := d.Retry(); !ok || r != 2500*time.Millisecond {
		t.Fatalf("retry = %v, %v", r, ok)
	}
	if d.LastEventID() != "abc" {
		t.Fatalf("last id = %q", d.LastEventID())
	}
	// Reset forgets the stream state.
	d.Reset(strings.NewReader("data: b\n\n"))
	ev, err = d.Next()
	if err != nil || string(ev.Data) != "b" || len(ev.ID) != 0 {
		t.Fatalf("after reset: %q/%q, %v", ev.Data, ev.ID, err)
	}
	if _, ok := d.Retry(); ok {
		t.Fatal("retry survived Reset")
	}
}

func TestDecoderReadError(t *testing.T) {
	boom := errors.New("connection reset")
	d, _ := NewDecoder(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom)), Config{})
	if ev, err := d.Next(); err != nil || string(ev.Data) != "a" {
		t.Fatalf("first: %q %v", ev.Data, err)
	}
	_, err := d.Next()
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "sse: ") {
		t.Fatalf("err = %v, want wrapped %v", err, boom)
	}
}

func TestDecoderNoProgress(t *testing.T) {
	d, _ := NewDecoder(emptyReader{}, Config{})
	if _, err := d.Next(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("err = %v", err)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestConfigValidate(t *testing.T) {
	if _, err := NewDecoder(strings.NewReader(""), Config{MaxLineSize: -1}); err == nil {
		t.Fatal("negative MaxLineSize accepted")
	}
	c := Config{}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxLineSize != DefaultMaxLineSize || c.MaxEventSize != DefaultMaxEventSize || c.BufferSize != DefaultBufferSize {
		t.Fatalf("defaults not filled: %+v", c)
	}
	if d := DefaultConfig(); d.MaxLineSize != DefaultMaxLineSize {
		t.Fatalf("DefaultConfig: %+v", d)
	}
}

// TestLongLineGrowsBuffer checks that lines longer than the initial buffer
// (but within the limit) decode whole, read in small pieces.
func TestLongLineGrowsBuffer(t *testing.T) {
	payload := strings.Repeat("\u00e9\u6771\U0001F338", 5000) // ~40 KB of multi-byte text
	in := "data: " + payload + "\n\n"
	got := decodeAll(t, &chunkReader{data: []byte(in), sizes: []int{1, 7, 300, 4093}}, Config{BufferSize: 16})
	if len(got.events) != 1 || string(got.events[0].Data) != payload || got.err != io.EOF {
		t.Fatalf("got %d events, err %v", len(got.events), got.err)
	}
}

type namedReader struct {
	name string
	r    io.Reader
}

// readers returns the input behind several read patterns.
func readers(in []byte) []namedReader {
	rs := []namedReader{
		{"whole", bytes.NewReader(in)},
		{"one byte", iotest.OneByteReader(bytes.NewReader(in))},
		{"data+EOF", iotest.DataErrReader(bytes.NewReader(in))},
		{"1,2,3,7", &chunkReader{data: in, sizes: []int{1, 2, 3, 7}}},
	}
	for at := 1; at < len(in); at++ {
		rs = append(rs, namedReader{fmt.Sprintf("split@%d", at), splitReader(in, at)})
	}
	return rs
}

// checkSplits decodes in whole and in every split pattern and compares all
// of them with the reference decoder.
func checkSplits(t *testing.T, in []byte, cfg Config, rng *rand.Rand) {
	t.Helper()
	want := reference(in, cfg)
	check := func(name string, rd io.Reader) {
		t.Helper()
		got := decodeAll(t, rd, cfg)
		if !equalResults(got, want) {
			t.Fatalf("%s on %q:\n got %s\nwant %s", name, in, got, want)
		}
	}
	check("whole", bytes.NewReader(in))
	check("one byte", iotest.OneByteReader(bytes.NewReader(in)))
	check("data+EOF", iotest.DataErrReader(bytes.NewReader(in)))
	// Split in two at every position for short inputs, at random ones for
	// long inputs (as nats' FuzzParser does).
	if len(in) <= 256 {
		for at := 1; at < len(in); at++ {
			check(fmt.Sprintf("split@%d", at), splitReader(in, at))
		}
	} else {
		for range 16 {
			at := 1 + rng.IntN(len(in)-1)
			check(fmt.Sprintf("split@%d", at), splitReader(in, at))
		}
	}
	sizes := make([]int, 8)
	for i := range sizes {
		sizes[i] = 1 + rng.IntN(13)
	}
	check(fmt.Sprintf("chunks%v", sizes), &chunkReader{data: in, sizes: sizes})
}

func TestSeedsSplitEverywhere(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range seeds {
		checkSplits(t, []byte(s), Config{}, rng)
		checkSplits(t, []byte(s), Config{MaxLineSize: 24, MaxEventSize: 40, BufferSize: 4}, rng)
	}
}

// FuzzDecoder checks that any input decodes the same whether it arrives
// whole, a byte at a time, split in two anywhere, or in random chunks, and
// that all of these agree with the reference decoder. Small limits in the
// second configuration make the size errors reachable.
func FuzzDecoder(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		rng := rand.New(rand.NewPCG(uint64(len(in)), 7))
		checkSplits(t, in, Config{}, rng)
		checkSplits(t, in, Config{MaxLineSize: 24, MaxEventSize: 40, BufferSize: 4}, rng)
	})
}

// cycleReader serves block over and over, as a long stream would arrive.
type cycleReader struct {
	block []byte
	off   int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := copy(p, c.block[c.off:])
	c.off = (c.off + n) % len(c.block)
	return n, nil
}

// BenchmarkDecoder measures one typical event (an OpenAI chunk of ~150-250
// bytes) per op, read through a 4 KiB buffer.
func BenchmarkDecoder(b *testing.B) {
	chunk := `{"id":"chatcmpl-BwoiPTGRbKkY5rncfaM0s9KtWrq5N","object":"chat.completion.chunk","created":1753357673,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}`
	cases := []struct{ name, event string }{
		{"lf", "data: " + chunk + "\n\n"},
		{"crlf", "data: " + chunk + "\r\n\r\n"},
		{"short", "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"},
		{"with-comment", ": OPENROUTER PROCESSING\n\ndata: " + chunk + "\n\n"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			block := bytes.Repeat([]byte(tc.event), 64)
			comments := 0
			d, err := NewDecoder(&cycleReader{block: block}, Config{OnComment: func([]byte) { comments++ }})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.event)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev, err := d.Next()
				if err != nil || len(ev.Data) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}
