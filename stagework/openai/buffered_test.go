package openai

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/sse"
)

// pieceReader returns its input in pieces of the sizes next gives, and
// fails the test if it is read while ready is set.
type pieceReader struct {
	t     *testing.T
	data  []byte
	next  func() int
	ready bool
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if r.ready {
		r.t.Fatal("Recv read from the connection after Buffered said it would not")
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(r.next(), len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func (r *pieceReader) Close() error { return nil }

// TestBufferedNeverWaits replays every transcript in pieces and asks
// Buffered before each Recv: a Recv after Buffered said true must not read
// from the connection, and asking must not change what the stream yields.
// Read whole, most chunks are found buffered (what batching relies on).
func TestBufferedNeverWaits(t *testing.T) {
	p := newProvider(t, "http://127.0.0.1:1/v1")
	for _, tc := range transcriptCases {
		body, err := os.ReadFile(filepath.Join("testdata", "transcripts", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, pat := range chunkPatterns {
			t.Run(tc.file+"/"+pat.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(len(body)), 7))
				r := &pieceReader{t: t, data: body, next: pat.next(rng)}
				sctx, cancel := context.WithCancelCause(context.Background())
				s := &stream{p: p, ctx: context.Background(), sctx: sctx, cancel: cancel, model: "m", start: time.Now(), body: r}
				s.dec, _ = sse.NewDecoder(r, p.cfg.SSE)
				defer s.Close()
				var text strings.Builder
				n, buffered := 0, 0
				var end error
				for {
					r.ready = s.Buffered()
					if r.ready {
						buffered++
					}
					ch, err := s.Recv()
					r.ready = false
					if err != nil {
						end = err
						break
					}
					text.WriteString(ch.Text)
					n++
				}
				if text.String() != tc.text || n != tc.chunks {
					t.Errorf("got %q in %d chunks, want %q in %d", text.String(), n, tc.text, tc.chunks)
				}
				if tc.err {
					mustKind(t, end, tc.kind)
				} else if end != io.EOF {
					t.Fatalf("end: %v, want io.EOF", end)
				}
				if u, ok := s.Usage(); (tc.usage != nil) != ok || (ok && u != *tc.usage) {
					t.Errorf("usage = %+v/%v, want %+v", u, ok, tc.usage)
				}
				if pat.name == "whole" && buffered < tc.chunks-1 {
					t.Errorf("read whole, Buffered was true before %d of %d chunks; want at least %d", buffered, tc.chunks, tc.chunks-1)
				}
			})
		}
	}
}

var _ stagework.Buffered = (*stream)(nil)
