package client

import "context"

// ChatMessage is one message of an OpenAI chat completion.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ReasoningContent is the earlier steps' text of a "-thinking" model.
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// ChatRequest is a non-streamed POST /v1/chat/completions; Model is
// "qlc-<profile>" or "qlc-<profile>-thinking".
type ChatRequest struct {
	Model     string        `json:"model"`
	Messages  []ChatMessage `json:"messages"`
	MaxTokens *int          `json:"max_tokens,omitempty"`
	Seed      *int64        `json:"seed,omitempty"`
}

// ChatCompletion is the answer: the run's answer as the first choice's
// content, and the run's whole usage.
type ChatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int         `json:"index"`
		Message      ChatMessage `json:"message"`
		FinishReason string      `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage `json:"usage,omitempty"`
}

// Chat runs a non-streamed chat completion on the OpenAI-compatible
// endpoint (for streaming, use an OpenAI SDK, or CreateRun and Events).
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatCompletion, error) {
	var out ChatCompletion
	if err := c.do(ctx, "POST", "/v1/chat/completions", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Models lists the OpenAI model names (GET /v1/models).
func (c *Client) Models(ctx context.Context) ([]string, error) {
	var out struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := c.do(ctx, "GET", "/v1/models", nil, &out); err != nil {
		return nil, err
	}
	ids := make([]string, len(out.Data))
	for i, m := range out.Data {
		ids[i] = m.ID
	}
	return ids, nil
}
