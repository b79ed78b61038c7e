package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// FuzzDecodeRunRequest: any body either decodes into a request or yields a
// clear 4xx error; nothing panics.
func FuzzDecodeRunRequest(f *testing.F) {
	for _, s := range []string{
		`{"query":"What is Raft?","profile":"fast"}`, `{"query":"x","seed":-1,"max_tokens":5}`,
		`{"query":"x"} {}`, `{"query":5}`, `[]`, `null`, `{"query":"\ud800"}`, `{"qu`, "", "  ", `{"query":"a","extra":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req createRunRequest
		if e := decodeBody(body, &req, true); e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" || e.Type != "invalid_request_error" {
				t.Fatalf("unclear error for %q: %+v", body, e)
			}
			return
		}
		// Accepted: the body was one JSON object with known fields.
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", body, err)
		}
	})
}

// FuzzChatRequest: any chat completion body is either a valid run request
// or a clear error naming what is wrong.
func FuzzChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"qlc-instant","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"qlc-instant","messages":[{"role":"user","content":null}]}`,
		`{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}],"max_tokens":0}`,
		`{"model":"gpt-4","messages":[]}`, `{"model":"qlc-","messages":[{"role":"user","content":"x"}],"n":3}`,
	} {
		f.Add([]byte(s))
	}
	stages, err := stagework.ParseConfig([]byte(testProfiles))
	if err != nil {
		f.Fatal(err)
	}
	providers, _ := actors.BuildProviders(stages, nil)
	cfg := actors.DefaultConfig()
	cfg.Stages, cfg.Providers = stages, providers
	engine, err := actors.NewEngine(cfg)
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(Config{Engine: engine, MaxQueryBytes: 1000})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req chatRequest
		if e := decodeBody(body, &req, false); e != nil {
			if e.Status != 400 || e.Code == "" {
				t.Fatalf("unclear decode error: %+v", e)
			}
			return
		}
		p, e := s.parseChat(&req)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" {
				t.Fatalf("unclear error: %+v", e)
			}
			return
		}
		if strings.TrimSpace(p.query) == "" || len(p.query) > 1000 || p.profile == "" {
			t.Fatalf("accepted a request with no usable question: %+v", p)
		}
		if _, err := stages.Profile(p.profile); err != nil {
			t.Fatalf("accepted an unknown profile %q", p.profile)
		}
	})
}

// FuzzEventJSON: every event the gateway writes is valid JSON whose text
// fields decode to the event's text (invalid UTF-8 becomes U+FFFD).
func FuzzEventJSON(f *testing.F) {
	for _, s := range []string{"hello", "", "\"quote\" \\ back\n\t\r\x00\x1f", "日本語 🎉", "\u2028\u2029", "\xff\xfe broken \xe6\x97", "</script>"} {
		f.Add(s, "second")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		evs := []*messages.RunEvent{
			{Seq: 1, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 1, Text: a, Tokens: 1}}},
			{Seq: 2, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 1, Text: b, Tokens: 2}}},
			{Seq: 3, Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Reason: a + b, Code: "x"}}},
		}
		for _, sp := range coalesce(nil, evs) {
			out := appendEventJSON(nil, evs, sp)
			var d map[string]any
			if err := json.Unmarshal(out, &d); err != nil {
				t.Fatalf("invalid JSON %q: %v", out, err)
			}
			// Each delta is sanitised on its own, so a reader sees the same
			// text whether or not its deltas were coalesced.
			want := ""
			for _, ev := range evs[sp.lo:sp.hi] {
				if td := ev.GetTokenDelta(); td != nil {
					want += replaceInvalid(td.Text)
				} else {
					want = replaceInvalid(ev.GetRunFailed().Reason)
				}
			}
			got, _ := d["text"].(string)
			if got == "" {
				got, _ = d["reason"].(string)
			}
			if got != want {
				t.Fatalf("text %q came back as %q", want, got)
			}
		}
	})
}

// replaceInvalid turns each invalid byte into U+FFFD, as encoding/json does.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += n
	}
	return b.String()
}
