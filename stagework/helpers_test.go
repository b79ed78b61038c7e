package stagework

import (
	"context"
	"io"
	"strings"
)

// tokens is a provider for tests of what wraps providers: each request
// streams Tokens chunks "t0 ", "t1 ", … and ends with io.EOF, or fails with
// Err before the stream starts when Err is set. (The simulated model lives
// in stagework/sim, which imports this package.)
type tokens struct {
	Tokens int
	Err    error
}

func (p tokens) Name() string { return "tokens" }

func (p tokens) Stream(ctx context.Context, req Request) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.Err != nil {
		return nil, p.Err
	}
	return &tokenStream{ctx: ctx, left: p.Tokens}, nil
}

type tokenStream struct {
	ctx    context.Context
	i      int
	left   int
	closed bool
}

func (s *tokenStream) Recv() (Chunk, error) {
	if err := s.ctx.Err(); err != nil {
		return Chunk{}, err
	}
	if s.closed || s.left == 0 {
		return Chunk{}, io.EOF
	}
	s.left--
	s.i++
	return Chunk{Text: "t" + string(rune('0'+s.i-1)) + " ", Tokens: 1}, nil
}

func (s *tokenStream) Usage() (Usage, bool) {
	return Usage{CompletionTokens: int64(s.i), TotalTokens: int64(s.i)}, s.left == 0
}

func (s *tokenStream) Close() error { s.closed = true; return nil }

// drain streams req to the end and returns the text, the token count and the
// error that ended it (io.EOF on success).
func drain(p Provider, ctx context.Context, req Request) (string, int, error) {
	st, err := p.Stream(ctx, req)
	if err != nil {
		return "", 0, err
	}
	defer st.Close()
	var b strings.Builder
	n := 0
	for {
		c, err := st.Recv()
		if err != nil {
			return b.String(), n, err
		}
		b.WriteString(c.Text)
		n += c.Tokens
	}
}
