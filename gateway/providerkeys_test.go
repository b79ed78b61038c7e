package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/internal/tracing"
)

// authRecorder is an OpenAI-compatible upstream that records the
// Authorization header of every request, answers a stream, and answers 401
// with a body that echoes the key (as OpenAI's "Incorrect API key provided:
// sk-…" does) to a key starting with "sk-bad".
type authRecorder struct {
	*httptest.Server
	mu    sync.Mutex
	seen  []string
	calls int
}

func newAuthRecorder(t *testing.T) *authRecorder {
	t.Helper()
	a := &authRecorder{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		a.mu.Lock()
		a.seen = append(a.seen, auth)
		a.calls++
		a.mu.Unlock()
		if key, _ := strings.CutPrefix(auth, "Bearer "); strings.HasPrefix(key, "sk-bad") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://example.invalid.","type":"invalid_request_error","code":"invalid_api_key"}}`, key)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, piece := range []string{"Light", " scatters", "."} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", piece)
		}
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(a.Close)
	return a
}

// take returns the Authorization headers seen since the last take.
func (a *authRecorder) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.seen
	a.seen = nil
	return out
}

// syncBuffer is a log sink that tests read after the fact.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const byokDefaultKey = "sk-operator-default-0000000000000000"

func byokProfiles(upstream string) string {
	return fmt.Sprintf(`
default_profile: byok
providers:
  up:  {kind: openai, base_url: %s/v1, api_key_env: QLC_TEST_BYOK_DEFAULT}
  sim: {kind: sim, sim: {output_tokens: 20}}
profiles:
  byok:
    provider: up
    stages: {generator: {model: gpt-4o}, refiner: {model: gpt-4o}, validator: {model: gpt-4o}, curator: {model: gpt-4o}}
  byok-moa:
    strategy: moa
    provider: up
    proposers: [{model: gpt-4o}, {model: gpt-4o-mini}]
    aggregator: {model: gpt-4o}
  simonly:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`, upstream)
}

// startBYOKGateway is a tenant gateway whose profiles call up (the
// recorder), with a sealing ring, every log line (debug level) in logs.
func startBYOKGateway(t *testing.T, up *authRecorder, ring *sealed.Ring, logs *syncBuffer) *tenantGateway {
	t.Helper()
	t.Setenv("QLC_TEST_BYOK_DEFAULT", byokDefaultKey)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return startTenantGatewayProfiles(t, byokProfiles(up.URL), func(c *Config, e *actors.Config) {
		c.Logger, e.Logger = logger, logger
		providers, err := actors.BuildProviders(e.Stages, logger)
		if err != nil {
			t.Fatal(err)
		}
		e.Providers, e.Secrets = providers, ring
		if err := c.Tenancy.SetSecrets(ring); err != nil {
			t.Fatal(err)
		}
	})
}

// textCall sends a request and returns the status and the body as text.
func textCall(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	code, _, b := rawCall(t, method, url, key, body)
	return code, string(b)
}

// runWith starts a run of profile for key's tenant and waits for status.
func runWith(t *testing.T, g *tenantGateway, key, profile, query, status string) runView {
	t.Helper()
	var v runView
	code, _ := call(t, "POST", g.URL+"/v1/runs", key, fmt.Sprintf(`{"profile":%q,"query":%q}`, profile, query), &v)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/runs: HTTP %d", code)
	}
	waitStatusKey(t, g.URL, key, v.ID, status, &v)
	return v
}

func allEqual(t *testing.T, what string, got []string, want string) {
	t.Helper()
	if len(got) == 0 {
		t.Fatalf("%s: the upstream saw no request", what)
	}
	for _, h := range got {
		if h != want {
			t.Fatalf("%s: upstream saw Authorization %q, want %q (all: %q)", what, h, want, got)
		}
	}
}

