package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ChatStreamRequest is a streamed POST /v1/chat/completions. It speaks to
// QLC (Model "qlc-<profile>") or to any OpenAI-compatible server.
type ChatStreamRequest struct {
	Model     string        `json:"model"`
	Messages  []ChatMessage `json:"messages"`
	MaxTokens *int          `json:"max_tokens,omitempty"`
	Seed      *int64        `json:"seed,omitempty"`
	// IncludeUsage asks for the usage chunk at the end
	// (stream_options.include_usage).
	IncludeUsage bool `json:"-"`
}

// ChatChunk is one event of a streamed chat completion.
type ChatChunk struct {
	// Received is when the chunk's last byte was read, before its JSON was
	// parsed (see Event.Received).
	Received time.Time
	// Role, Content and Reasoning are the first choice's delta: Reasoning
	// is "reasoning_content" (QLC, DeepSeek, vLLM) or "reasoning".
	Role, Content, Reasoning string
	// FinishReason is the first choice's finish_reason, when set.
	FinishReason string
	// Usage is the chunk's usage, when it has one (the last chunk with
	// include_usage).
	Usage *Usage
	// Err is set for an error chunk ({"error":{…}} after HTTP 200, or an
	// SSE "event: error"): the stream failed.
	Err *APIError
	// Done marks "data: [DONE]", the end of the stream; it carries nothing.
	Done bool
}

// ErrBadChunk is returned for a chunk whose data is neither a chunk's JSON,
// an error, nor [DONE].
var ErrBadChunk = errors.New("client: bad chat chunk")

// ParseChatChunk parses one streamed chat completion event: its SSE event
// type (usually "") and data.
func ParseChatChunk(event string, data []byte) (ChatChunk, error) {
	data = bytes.TrimSpace(data)
	if string(data) == "[DONE]" {
		return ChatChunk{Done: true}, nil
	}
	var raw struct {
		Choices []struct {
			Delta struct {
				Role             *string `json:"role"`
				Content          *string `json:"content"`
				ReasoningContent *string `json:"reasoning_content"`
				Reasoning        *string `json:"reasoning"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *Usage `json:"usage"`
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		if event == "error" {
			return ChatChunk{Err: &APIError{Status: http.StatusOK, Message: string(data), Code: "stream_error"}}, nil
		}
		return ChatChunk{}, fmt.Errorf("%w: %v", ErrBadChunk, err)
	}
	var c ChatChunk
	if raw.Error != nil || event == "error" {
		e := &APIError{Status: http.StatusOK, Code: "stream_error"}
		if raw.Error != nil {
			e.Message, e.Type = raw.Error.Message, raw.Error.Type
			var code string
			if json.Unmarshal(raw.Error.Code, &code) == nil && code != "" {
				e.Code = code
			} else if len(raw.Error.Code) > 0 && string(raw.Error.Code) != "null" {
				e.Code = string(raw.Error.Code) // a number, as some servers send
			}
		}
		c.Err = e
		return c, nil
	}
	c.Usage = raw.Usage
	if len(raw.Choices) > 0 {
		ch := raw.Choices[0]
		if ch.Delta.Role != nil {
			c.Role = *ch.Delta.Role
		}
		if ch.Delta.Content != nil {
			c.Content = *ch.Delta.Content
		}
		if ch.Delta.ReasoningContent != nil {
			c.Reasoning = *ch.Delta.ReasoningContent
		} else if ch.Delta.Reasoning != nil {
			c.Reasoning = *ch.Delta.Reasoning
		}
		if ch.FinishReason != nil {
			c.FinishReason = *ch.FinishReason
		}
	}
	return c, nil
}

// ChatStream reads a streamed chat completion, one chunk at a time. It
// does not resume: an OpenAI stream has no cursor (QLC cancels the run
// when its connection closes). Used by one goroutine.
type ChatStream struct {
	body io.ReadCloser
	rd   *sseReader
	// RunID is QLC's run id (X-QLC-Run-Id; "" from other servers).
	RunID string
	done  bool
}

// ChatStream starts a streamed chat completion. A refusal (non-2xx) is an
// *APIError.
func (c *Client) ChatStream(ctx context.Context, req ChatStreamRequest) (*ChatStream, error) {
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	body := struct {
		ChatStreamRequest
		Stream        bool           `json:"stream"`
		StreamOptions *streamOptions `json:"stream_options,omitempty"`
	}{ChatStreamRequest: req, Stream: true}
	if req.IncludeUsage {
		body.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	resp, err := c.postStream(ctx, "/v1/chat/completions", body)
	if err != nil {
		return nil, err
	}
	return &ChatStream{body: resp.Body, rd: newSSEReader(resp.Body), RunID: resp.Header.Get("X-QLC-Run-Id")}, nil
}

// Next returns the next chunk. After [DONE] (returned once, with Done)
// it returns io.EOF; a stream that ends without [DONE] returns
// io.ErrUnexpectedEOF (mid-event) or io.EOF; a chunk that cannot be read
// wraps ErrBadChunk.
func (s *ChatStream) Next() (ChatChunk, error) {
	if s.done {
		return ChatChunk{}, io.EOF
	}
	f, err := s.rd.nextFrame()
	if err != nil {
		s.Close()
		return ChatChunk{}, err
	}
	c, err := ParseChatChunk(f.Event, f.Data)
	if err != nil {
		return ChatChunk{}, err
	}
	c.Received = f.Received
	if c.Done {
		s.Close()
	}
	return c, nil
}

// Close releases the connection (QLC then cancels the run if it still
// runs).
func (s *ChatStream) Close() error {
	s.done = true
	return s.body.Close()
}
