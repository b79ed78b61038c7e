package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// getRunVia reads a run's resource through the gateway at base, retrying a
// 503 (run_lookup_incomplete on a loaded machine) after its Retry-After as
// a client does; it returns the HTTP status and the body.
func getRunVia(t *testing.T, base, method, id string) (int, map[string]any) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest(method, base+"/v1/runs/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 5 {
			time.Sleep(time.Second)
			continue
		}
		if err != nil {
			t.Fatalf("%s %s: HTTP %d, body: %v", method, id, resp.StatusCode, err)
		}
		return resp.StatusCode, v
	}
}

// Several gateways behind one address (a balancer, a Kubernetes Service)
// share one cluster: any request may reach any of them. Two node processes
// and two gateway processes: a run started through gateway A is streamed,
// resumed, read and cancelled through gateway B while A is alive, and a
// run that ended long enough ago for its coordinator to be gone is still
// read through B (A answers from its copy).
func TestAnyGatewayServesEveryRun(t *testing.T) {
	c := startMemberCluster(t, 2)
	_, gwB, _ := launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf)
	gwA := c.gw
	c.waitMembers(4)

	// Behind one address (gateway balance): runs are spread over both, and
	// each is streamed and read through the balancer whichever gateway
	// the next request reaches.
	_, ba := launch(t, testKey, "gateway", "balance", "-addr", "127.0.0.1:0", "-backends", strings.TrimPrefix(gwA, "http://")+","+gwB, "-health-interval", "200ms")
	bal := "http://" + ba.HTTP
	waitReady(t, bal+"/readyz")
	started := func(gw string) int {
		n, _ := strconv.Atoi(metric(t, gw+"/metrics", `qlc_runs_started_total{profile="quick"}`))
		return n
	}
	a0, b0 := started(gwA), started(gwB)
	for range 4 {
		code, v := postRun(t, bal, "quick")
		if code != 201 {
			t.Fatalf("POST through the balancer: %d %v", code, v)
		}
		id := v["id"].(string)
		if l := streamEvents(t, bal, id, nil); l["type"] != "run_completed" {
			t.Fatalf("through the balancer: ended with %v", l)
		}
		// Copies of a run on two gateways are fed by the coordinator
		// separately: the gateway this GET reaches may be a few ms behind
		// the one the stream came from (README "Several gateways").
		waitUntil(t, 5*time.Second, "GET through the balancer to say completed", func() bool {
			code, v := getRunVia(t, bal, "GET", id)
			if code != 200 || (v["status"] != "running" && v["status"] != "completed") {
				t.Fatalf("GET through the balancer: %d %v", code, v["status"])
			}
			return v["status"] == "completed"
		})
	}
	if a, b := started(gwA)-a0, started(gwB)-b0; a+b != 4 || a == 0 || b == 0 {
		t.Fatalf("runs started through the balancer: %d on A, %d on B; want 4 spread over both", a, b)
	}

	// Streamed through both at once, from the start: the same events.
	code, v := postRun(t, gwA, "medium")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	id := v["id"].(string)
	lastA := make(chan map[string]any, 1)
	go func() { lastA <- streamEvents(t, gwA, id, nil) }()
	lastB := streamEvents(t, gwB, id, nil)
	la := <-lastA
	if la["type"] != "run_completed" || lastB["type"] != "run_completed" || la["answer"] != lastB["answer"] || la["seq"] != lastB["seq"] {
		t.Fatalf("through A: %v %v; through B: %v %v", la["type"], la["seq"], lastB["type"], lastB["seq"])
	}
	// Resumed through B from the middle (Last-Event-ID).
	req, _ := http.NewRequest("GET", gwB+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Last-Event-ID", "10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("resume through B: %v %v", err, resp)
	}
	if l := readEvents(t, resp.Body, 11, nil); l["type"] != "run_completed" || l["seq"] != lastB["seq"] {
		t.Fatalf("resumed through B: ended with %v", l)
	}
	resp.Body.Close()
	if code, v := getRunVia(t, gwB, "GET", id); code != 200 || v["status"] != "completed" {
		t.Fatalf("GET through B: %d %v", code, v)
	}

	// Read and cancelled through B while it runs.
	code, v = postRun(t, gwA, "slow")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	slow := v["id"].(string)
	// Listed as in flight through B, which neither admitted nor follows it
	// (B asks A), and not in B's own list.
	listed := func(path string) (ids []string, gateways float64) {
		t.Helper()
		resp, err := http.Get(gwB + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s through B: %v %v", path, resp, err)
		}
		defer resp.Body.Close()
		var l struct {
			Gateways float64 `json:"gateways"`
			Data     []struct{ ID, Status string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			t.Fatal(err)
		}
		for _, r := range l.Data {
			if r.Status != "running" {
				t.Fatalf("GET %s lists %s as %s", path, r.ID, r.Status)
			}
			ids = append(ids, r.ID)
		}
		return ids, l.Gateways
	}
	if ids, n := listed("/v1/runs"); !slices.Equal(ids, []string{slow}) || n != 2 {
		t.Fatalf("runs in flight through B: %v from %v gateways; want only %s, from 2", ids, n, slow)
	}
	if ids, _ := listed("/v1/runs?scope=gateway"); len(ids) != 0 {
		t.Fatalf("B's own runs in flight: %v, want none", ids)
	}
	endA := make(chan map[string]any, 1)
	go func() { endA <- streamEvents(t, gwA, slow, nil) }()
	if code, v := getRunVia(t, gwB, "GET", slow); code != 200 || v["status"] != "running" {
		t.Fatalf("GET through B: %d %v", code, v)
	}
	if code, v := getRunVia(t, gwB, "DELETE", slow); code != 200 || v["status"] != "cancelled" {
		t.Fatalf("DELETE through B: %d %v", code, v)
	}
	select {
	case l := <-endA:
		if l["type"] != "run_cancelled" {
			t.Fatalf("A's stream of the run cancelled through B ended with %v", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's stream did not end within 10 s of the cancel through B")
	}
	if code, v := getRunVia(t, gwA, "GET", slow); code != 200 || v["status"] != "cancelled" {
		t.Fatalf("GET through A after the cancel through B: %d %v", code, v)
	}

	// Runs that ended, read through B once their coordinators are gone
	// (the nodes are killed): A still has one in memory; gateway C has
	// the other only in its store (-retain-finished 1s evicted it).
	_, gwC, _ := launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf, "-retain-finished", "1s")
	c.waitMembers(5)
	ended := map[string]string{} // run id → answer
	for _, gw := range []string{gwA, gwC} {
		code, v = postRun(t, gw, "quick")
		if code != 201 {
			t.Fatalf("POST: %d %v", code, v)
		}
		id := v["id"].(string)
		l := streamEvents(t, gw, id, nil)
		if l["type"] != "run_completed" {
			t.Fatalf("run ended with %v", l)
		}
		ended[id] = l["answer"].(string)
	}
	time.Sleep(1500 * time.Millisecond) // C's copy leaves memory (its store keeps it)
	for _, m := range c.nodes {
		_ = m.cmd.Process.Kill()
	}
	for id, answer := range ended {
		if code, v := getRunVia(t, gwB, "GET", id); code != 200 || v["status"] != "completed" {
			t.Fatalf("GET through B of a run ended elsewhere: %d %v", code, v)
		}
		if l := streamEvents(t, gwB, id, nil); l["type"] != "run_completed" || l["answer"] != answer {
			t.Fatalf("events through B of a run ended elsewhere: %v, want the answer %q", l, answer)
		}
	}

	// The usage ledger: each gateway bills the runs admitted through it;
	// GET /v1/usage through any of them sums all three ledgers.
	waitUntil(t, 10*time.Second, "usage through B to count the 8 runs of A, B and C", func() bool {
		resp, err := http.Get(gwB + "/v1/usage")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var u struct {
			Totals   struct{ Runs int }
			Gateways int
			Complete bool
		}
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/usage: HTTP %d %v", resp.StatusCode, err)
		}
		if u.Totals.Runs > 8 || u.Gateways != 3 || !u.Complete {
			t.Fatalf("usage through B: %+v; want at most 8 runs from 3 gateways, complete", u)
		}
		return u.Totals.Runs == 8
	})
	// scope=gateway: B's own ledger, the two runs the balancer gave it.
	resp, err = http.Get(gwB + "/v1/usage?scope=gateway")
	if err != nil {
		t.Fatal(err)
	}
	var own struct {
		Totals   struct{ Runs int }
		Gateways int
	}
	err = json.NewDecoder(resp.Body).Decode(&own)
	resp.Body.Close()
	if err != nil || own.Totals.Runs != 2 || own.Gateways != 1 {
		t.Fatalf("usage?scope=gateway through B: %+v %v; want its 2 runs", own, err)
	}
	if resp, err := http.Get(gwB + "/v1/usage?scope=everywhere"); err != nil || resp.StatusCode != 400 {
		t.Fatalf("usage?scope=everywhere: %v %v, want 400", err, resp)
	} else {
		resp.Body.Close()
	}
}
