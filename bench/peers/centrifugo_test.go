package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// The connection token is an HS256 JWT Centrifugo can check: its signature
// is the HMAC of its first two parts, its claims hold the channels.
func TestHS256JWT(t *testing.T) {
	tok, err := hs256JWT(map[string]any{"sub": "r", "channels": []string{"bench"}}, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	m := hmac.New(sha256.New, []byte("s3cret"))
	m.Write([]byte(parts[0] + "." + parts[1]))
	if sig, _ := base64.RawURLEncoding.DecodeString(parts[2]); !hmac.Equal(sig, m.Sum(nil)) {
		t.Fatal("bad signature")
	}
	var head struct{ Alg string }
	var claims struct {
		Sub      string
		Channels []string
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(h, &head) != nil || json.Unmarshal(c, &claims) != nil || head.Alg != "HS256" || claims.Sub != "r" || claims.Channels[0] != "bench" {
		t.Fatalf("head %s claims %s", h, c)
	}
}

// The config and the API bodies are JSON of the shape Centrifugo v6 takes;
// the payload carries the fields the readers parse.
func TestCentrifugoBodies(t *testing.T) {
	conf, err := centrifugoConfig(8123, "sec", "key")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		HTTPServer struct {
			Address string
			Port    int
		} `json:"http_server"`
		Client struct {
			Token struct {
				HMACSecretKey string `json:"hmac_secret_key"`
			}
		}
		HTTPAPI struct{ Key string }    `json:"http_api"`
		UniSSE  struct{ Enabled bool }  `json:"uni_sse"`
		Usage   struct{ Disabled bool } `json:"usage_stats"`
	}
	if err := json.Unmarshal(conf, &c); err != nil || c.HTTPServer.Address != "127.0.0.1" || c.HTTPServer.Port != 8123 ||
		c.Client.Token.HMACSecretKey != "sec" || c.HTTPAPI.Key != "key" || !c.UniSSE.Enabled || !c.Usage.Disabled {
		t.Fatalf("config %s: %+v %v", conf, c, err)
	}
	at := time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC)
	var batch struct {
		Commands []struct {
			Publish struct {
				Channel string
				Data    json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(batchBody(nil, 5, 3, at), &batch); err != nil || len(batch.Commands) != 3 {
		t.Fatalf("batch: %v", err)
	}
	for i, cmd := range batch.Commands {
		f := parseFrame(cmd.Publish.Data)
		if cmd.Publish.Channel != centrifugoChannel || f.Seq != uint64(5+i) || string(f.Type) != "token_delta" || !f.Time.Equal(at) {
			t.Fatalf("command %d: %s → %+v", i, cmd.Publish.Data, f)
		}
	}
	var pub struct {
		Channel string
		Data    map[string]any
	}
	if err := json.Unmarshal(publishBody(nil, 9, "run_completed", at), &pub); err != nil || pub.Data["type"] != "run_completed" || pub.Data["seq"] != 9.0 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
}

// fakeClock is a clock that moves only when told: Sleep advances it.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return nil
}

// The paced publisher sends token i at start + i·interval, stamped with its
// send time, and catches up after a slow API call instead of stretching
// the run; it stops at the first error.
func TestPublishPaced(t *testing.T) {
	cfg := fanConfig{Tokens: 30, Rate: 100} // 10 ms apart
	clk := &fakeClock{t: time.Unix(1000, 0)}
	start := clk.t
	var sends []time.Time
	call := func(_ context.Context, method string, body []byte) error {
		f := parseFrame(body)
		if method != "publish" || f.Seq != uint64(len(sends)+1) || !f.Time.Equal(clk.t) {
			return errors.New("bad call")
		}
		sends = append(sends, clk.t)
		if len(sends) == 5 {
			clk.t = clk.t.Add(45 * time.Millisecond) // a slow answer: tokens 6 to 9 are late
		}
		return nil
	}
	st, err := publishPaced(context.Background(), cfg, call, clk.Now, clk.Sleep)
	if err != nil || st.Sent != 30 || len(sends) != 30 || st.Lag != 0 {
		t.Fatalf("sent %+v (%d calls): %v", st, len(sends), err)
	}
	for i, at := range sends {
		want := start.Add(time.Duration(i) * 10 * time.Millisecond)
		if i >= 5 && i <= 8 {
			want = start.Add(85 * time.Millisecond) // back to back, as soon as the slow call returned
		}
		if !at.Equal(want) {
			t.Fatalf("token %d sent at +%v, want +%v", i+1, at.Sub(start), want.Sub(start))
		}
	}

	boom := errors.New("boom")
	st, err = publishPaced(context.Background(), cfg, func(context.Context, string, []byte) error { return boom }, time.Now, sleepCtx)
	if st.Sent != 0 || !errors.Is(err, boom) {
		t.Fatalf("error: %+v %v", st, err)
	}
	// A publisher held back to the end reports how late its last token was.
	clk = &fakeClock{t: time.Unix(1000, 0)}
	slow := func(context.Context, string, []byte) error { clk.t = clk.t.Add(15 * time.Millisecond); return nil }
	st, err = publishPaced(context.Background(), fanConfig{Tokens: 10, Rate: 100}, slow, clk.Now, clk.Sleep)
	if err != nil || st.Sent != 10 || st.Lag != 45*time.Millisecond {
		t.Fatalf("held back: %+v %v", st, err)
	}
}

// The full-speed publisher stops at FullMax tokens or after FullFor,
// whichever first, with batches of Batch (the last one short).
func TestPublishFull(t *testing.T) {
	var calls, tokens int
	count := func(_ context.Context, method string, body []byte) error {
		var b struct{ Commands []json.RawMessage }
		if method != "batch" || json.Unmarshal(body, &b) != nil {
			return errors.New("bad call")
		}
		calls++
		tokens += len(b.Commands)
		return nil
	}
	n, err := publishFull(context.Background(), fanConfig{FullMax: 120, FullFor: time.Minute, Batch: 50}, count)
	if err != nil || n != 120 || tokens != 120 || calls != 3 {
		t.Fatalf("by count: sent %d in %d calls (%d tokens): %v", n, calls, tokens, err)
	}
	slow := func(ctx context.Context, m string, b []byte) error {
		time.Sleep(10 * time.Millisecond)
		return count(ctx, m, b)
	}
	start := time.Now()
	n, err = publishFull(context.Background(), fanConfig{FullMax: 1 << 30, FullFor: 50 * time.Millisecond, Batch: 10}, slow)
	if err != nil || n == 0 || n > 100 || time.Since(start) > 2*time.Second {
		t.Fatalf("by time: sent %d in %v: %v", n, time.Since(start), err)
	}
}
