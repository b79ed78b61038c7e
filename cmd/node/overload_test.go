package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 18, end to end with real processes: a node at its run limit
// (-run-slots 1: one run running and a queue of 2) makes the gateway
// refuse the next run at once with 503 cluster_saturated and a
// Retry-After, before any work; the runs it admitted go on, none lost or
// moved, and the node is not taken for dead.
func TestFullNodeRefusesAtOnce(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	n := c.addNode("-run-slots", "1", "-run-slot-headroom", "-1")
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf,
		"-default-concurrent-runs", "0")
	c.waitMembers(2)
	var ids []string
	for i := 0; i < 3; i++ {
		code, v := postRun(t, c.gw, "slow")
		if code != http.StatusCreated {
			t.Fatalf("run %d of the node's limit of 3: %d %v", i+1, code, v)
		}
		ids = append(ids, v["id"].(string))
	}
	t0 := time.Now()
	resp, err := http.Post(c.gw+"/v1/runs", "application/json", strings.NewReader(`{"query":"one too many","profile":"slow"}`))
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != "cluster_saturated" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the run beyond the node's limit: %d %q, Retry-After %q; want 503 cluster_saturated with a Retry-After",
			resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After"))
	}
	t.Logf("refused in %v", took)
	for _, id := range ids {
		r, err := http.Get(c.gw + "/v1/runs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Status string }
		_ = json.NewDecoder(r.Body).Decode(&v)
		r.Body.Close()
		if v.Status != "running" && v.Status != "queued" && v.Status != "pending" {
			t.Fatalf("admitted run %s is %q after the refusal", id, v.Status)
		}
	}
	if got := metric(t, "http://"+n.ops+"/metrics", "qlc_cluster_fencings_total"); got != "0" && got != "" {
		t.Fatalf("the full node fenced itself %s times", got)
	}
	for _, id := range ids {
		req, _ := http.NewRequest(http.MethodDelete, c.gw+"/v1/runs/"+id, nil)
		if r, err := http.DefaultClient.Do(req); err == nil {
			r.Body.Close()
		}
	}
}
