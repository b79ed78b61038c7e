package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/qlc-project/qlc/actors"
)

// storedProfiles: "split" logs a few thousand small deltas (zero latency)
// and a curator whose whole output arrives from the upstream as one delta
// of ~250 KB (split into parts on every event stream).
func storedProfiles(upstreamURL string) string {
	return fmt.Sprintf(`
default_profile: split
providers:
  bulk: {kind: sim, sim: {output_tokens: 3000}}
  tiny: {kind: sim, sim: {output_tokens: 5}}
  up:   {kind: openai, base_url: %s/v1}
profiles:
  split:
    provider: tiny
    stages:
      generator: {provider: bulk, model: g, max_tokens: 3000}
      refiner:   {model: r}
      validator: {model: v}
      curator:   {provider: up, model: c, max_tokens: 200000}
`, upstreamURL)
}

// get sends an authenticated GET and returns the whole body; an SSE
// stream's comments (keep-alive pings) are left out.
func getAll(t *testing.T, url, key string, hdr ...string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %.300s", url, resp.StatusCode, b)
	}
	var out strings.Builder
	for line := range strings.SplitAfterSeq(string(b), "\n") {
		if !strings.HasPrefix(line, ":") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// wsAll reads a run's WebSocket from seq from to the run's end.
func wsAll(t *testing.T, base, id, key string, from int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+fmt.Sprintf("/v1/runs/%s/ws?from_seq=%d", id, from),
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	var msgs []string
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			break // the server closes after the run's end
		}
		if strings.Contains(string(msg), `"type":"ping"`) {
			continue
		}
		msgs = append(msgs, string(msg))
	}
	if len(msgs) == 0 || !strings.Contains(msgs[len(msgs)-1], `"run_completed"`) {
		t.Fatalf("WebSocket from seq %d: %d messages, not ending with the run's end", from, len(msgs))
	}
	return msgs
}

// A finished run whose log left memory for the store reads exactly as it
// did from memory, byte for byte, through every reader: SSE from seq 1,
// from seq N, from inside a split delta (Last-Event-ID "seq:bytes"),
// WebSocket from seq 1 and N, and the run resource.
func TestStoredRunReplaysExactly(t *testing.T) {
	hold := make(chan struct{})
	up := startUpstream(t, hold, []string{awkwardText(100000), " and", " done."})
	p := newTenancyServer(t, storedProfiles(up.URL), func(_ *Config, e *actors.Config) { e.Hub.MaxLag = 1 << 20 })
	srv := httptest.NewServer(p.gw.Handler())
	t.Cleanup(srv.Close)
	key := p.dev.TenantKey

	req, _ := http.NewRequest("POST", srv.URL+"/v1/runs", strings.NewReader(`{"query":"Explain everything."}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: HTTP %d %s", resp.StatusCode, body)
	}
	id := resp.Header.Get("X-QLC-Run-Id")
	if id == "" {
		id = strings.Split(strings.Split(string(body), `"id":"`)[1], `"`)[0]
	}
	hub, err := p.engine.Hub(id)
	if err != nil {
		t.Fatal(err)
	}
	// A reader on the log keeps it in memory while the reads from memory
	// are taken (a finished run's log is not dropped under its readers).
	held := hub.Subscribe(1)
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := hub.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the run recorded in the store", func() bool {
		_, err := p.tenancy.Store().Run(id)
		return err == nil
	})

	type reads struct {
		sse1, sseN, ssePart, resource string
		ws1, wsN                      []string
	}
	var partID string
	last := hub.LastSeq()
	read := func() reads {
		var r reads
		r.sse1 = getAll(t, srv.URL+"/v1/runs/"+id+"/events", key)
		if partID == "" {
			for line := range strings.SplitSeq(r.sse1, "\n") {
				if id, ok := strings.CutPrefix(line, "id: "); ok && strings.Contains(id, ":") {
					partID = id // the first part of the curator's split delta
					break
				}
			}
			if partID == "" {
				t.Fatal("no split delta on the stream")
			}
		}
		r.sseN = getAll(t, srv.URL+"/v1/runs/"+id+"/events", key, "Last-Event-ID", fmt.Sprint(last/2))
		r.ssePart = getAll(t, srv.URL+"/v1/runs/"+id+"/events", key, "Last-Event-ID", partID)
		r.resource = getAll(t, srv.URL+"/v1/runs/"+id, key)
		r.ws1 = wsAll(t, srv.URL, id, key, 1)
		r.wsN = wsAll(t, srv.URL, id, key, int(last-3))
		return r
	}
	mem := read()
	if hub.LogInStore() {
		t.Fatal("the log left memory under a reader")
	}
	held.Close() // the last reader leaves: the log goes to the store
	if !hub.LogInStore() {
		t.Fatal("the recorded run's log is still in memory after its last reader left")
	}
	stored := read()
	for _, c := range []struct {
		what     string
		mem, got string
	}{
		{"SSE from seq 1", mem.sse1, stored.sse1},
		{fmt.Sprintf("SSE after seq %d", last/2), mem.sseN, stored.sseN},
		{"SSE from inside the split delta " + partID, mem.ssePart, stored.ssePart},
		{"the run resource", mem.resource, stored.resource},
		{"WebSocket from seq 1", strings.Join(mem.ws1, "\n"), strings.Join(stored.ws1, "\n")},
		{"WebSocket from near the end", strings.Join(mem.wsN, "\n"), strings.Join(stored.wsN, "\n")},
	} {
		if c.got != c.mem {
			t.Errorf("%s: read from the store differs from memory (%d bytes, from memory %d)", c.what, len(c.got), len(c.mem))
		}
	}
	if !strings.Contains(mem.resource, `"status":"completed"`) || len(mem.sse1) < 250000 {
		t.Fatalf("the run did not complete as expected: %.300s", mem.resource)
	}
	if !strings.HasPrefix(mem.ssePart, "id: "+partID[:strings.Index(partID, ":")]) {
		t.Errorf("the resumed stream starts %.80q, want the rest of seq %s", mem.ssePart, partID)
	}
}
