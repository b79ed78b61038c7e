package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// referenceChunk is the meaning parseChunk must have, written with
// encoding/json: decode into generic values (numbers kept as text), then
// pick the members out, last duplicate winning as in a map.
func referenceChunk(data []byte) (chunkInfo, error) {
	if !json.Valid(data) {
		return chunkInfo{}, errJSONSyntax
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return chunkInfo{}, err
	}
	var out chunkInfo
	if v == nil {
		return out, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return chunkInfo{}, errJSONType
	}
	text := func(v any, dst *string) bool {
		switch t := v.(type) {
		case nil:
			return true
		case string:
			*dst = t
			return true
		}
		return false
	}
	if c := m["choices"]; c != nil {
		arr, ok := c.([]any)
		if !ok {
			return chunkInfo{}, errJSONType
		}
		out.choices = len(arr)
		if len(arr) > 0 && arr[0] != nil {
			ch, ok := arr[0].(map[string]any)
			if !ok {
				return chunkInfo{}, errJSONType
			}
			if d := ch["delta"]; d != nil {
				dm, ok := d.(map[string]any)
				if !ok || !text(dm["content"], &out.content) {
					return chunkInfo{}, errJSONType
				}
			}
			if !text(ch["finish_reason"], &out.finishReason) {
				return chunkInfo{}, errJSONType
			}
		}
	}
	if u := m["usage"]; u != nil {
		um, ok := u.(map[string]any)
		if !ok {
			return chunkInfo{}, errJSONType
		}
		out.hasUsage = true
		for key, dst := range map[string]*int64{
			"prompt_tokens":     &out.usage.PromptTokens,
			"completion_tokens": &out.usage.CompletionTokens,
			"total_tokens":      &out.usage.TotalTokens,
		} {
			if n := um[key]; n != nil {
				num, ok := n.(json.Number)
				if !ok {
					return chunkInfo{}, errJSONType
				}
				i, err := strconv.ParseInt(string(num), 10, 64)
				if err != nil {
					return chunkInfo{}, errJSONType
				}
				*dst = i
			}
		}
	}
	switch e := m["error"].(type) {
	case map[string]any:
		out.errField = len(e) > 0
	case string:
		out.errField = e != ""
	}
	if o, ok := m["object"].(string); ok && o == "error" {
		out.objectError = true
	}
	return out, nil
}

var chunkSeeds = []string{
	`{"id":"chatcmpl-BwoiP","object":"chat.completion.chunk","created":1753357673,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-BwoiP","object":"chat.completion.chunk","created":1753357673,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Caf\u00e9 \u2615 \ud83c\udf38"},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"x","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`,
	`{"id":"x","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`,
	`{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":14,"completion_tokens":12,"total_tokens":26,"cost":0.0000093,"is_byok":false}}`,
	`{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"\u6771\u4eac"}}],"created":1,"id":"chatcmpl-Q","model":"m","system_fingerprint":"b5140","object":"chat.completion.chunk"}`,
	`{"error": {"message": "The server had an error", "type": "server_error"}}`,
	`{"object":"error","message":"bad","type":"BadRequestError","param":null,"code":400}`,
	`{"id":"gen-2","error":{"code":"server_error","message":"Provider disconnected"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`,
	`{"choices":[{"delta":{"content":"x \u003c y \u0026\u0026 z"}}]}`,
	`{"choices":[{"delta":{"content":"a"}},{"delta":{"content":5}}]}`,
	`{"choices":5,"choices":[{"delta":{"content":"last wins"}}]}`,
	`{"usage":{"prompt_tokens":1.5}}`,
	`{"usage":{"prompt_tokens":-9223372036854775808,"total_tokens":9223372036854775807}}`,
	`{"usage":{"prompt_tokens":9223372036854775808}}`,
	`{"choices":[{"delta":{"content":"\ud800 lone \udc00 \ud83d\u0041"}}]}`,
	"{\"choices\":[{\"delta\":{\"content\":\"bad \xff\xfe utf8 \xe6\x9d\"}}]}",
	`{"ch\u006fices":[{"delta":{"content":"escaped key"}}]}`,
	`null`, `[]`, `"x"`, `{}`, ``, `{"a":1}x`, `{"a":01}`, `{"a":[1,]}`, `{"a":"\x"}`,
	`data: [DONE]`, `<html>502 Bad Gateway</html>`,
}

