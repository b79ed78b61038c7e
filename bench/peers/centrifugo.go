package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// centrifugoChannel is the one channel every reader is subscribed to.
const centrifugoChannel = "bench"

// centrifugoTarget starts Centrifugo servers (memory engine, uni_sse) for
// fan-out rounds; the benchmark is their publisher.
type centrifugoTarget struct {
	bin  string // the centrifugo binary (go install …/centrifugo/v6@v6.9.1)
	work string
	seq  int
}

func (t *centrifugoTarget) Name() string { return "Centrifugo" }

// centrifugoServer is a running Centrifugo and its publisher's settings.
type centrifugoServer struct {
	proc   *child
	dir    string
	base   string
	apiKey string
	token  string // connection JWT with the "channels" claim
	cfg    fanConfig
	client *http.Client // the publisher's: one keep-alive connection
	sent   int          // tokens Drive published
}

// randomSecret returns n random bytes, base64url: a key made at start and
// written only to the server's 0600 config file in a private folder.
func randomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// centrifugoConfig is the server's configuration (Centrifugo v6 layout):
// loopback only, the memory engine, the HTTP API with apiKey, uni_sse on,
// HMAC connection tokens. Usage stats are off: they would call out to the
// internet. The client queue stays at its default (1 MiB; a reader that
// falls further behind is disconnected with 3008 "slow").
func centrifugoConfig(port int, hmacSecret, apiKey string) ([]byte, error) {
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": hmacSecret},
			"allowed_origins": []string{},
		},
		"http_api":    map[string]any{"key": apiKey},
		"uni_sse":     map[string]any{"enabled": true},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
		"log":         map[string]any{"level": "warn"},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// hs256JWT signs claims as a JWT with HMAC-SHA256.
func hs256JWT(claims map[string]any, secret string) (string, error) {
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	msg := head + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return msg + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// freePort asks the kernel for a free loopback port. Centrifugo cannot
// listen on port 0 and say which port it got (it takes 0 as "default,
// 8000"), so the port is picked here, with the race that implies: Start
// retries when the server exits at start.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (t *centrifugoTarget) Start(ctx context.Context, cfg fanConfig) (fanServer, error) {
	var errs []error
	for range 3 {
		t.seq++
		s, err := t.start(ctx, cfg)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (t *centrifugoTarget) start(ctx context.Context, cfg fanConfig) (*centrifugoServer, error) {
	dir, err := os.MkdirTemp(t.work, fmt.Sprintf("centrifugo-%d-*", t.seq))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	secret, apiKey := randomSecret(32), randomSecret(32)
	conf, err := centrifugoConfig(port, secret, apiKey)
	if err != nil {
		return nil, err
	}
	cf := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cf, conf, 0o600); err != nil {
		return nil, err
	}
	token, err := hs256JWT(map[string]any{"sub": "bench-reader", "channels": []string{centrifugoChannel},
		"exp": time.Now().Add(time.Hour).Unix()}, secret)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "centrifugo.log")
	p, err := startChild("centrifugo", t.bin, []string{"-c", cf}, os.Environ(), logPath)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	s := &centrifugoServer{proc: p, dir: dir, base: "http://127.0.0.1:" + strconv.Itoa(port), apiKey: apiKey,
		token: token, cfg: cfg, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get(s.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && !p.exited() {
				return s, nil
			}
		}
		if p.exited() || time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("benchpeers: centrifugo did not come up on port %d (log: %s)", port, logPath)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			s.Close()
			return nil, err
		}
	}
}

func (s *centrifugoServer) PID() int { return s.proc.pid() }
func (s *centrifugoServer) Expected() (uint64, uint64) {
	return uint64(s.sent), uint64(max(s.sent-s.cfg.Warm, 0))
}
func (s *centrifugoServer) Protocol() protocol            { return protoCentrifugo }
func (s *centrifugoServer) WarmSeq() uint64               { return uint64(max(s.cfg.Warm, 0)) }
func (s *centrifugoServer) Prepare(context.Context) error { return nil }

// Close stops the server; its folder (config, log) goes with the run's
// work folder.
func (s *centrifugoServer) Close()                      { s.proc.stop(15 * time.Second) }
func (s *centrifugoServer) apiURL(method string) string { return s.base + "/api/" + method }
func (s *centrifugoServer) connectParam() string        { return `{"token":"` + s.token + `"}` }
func (s *centrifugoServer) readerURL() string {
	return s.base + "/connection/uni_sse?cf_connect=" + url.QueryEscape(s.connectParam())
}
func (s *centrifugoServer) ReaderRequest(int) (*http.Request, error) {
	return http.NewRequest(http.MethodGet, s.readerURL(), nil)
}

