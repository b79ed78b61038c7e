package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework/discover"
)

// saturatedGateway is a gateway whose engine admits one run at a time
// (ActiveRunLimit 1), holding one slow run: every new run is refused.
func saturatedGateway(t testing.TB) (*testGateway, string) {
	t.Helper()
	gw := startGateway(t, "", func(_ *Config, e *actors.Config) {
		e.ActiveRunLimit = actors.AdaptiveLimitConfig{Initial: 1, Min: 1, Max: 1}
	})
	resp, err := http.Post(gw.URL+"/v1/runs", "application/json", strings.NewReader(`{"query":"hold the slot","profile":"slow"}`))
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the run that fills the gateway: HTTP %d", resp.StatusCode)
	}
	if full, _ := gw.Engine.Saturated(); !full {
		t.Fatal("the engine is not saturated with its one run")
	}
	return gw, v.ID
}

// While no node has room, a request for a run is refused at the door —
// before its body is read (a body that is not even JSON gets the same
// answer) — with writeError's 503 cluster_saturated and a Retry-After;
// other requests (reading the running run) are served; the refusal is
// timed; once the run ends, runs are admitted again.
func TestRefusalAtTheDoor(t *testing.T) {
	gw, held := saturatedGateway(t)
	for _, tc := range []struct{ path, body string }{
		{"/v1/runs", `{"query":"one more","profile":"instant"}`},
		{"/v1/runs", `not json at all`},
		{"/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}]}`},
	} {
		resp, err := http.Post(gw.URL+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct{ Code, Type, Message string }
		}
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 503 || e.Error.Code != "cluster_saturated" || e.Error.Type != "server_error" ||
			resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get(discover.QLCHeader) != "qlc" {
			t.Fatalf("POST %s %q: HTTP %d %+v %v, headers %v", tc.path, tc.body, resp.StatusCode, e, err, resp.Header)
		}
	}
	if got := testutil.CollectAndCount(gw.Server.metrics.refusalSeconds); got != 1 {
		t.Fatalf("refusal histograms: %d series, want the door's", got)
	}
	if n := histogramCount(t, gw, "door", "503"); n != 3 {
		t.Fatalf("refusals timed at the door: %d, want 3", n)
	}
	if code := do(t, "GET", gw.URL+"/v1/runs/"+held, "", nil); code != 200 {
		t.Fatalf("GET of the running run: %d", code)
	}
	if code := do(t, "DELETE", gw.URL+"/v1/runs/"+held, "", nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	waitUntil(t, "the engine to have room again", func() bool { full, _ := gw.Engine.Saturated(); return !full })
	if code := do(t, "POST", gw.URL+"/v1/runs", `{"query":"now there is room","profile":"instant"}`, nil); code != 201 {
		t.Fatalf("POST after the run ended: %d", code)
	}
}

// The body writeError writes for cluster_saturated is the door's, byte
// for byte.
func TestSaturatedBodyIsWriteErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, errServer(http.StatusServiceUnavailable, "cluster_saturated", saturatedMessage))
	if rec.Body.String() != string(saturatedBody) {
		t.Fatalf("writeError: %q\nthe door:   %q", rec.Body.String(), saturatedBody)
	}
}

func histogramCount(t testing.TB, gw *testGateway, at, status string) uint64 {
	t.Helper()
	mfs, err := gw.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "qlc_refusal_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["at"] == at && labels["status"] == status {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// BenchmarkRefusal is the gateway's own cost of refusing a run while
// saturated (the handler alone, no network): at the door (refuse.go) and
// through the normal path (routing, the handler's own check, writeError)
// it replaces.
func BenchmarkRefusal(b *testing.B) {
	gw, _ := saturatedGateway(b)
	body := `{"model":"qlc-instant","messages":[{"role":"user","content":"how do vector clocks work?"}]}`
	for _, path := range []struct {
		name string
		h    http.Handler
	}{{"door", gw.Server.handler}, {"handler", gw.Server.routes}} {
		b.Run(path.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
				rec := httptest.NewRecorder()
				path.h.ServeHTTP(rec, req)
				if rec.Code != 503 {
					b.Fatalf("HTTP %d", rec.Code)
				}
			}
		})
	}
}