// A tenant's own key is used by its runs (chain and parallel steps), never
// by another tenant's, no longer once deleted, never shown by the API, and
// never written in clear to the store or the logs, even when the upstream
// echoes it in an error.
func TestProviderKeysBringYourOwn(t *testing.T) {
	up := newAuthRecorder(t)
	ring, err := sealed.NewRing(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	g := startBYOKGateway(t, up, ring, logs)
	a := g.Dev.TenantKey
	bID, b := newTenant(t, g, "bee", "")
	const keyA = "sk-tenant-a-1111111111111111111111ABCD"
	const badKey = "sk-bad-tenant-a-22222222222222222222WXYZ"

	// Refusals: unknown endpoint, an endpoint without keys, no key, an
	// admin key without a tenant, a tenant key naming another tenant.
	for _, c := range []struct {
		method, path, key, body, code string
		status                        int
	}{
		{"PUT", "/v1/provider-keys/nope", a, `{"api_key":"sk-x"}`, "unknown_endpoint", 404},
		{"PUT", "/v1/provider-keys/sim", a, `{"api_key":"sk-x"}`, "endpoint_takes_no_key", 400},
		{"PUT", "/v1/provider-keys/up", a, `{"api_key":""}`, "missing_api_key", 400},
		{"PUT", "/v1/provider-keys/up", a, `{"api_key":"sk x"}`, "invalid_api_key", 400},
		{"PUT", "/v1/provider-keys/up", g.Dev.AdminKey, `{"api_key":"sk-x"}`, "missing_tenant", 400},
		{"PUT", "/v1/provider-keys/up?tenant=" + bID, a, `{"api_key":"sk-x"}`, "tenant_mismatch", 403},
		{"DELETE", "/v1/provider-keys/up", a, "", "provider_key_not_found", 404},
	} {
		var e errBody
		if code, _ := call(t, c.method, g.URL+c.path, c.key, c.body, &e); code != c.status || e.Error.Code != c.code {
			t.Errorf("%s %s: HTTP %d %q, want %d %q", c.method, c.path, code, e.Error.Code, c.status, c.code)
		}
	}

	code, body := textCall(t, "PUT", g.URL+"/v1/provider-keys/up", a, fmt.Sprintf(`{"api_key":%q}`, keyA))
	if code != http.StatusOK || strings.Contains(body, keyA) || !strings.Contains(body, `"hint":"…ABCD"`) {
		t.Fatalf("PUT: HTTP %d %s", code, body)
	}
	code, body = textCall(t, "GET", g.URL+"/v1/provider-keys", a, "")
	if code != http.StatusOK || strings.Contains(body, keyA) || !strings.Contains(body, `"endpoint":"up"`) {
		t.Fatalf("GET (tenant A): HTTP %d %s", code, body)
	}
	if code, body = textCall(t, "GET", g.URL+"/v1/provider-keys", b, ""); code != http.StatusOK || strings.Contains(body, `"up"`) {
		t.Fatalf("GET (tenant B) shows A's key: HTTP %d %s", code, body)
	}
	if code, body = textCall(t, "GET", g.URL+"/v1/provider-keys?tenant="+g.Dev.Tenant, g.Dev.AdminKey, ""); code != http.StatusOK || !strings.Contains(body, `"endpoint":"up"`) || strings.Contains(body, keyA) {
		t.Fatalf("GET (admin for A): HTTP %d %s", code, body)
	}

	// A's runs, chain and parallel (stage host), use A's key; B's the endpoint's.
	up.take()
	runWith(t, g, a, "byok", "why is the sky blue? (A)", "completed")
	allEqual(t, "tenant A, chain", up.take(), "Bearer "+keyA)
	runWith(t, g, a, "byok-moa", "why is the sky blue? (A, moa)", "completed")
	allEqual(t, "tenant A, moa", up.take(), "Bearer "+keyA)
	runWith(t, g, b, "byok", "why is the sky blue? (B)", "completed")
	allEqual(t, "tenant B", up.take(), "Bearer "+byokDefaultKey)

	// Deleted: A's next run uses the endpoint's key.
	if code, body = textCall(t, "DELETE", g.URL+"/v1/provider-keys/up", a, ""); code != http.StatusOK {
		t.Fatalf("DELETE: HTTP %d %s", code, body)
	}
	if _, body = textCall(t, "GET", g.URL+"/v1/provider-keys", a, ""); strings.Contains(body, `"up"`) {
		t.Fatalf("GET after DELETE still lists it: %s", body)
	}
	runWith(t, g, a, "byok", "why is the sky blue? (A, after delete)", "completed")
	allEqual(t, "tenant A after DELETE", up.take(), "Bearer "+byokDefaultKey)

	// A wrong key: the run fails with an auth error that does not echo it.
	if code, body = textCall(t, "PUT", g.URL+"/v1/provider-keys/up?tenant="+g.Dev.Tenant, g.Dev.AdminKey, fmt.Sprintf(`{"api_key":%q}`, badKey)); code != http.StatusOK {
		t.Fatalf("PUT (admin for A): HTTP %d %s", code, body)
	}
	v := runWith(t, g, a, "byok", "why is the sky blue? (A, bad key)", "failed")
	allEqual(t, "tenant A, bad key", up.take(), "Bearer "+badKey)
	if v.Error == nil || v.Error.Code != "auth" || !strings.Contains(v.Error.Message, "[redacted]") {
		t.Fatalf("run error: %+v", v.Error)
	}
	_, runBody := textCall(t, "GET", g.URL+"/v1/runs/"+v.ID, a, "")
	var events strings.Builder
	for _, ev := range runEvents(t, g.URL, a, v.ID) {
		fmt.Fprintf(&events, "%v\n", ev.Data)
	}
	_, audit := textCall(t, "GET", g.URL+"/v1/admin/audit", g.Dev.AdminKey, "")
	if !strings.Contains(audit, "provider_key.put") || !strings.Contains(audit, "provider_key.delete") {
		t.Fatalf("audit log has no provider_key entries: %s", audit)
	}

	// Nowhere in clear: responses, events, audit, logs, the database files.
	files := ""
	for _, f := range []string{"qlc.db", "qlc.db-wal"} {
		if b, err := os.ReadFile(filepath.Join(g.Dir, f)); err == nil {
			files += string(b)
		}
	}
	if len(files) == 0 {
		t.Fatal("no database file read")
	}
	for what, text := range map[string]string{"run resource": runBody, "events": events.String(), "audit": audit, "logs": logs.String(), "database": files} {
		for _, key := range []string{keyA, badKey, byokDefaultKey} {
			if strings.Contains(text, key) {
				t.Errorf("the %s contain(s) a key in clear (%s…)", what, key[:10])
			}
		}
	}
	if !strings.Contains(logs.String(), "[redacted]") {
		t.Log("note: no redacted error in the logs")
	}
}

// Without a ring (no cluster key, runs on nodes), storing a key is refused.
func TestProviderKeysNeedARing(t *testing.T) {
	up := newAuthRecorder(t)
	g := startBYOKGateway(t, up, nil, &syncBuffer{})
	var e errBody
	if code, _ := call(t, "PUT", g.URL+"/v1/provider-keys/up", g.Dev.TenantKey, `{"api_key":"sk-abc"}`, &e); code != http.StatusServiceUnavailable || e.Error.Code != "provider_keys_unavailable" {
		t.Fatalf("PUT without a ring: HTTP %d %q", code, e.Error.Code)
	}
}

// A key stored under the old cluster key still works after a rotation: the
// gateway started with ring [NEW, OLD] re-seals it under NEW, so that a
// process holding only NEW (phase 3) opens it.
func TestProviderKeysSurviveClusterKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	oldRing, _ := sealed.NewRing(oldKey)
	bothRing, _ := sealed.NewRing(newKey, oldKey)
	newRing, _ := sealed.NewRing(newKey)
	path := filepath.Join(t.TempDir(), "qlc.db")
	open := func(ring *sealed.Ring) (*Tenancy, *store.Store) {
		st, err := store.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		tn, err := NewTenancy(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tn.SetSecrets(ring); err != nil {
			t.Fatal(err)
		}
		return tn, st
	}
	tn, st := open(oldRing)
	if _, _, _, err := tn.CreateTenant("acme", "Acme", store.Limits{}); err != nil {
		t.Fatal(err)
	}
	const key = "sk-acme-rotation-0000000000000000"
	if _, err := tn.PutProviderKey("acme", "up", key); err != nil {
		t.Fatal(err)
	}
	pk := tn.ProviderKeysOf("acme")[0]
	if _, err := newRing.Open(sealed.Box{KeyID: pk.KeyID, Data: pk.Box}, sealed.AAD("acme", "up")); err == nil {
		t.Fatal("a ring without the old key opened a box sealed under it")
	}
	st.Close()

	tn, st = open(bothRing) // phase 2: [NEW, +OLD]
	defer st.Close()
	pk = tn.ProviderKeysOf("acme")[0]
	got, err := newRing.Open(sealed.Box{KeyID: pk.KeyID, Data: pk.Box}, sealed.AAD("acme", "up"))
	if err != nil || string(got) != key {
		t.Fatalf("after re-sealing, NEW alone: %q, %v", got, err)
	}
	if _, err := newRing.Open(sealed.Box{KeyID: pk.KeyID, Data: pk.Box}, sealed.AAD("other", "up")); err == nil {
		t.Fatal("a box opened for another tenant")
	}
}

// Provider keys replicate between gateways sealed, deletions too.
func TestProviderKeysReplicate(t *testing.T) {
	ring, _ := sealed.NewRing(bytes.Repeat([]byte{3}, 32))
	mk := func() *Tenancy {
		st, err := store.Open(filepath.Join(t.TempDir(), "qlc.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		tn, err := NewTenancy(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = tn.SetSecrets(ring)
		return tn
	}
	a, b := mk(), mk()
	if _, _, _, err := a.CreateTenant("acme", "Acme", store.Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutProviderKey("acme", "up", "sk-replicated-000000000000"); err != nil {
		t.Fatal(err)
	}
	ts, ks := a.snapshot()
	rc := encodeRegistry(ts, ks, a.providerKeySnapshot()...)
	for _, row := range rc.ProviderKeys {
		if bytes.Contains(row, []byte("sk-replicated")) {
			t.Fatal("a replicated row holds the key in clear")
		}
	}
	b.merge(rc)
	if got := b.ProviderKeysOf("acme"); len(got) != 1 || got[0].Endpoint != "up" {
		t.Fatalf("b after merge: %+v", got)
	}
	if _, err := a.DeleteProviderKey("acme", "up"); err != nil {
		t.Fatal(err)
	}
	b.merge(encodeRegistry(nil, nil, a.providerKeySnapshot()...))
	if got := b.ProviderKeysOf("acme"); len(got) != 0 {
		t.Fatalf("b after the deletion replicated: %+v", got)
	}
}

// A key deleted while a run is in flight is not used by the run's next
// attempt: the generator's first attempt (with the key) is held until the
// DELETE has answered, then fails with a 500; its retry, and every later
// stage, use the endpoint's own key. A key put meanwhile is used the same way.
func TestProviderKeyChangeReachesRunsInFlight(t *testing.T) {
	for _, c := range []struct {
		name, change string
		after        string
	}{
		{"delete", "DELETE", byokDefaultKey},
		{"replace", "PUT", "sk-tenant-a-replaced-999999999999999"},
	} {
		t.Run(c.name, func(t *testing.T) {
			const keyA = "sk-tenant-a-inflight-11111111111111111"
			var mu sync.Mutex
			var seen []string
			arrived, release := make(chan struct{}), make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Header.Get("Authorization"))
				first := len(seen) == 1
				mu.Unlock()
				if first {
					close(arrived)
					<-release
					http.Error(w, `{"error":{"message":"try again"}}`, http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
			}))
			defer up.Close()
			ring, _ := sealed.NewRing(bytes.Repeat([]byte{5}, 32))
			g := startBYOKGateway(t, &authRecorder{Server: up}, ring, &syncBuffer{})
			a := g.Dev.TenantKey
			if code, body := textCall(t, "PUT", g.URL+"/v1/provider-keys/up", a, fmt.Sprintf(`{"api_key":%q}`, keyA)); code != http.StatusOK {
				t.Fatalf("PUT: %d %s", code, body)
			}
			var v runView
			if code, _ := call(t, "POST", g.URL+"/v1/runs", a, `{"profile":"byok","query":"in flight"}`, &v); code != http.StatusCreated {
				t.Fatalf("POST /v1/runs: %d", code)
			}
			<-arrived
			body := ""
			if c.change == "PUT" {
				body = fmt.Sprintf(`{"api_key":%q}`, c.after)
			}
			if code, out := textCall(t, c.change, g.URL+"/v1/provider-keys/up", a, body); code != http.StatusOK {
				close(release)
				t.Fatalf("%s: %d %s", c.change, code, out)
			}
			close(release)
			waitStatusKey(t, g.URL, a, v.ID, "completed", &v)
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 5 || seen[0] != "Bearer "+keyA {
				t.Fatalf("the upstream saw %q: want the tenant's key once, then 4 more", seen)
			}
			for _, h := range seen[1:] {
				if h != "Bearer "+c.after {
					t.Fatalf("after the %s, an attempt used %q (all: %q)", c.change, h, seen)
				}
			}
		})
	}
}

// With tracing on, no span of the PUT, of a run that uses the tenant's key,
// or of a run whose upstream echoes a wrong key in its error carries the
// key: names, attributes, status messages, events and their attributes.
func TestProviderKeyNeverInATrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	restore := tracing.Use(tp)
	defer func() { restore(); _ = tp.Shutdown(context.Background()) }()

	up := newAuthRecorder(t)
	ring, err := sealed.NewRing(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	g := startBYOKGateway(t, up, ring, &syncBuffer{})
	a := g.Dev.TenantKey
	const keyA = "sk-trace-a-3333333333333333333333EFGH"
	const badKey = "sk-bad-trace-a-44444444444444444444IJKL"
	if code, body := textCall(t, "PUT", g.URL+"/v1/provider-keys/up", a, fmt.Sprintf(`{"api_key":%q}`, keyA)); code != http.StatusOK {
		t.Fatalf("PUT: HTTP %d %s", code, body)
	}
	runWith(t, g, a, "byok-moa", "why is the sky blue? (traced)", "completed")
	allEqual(t, "tenant A, moa", up.take(), "Bearer "+keyA)
	if code, body := textCall(t, "PUT", g.URL+"/v1/provider-keys/up", a, fmt.Sprintf(`{"api_key":%q}`, badKey)); code != http.StatusOK {
		t.Fatalf("PUT (bad key): HTTP %d %s", code, body)
	}
	runWith(t, g, a, "byok", "why is the sky blue? (traced, bad key)", "failed")
	allEqual(t, "tenant A, bad key", up.take(), "Bearer "+badKey)

	var all strings.Builder
	attrs := func(kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			fmt.Fprintf(&all, " %s=%s", kv.Key, kv.Value.Emit())
		}
	}
	names := map[string]bool{}
	waitUntil(t, "the runs' attempt spans, and the failed one's error", func() bool {
		all.Reset()
		clear(names)
		errored := false
		for _, s := range rec.Ended() {
			names[s.Name()] = true
			fmt.Fprintf(&all, "%s [%s]", s.Name(), s.Status().Description)
			errored = errored || (s.Status().Code == codes.Error && strings.Contains(s.Status().Description, "Incorrect API key"))
			attrs(s.Attributes())
			for _, ev := range s.Events() {
				fmt.Fprintf(&all, " event %s", ev.Name)
				attrs(ev.Attributes)
			}
			all.WriteString("\n")
		}
		return errored && strings.Contains(all.String(), "gen_ai.")
	})
	if !strings.Contains(all.String(), "/v1/provider-keys") {
		t.Errorf("no span of the PUT (spans: %v)", slices.Sorted(maps.Keys(names)))
	}
	for _, key := range []string{keyA, badKey, keyA[len(keyA)-12:], badKey[len(badKey)-12:], "Bearer "} {
		if strings.Contains(all.String(), key) {
			t.Errorf("a span carries the key %s…", key[:8])
		}
	}
	if t.Failed() {
		t.Logf("spans:\n%s", all.String())
	}
}