// appendPayload writes the payload of token seq, stamped with sent: the
// fields of QLC's token_delta event, so that both targets' readers parse
// the same JSON. typ is "token_delta" or, for the end, "run_completed".
func appendPayload(b []byte, seq int, typ string, sent time.Time) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"type":"`...)
	b = append(b, typ...)
	b = append(b, `","time":"`...)
	b = sent.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","stage":"curator","text":" tok`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `","tokens":1}`...)
	return b
}

// call posts one API request and checks its answer: HTTP 200 and no
// "error" in it (Centrifugo answers API errors with 200 and an error
// object, in batches one per command).
func (s *centrifugoServer) call(ctx context.Context, method string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL(method), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", s.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || bytes.Contains(out, []byte(`"error"`)) {
		return fmt.Errorf("benchpeers: centrifugo /api/%s: HTTP %d: %.300s", method, resp.StatusCode, out)
	}
	return nil
}

// publishBody is one /api/publish request.
func publishBody(b []byte, seq int, typ string, sent time.Time) []byte {
	b = append(b, `{"channel":"`+centrifugoChannel+`","data":`...)
	b = appendPayload(b, seq, typ, sent)
	return append(b, '}')
}

// batchBody is one /api/batch request of n publications from seq first.
func batchBody(b []byte, first, n int, sent time.Time) []byte {
	b = append(b, `{"commands":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"publish":`...)
		b = publishBody(b, first+i, "token_delta", sent)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// Drive publishes the tokens, then the end.
func (s *centrifugoServer) Drive(ctx context.Context) (sourceStats, error) {
	var st sourceStats
	var err error
	if s.cfg.Mode == modeFull {
		st.Sent, err = publishFull(ctx, s.cfg, s.call)
	} else {
		st, err = publishPaced(ctx, s.cfg, s.call, time.Now, sleepCtx)
	}
	s.sent = st.Sent
	// The end goes out even after an error, so the readers stop.
	endErr := s.call(context.WithoutCancel(ctx), "publish", publishBody(nil, st.Sent+1, "run_completed", time.Now()))
	return st, errors.Join(err, endErr)
}

// apiCall is one call to the server's API (centrifugoServer.call).
type apiCall func(ctx context.Context, method string, body []byte) error

// publishPaced publishes cfg.Tokens tokens, one /api/publish each, token i
// (from 0) due at start + i·interval: a token is sent when due, or at once
// when the publisher is late (the API answered slowly); so the publisher
// catches up instead of stretching the run, as QLC's simulator does.
// Each carries the time it was sent. Stops at the first error or when ctx
// ends; returns how many were sent, and how late the last one went out.
//
// now and sleep are the clock (time.Now and sleepCtx; a test's fake).
func publishPaced(ctx context.Context, cfg fanConfig, call apiCall, now func() time.Time, sleep func(context.Context, time.Duration) error) (sourceStats, error) {
	iv := cfg.interval()
	start := now()
	var buf []byte
	var st sourceStats
	for i := range cfg.Tokens {
		due := start.Add(time.Duration(i) * iv)
		if wait := due.Sub(now()); wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return st, err
			}
		}
		at := now()
		st.Lag = at.Sub(due)
		buf = publishBody(buf[:0], i+1, "token_delta", at)
		if err := call(ctx, "publish", buf); err != nil {
			return st, err
		}
		st.Sent++
	}
	return st, nil
}

// publishFull publishes batches of cfg.Batch tokens back to back (the next
// batch when the API has answered the last) until cfg.FullMax tokens or
// cfg.FullFor have passed; every token of a batch carries the batch's send
// time. Returns how many were sent.
func publishFull(ctx context.Context, cfg fanConfig, call apiCall) (int, error) {
	batch := max(cfg.Batch, 1)
	stop := time.Now().Add(cfg.FullFor)
	var buf []byte
	sent := 0
	for sent < cfg.FullMax && time.Now().Before(stop) {
		n := min(batch, cfg.FullMax-sent)
		buf = batchBody(buf[:0], sent+1, n, time.Now())
		if err := call(ctx, "batch", buf); err != nil {
			return sent, err
		}
		sent += n
	}
	return sent, nil
}