func TestParseChunkSeeds(t *testing.T) {
	for _, s := range chunkSeeds {
		compareChunk(t, []byte(s))
	}
	// Spot checks of meaning, beyond agreement with the reference.
	var ci chunkInfo
	if err := parseChunk([]byte(chunkSeeds[1]), &ci); err != nil || ci.content != "Café ☕ 🌸" || ci.choices != 1 {
		t.Fatalf("content: %+v %v", ci, err)
	}
	if err := parseChunk([]byte(chunkSeeds[3]), &ci); err != nil || !ci.hasUsage ||
		ci.usage != (stagework.Usage{PromptTokens: 19, CompletionTokens: 10, TotalTokens: 29}) || ci.choices != 0 {
		t.Fatalf("usage: %+v %v", ci, err)
	}
	if err := parseChunk([]byte(chunkSeeds[8]), &ci); err != nil || !ci.hasError() || ci.finishReason != "error" {
		t.Fatalf("error: %+v %v", ci, err)
	}
	if err := parseChunk([]byte(`<html>`), &ci); !errors.Is(err, errJSONSyntax) {
		t.Fatalf("garbage: %v", err)
	}
}

func compareChunk(t *testing.T, data []byte) {
	t.Helper()
	want, werr := referenceChunk(data)
	var got chunkInfo
	gerr := parseChunk(data, &got)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%q: error mismatch: parseChunk %v, reference %v", data, gerr, werr)
	}
	if werr == nil && got != want {
		t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
	}
}

// FuzzParseChunk holds the hand-written chunk scanner to encoding/json's
// reading of the same bytes (raft's quick_test idea: fast code checked
// against a simple reference).
func FuzzParseChunk(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		compareChunk(t, data)
	})
}

func TestParseChunkDepth(t *testing.T) {
	for _, n := range []int{maxJSONDepth - 1, maxJSONDepth} {
		deep := `{"x":` + string(bytes.Repeat([]byte("["), n)) + string(bytes.Repeat([]byte("]"), n)) + `}`
		compareChunk(t, []byte(deep))
	}
}

// BenchmarkParseChunk compares the scanner with encoding/json on a typical
// content chunk.
func BenchmarkParseChunk(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-BwoiPTGRbKkY5rncfaM0s9KtWrq5N","object":"chat.completion.chunk","created":1753357673,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	escaped := []byte(chunkSeeds[1])
	b.Run("scanner-escaped", func(b *testing.B) {
		b.SetBytes(int64(len(escaped)))
		b.ReportAllocs()
		var ci chunkInfo
		for i := 0; i < b.N; i++ {
			if err := parseChunk(escaped, &ci); err != nil || ci.content == "" {
				b.Fatal(err)
			}
		}
	})
	b.Run("scanner", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		var ci chunkInfo
		for i := 0; i < b.N; i++ {
			if err := parseChunk(data, &ci); err != nil || ci.content == "" {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		type delta struct {
			Content *string `json:"content"`
		}
		type choice struct {
			Delta        delta   `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		}
		var c struct {
			Choices []choice         `json:"choices"`
			Usage   *stagework.Usage `json:"usage"`
			Error   json.RawMessage  `json:"error"`
		}
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			c.Choices, c.Usage, c.Error = c.Choices[:0], nil, nil
			if err := json.Unmarshal(data, &c); err != nil || len(c.Choices) == 0 {
				b.Fatal(err)
			}
		}
	})
}
