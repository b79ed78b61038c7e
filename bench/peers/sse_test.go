package main

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// parsed is an event as a test compares it.
type parsed struct {
	Type, ID, Data string
	HasID          bool
}

// parseAll reads every event of r and the error that ended the stream
// (nil for a clean io.EOF).
func parseAll(r io.Reader, bufSize, maxLine, maxEvent int) ([]parsed, error) {
	sr := newSSEReader(r, bufSize, maxLine, maxEvent)
	var out []parsed
	for range 100_000 { // bounded: an input cannot hold more events
		ev, err := sr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, parsed{Type: string(ev.Type), ID: string(ev.ID), Data: string(ev.Data), HasID: ev.ID != nil})
	}
	return out, errors.New("too many events")
}

// The framing QLC writes (gateway/sse.go), Centrifugo's uni_sse (a CRLF
// first, then data-only events) and the odd corners of the format.
func TestSSEReader(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []parsed
		err      error
	}{
		{"qlc", "id: 2\nevent: token_delta\ndata: {\"seq\":2}\n\n: ping\n\nevent: lagged\ndata: {\"next_seq\":3}\n\n",
			[]parsed{{Type: "token_delta", ID: "2", Data: `{"seq":2}`, HasID: true}, {Type: "lagged", Data: `{"next_seq":3}`}}, nil},
		{"uni_sse", "\r\ndata: {\"connect\":{}}\n\ndata: {}\n\n",
			[]parsed{{Type: "message", Data: `{"connect":{}}`}, {Type: "message", Data: `{}`}}, nil},
		{"crlf and multi-line data", "event: x\r\ndata: a\r\ndata:b\r\ndata\r\n\r\n",
			[]parsed{{Type: "x", Data: "a\nb\n"}}, nil},
		{"one space only is removed", "data:  two\n\n", []parsed{{Type: "message", Data: " two"}}, nil},
		{"no data: no event, and its type is forgotten", "event: a\nid: 1\n\ndata: d\n\n", []parsed{{Type: "message", Data: "d"}}, nil},
		{"unknown fields and retry ignored", "retry: 10\nfoo: bar\ndata: d\n\n", []parsed{{Type: "message", Data: "d"}}, nil},
		{"an id with NUL is ignored", "id: a\x00b\ndata: d\n\n", []parsed{{Type: "message", Data: "d"}}, nil},
		{"a lone CR stays in the value", "data: a\rb\n\n", []parsed{{Type: "message", Data: "a\rb"}}, nil},
		{"partial event at the end is dropped", "data: a\n\ndata: b\n", []parsed{{Type: "message", Data: "a"}}, nil},
		{"a line cut by the end", "data: a\n\ndata: b", []parsed{{Type: "message", Data: "a"}}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, buf := range []int{16, 4096} {
				got, err := parseAll(strings.NewReader(tc.in), buf, 1024, 1024)
				if !errors.Is(err, tc.err) {
					t.Fatalf("buffer %d: error %v, want %v", buf, err, tc.err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("buffer %d:\n got %+v\nwant %+v", buf, got, tc.want)
				}
			}
		})
	}
}

// The bounds hold whatever the read buffer: a line of exactly maxLine bytes
// passes (with LF or CRLF), one byte more is errLineTooLong; data adding up
// to more than maxEvent is errEventTooLarge; and the side buffer that
// assembles long lines never grows far past the bound.
func TestSSEReaderBounds(t *testing.T) {
	const maxLine = 100
	line := func(n int) string { return "data: " + strings.Repeat("x", n-len("data: ")) }
	for _, buf := range []int{16, 64, 4096} {
		for _, end := range []string{"\n", "\r\n"} {
			got, err := parseAll(strings.NewReader(line(maxLine)+end+end), buf, maxLine, 1<<20)
			if err != nil || len(got) != 1 || len(got[0].Data) != maxLine-6 {
				t.Fatalf("buffer %d, end %q: a line of the bound: %v %v", buf, end, got, err)
			}
			_, err = parseAll(strings.NewReader(line(maxLine+1)+end+end), buf, maxLine, 1<<20)
			if !errors.Is(err, errLineTooLong) {
				t.Fatalf("buffer %d, end %q: a line over the bound: %v", buf, end, err)
			}
		}
		// A line without end much longer than the bound: refused early.
		sr := newSSEReader(strings.NewReader(strings.Repeat("y", 10*maxLine)), buf, maxLine, 1<<20)
		if _, err := sr.Next(); !errors.Is(err, errLineTooLong) {
			t.Fatalf("buffer %d: endless line: %v", buf, err)
		}
		if cap(sr.long) > 2*(maxLine+2*buf)+64 {
			t.Fatalf("buffer %d: the side buffer grew to %d", buf, cap(sr.long))
		}
		_, err := parseAll(strings.NewReader("data: 12345\ndata: 12345\n\n"), buf, maxLine, 10)
		if !errors.Is(err, errEventTooLarge) {
			t.Fatalf("buffer %d: event over the bound: %v", buf, err)
		}
		got, err := parseAll(strings.NewReader("data: 12345\ndata: 1234\n\n"), buf, maxLine, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("buffer %d: event of the bound: %v %v", buf, got, err)
		}
	}
}

// FuzzSSEReader: whatever the input, the reader parses it the same read
// whole, split in two at every byte (as nats' FuzzParser does: events cut
// across reads), one byte at a time, and through a buffer larger than the
// line bound; and no event is larger than the bound.
func FuzzSSEReader(f *testing.F) {
	f.Add("id: 2\nevent: token_delta\ndata: {\"seq\":2,\"type\":\"token_delta\",\"time\":\"2026-12-06T16:56:09.123456789Z\"}\n\n: ping\n\n")
	f.Add("\r\ndata: {\"connect\":{\"client\":\"c\"}}\n\ndata: {\"channel\":\"bench\",\"pub\":{\"data\":{\"seq\":1}}}\n\n")
	f.Add("data: a\r\ndata\r\n\r\nevent: e\ndata: " + strings.Repeat("z", 70) + "\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		const buf, maxLine, maxEvent = 16, 64, 80
		want, wantErr := parseAll(strings.NewReader(s), buf, maxLine, maxEvent)
		for _, e := range want {
			if len(e.Data) > maxEvent {
				t.Fatalf("event of %d bytes, over the bound", len(e.Data))
			}
		}
		check := func(how string, r io.Reader) {
			got, err := parseAll(r, buf, maxLine, maxEvent)
			if !errors.Is(err, wantErr) {
				t.Fatalf("%s: error %v, whole: %v", how, err, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s:\n got %+v\nwant %+v", how, got, want)
			}
		}
		check("byte by byte", iotest.OneByteReader(strings.NewReader(s)))
		big, err := parseAll(strings.NewReader(s), 4096, maxLine, maxEvent)
		if !errors.Is(err, wantErr) || !reflect.DeepEqual(big, want) {
			t.Fatalf("a 4 KiB buffer: %+v %v; 16 bytes: %+v %v", big, err, want, wantErr)
		}
		for i := 1; i < len(s) && i < 300; i++ {
			check("split", io.MultiReader(strings.NewReader(s[:i]), strings.NewReader(s[i:])))
		}
	})
}
