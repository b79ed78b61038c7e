package openai

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
)

// Mock is a zero-latency OpenAI-compatible /chat/completions endpoint for
// benchmarks and tests that want a real HTTP upstream (a socket, chunked
// framing, connection reuse) without a model behind it: every request is
// answered at once with a role chunk, Tokens content chunks (each flushed,
// as a streaming server sends them), a finish chunk, a usage chunk and
// [DONE], in OpenAI's own wire format. Its handler never blocks on anything
// but the connection. Serve it with httptest.NewServer(m) and set the
// server's Config.ConnState to m.ConnState to count connections.
type Mock struct {
	// Tokens is how many content chunks each answer has; 0 means 1.
	Tokens int

	requests atomic.Int64
	conns    atomic.Int64
}

// The chunks follow OpenAI's transcript (testdata/transcripts/openai.sse).
const (
	mockHead   = `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1761004800,"model":"mock","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":{`
	mockRole   = mockHead + `"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	mockFinish = mockHead + `},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n"
)

// ServeHTTP answers one chat completion request.
func (m *Mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	_, _ = io.Copy(io.Discard, r.Body) // a server reads the whole request first
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	f, _ := w.(http.Flusher)
	flush := func() {
		if f != nil {
			f.Flush()
		}
	}
	n := max(m.Tokens, 1)
	b := make([]byte, 0, 512)
	b = append(b, mockRole...)
	for i := range n {
		b = append(b, mockHead...)
		b = append(b, `"content":" t`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"...)
		if _, err := w.Write(b); err != nil {
			return
		}
		flush()
		b = b[:0]
	}
	b = append(b, mockFinish...)
	b = append(b, `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1761004800,"model":"mock","system_fingerprint":"fp_mock","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(20+n), 10)
	b = append(b, "}}\n\ndata: [DONE]\n\n"...)
	_, _ = w.Write(b)
}

// ConnState counts new connections; set it as the server's ConnState.
func (m *Mock) ConnState(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		m.conns.Add(1)
	}
}

// Requests is how many requests the mock has answered (or is answering).
func (m *Mock) Requests() int64 { return m.requests.Load() }

// Conns is how many connections were opened to the mock (with ConnState set).
func (m *Mock) Conns() int64 { return m.conns.Load() }
