package gateway

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"
)

type runListBody struct {
	Object   string `json:"object"`
	Scope    string `json:"scope"`
	Gateways int    `json:"gateways"`
	Complete bool   `json:"complete"`
	Data     []struct {
		ID       string `json:"id"`
		Object   string `json:"object"`
		Status   string `json:"status"`
		Profile  string `json:"profile"`
		Strategy string `json:"strategy"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"data"`
}

// GET /v1/runs lists the caller's runs in flight through this gateway: not
// another tenant's, not an ended one (the ledger has those), and a run
// leaves the list when it is cancelled.
func TestListRunsInFlight(t *testing.T) {
	g := startTenantGatewayProfiles(t, "", nil)
	a := g.Dev.TenantKey
	_, b := newTenant(t, g, "bee", "")
	start := func(key, profile string) string {
		t.Helper()
		var v runView
		if code, _ := call(t, "POST", g.URL+"/v1/runs", key, fmt.Sprintf(`{"profile":%q,"query":"list me"}`, profile), &v); code != http.StatusCreated {
			t.Fatalf("POST /v1/runs: HTTP %d", code)
		}
		return v.ID
	}
	list := func(key string) runListBody {
		t.Helper()
		var l runListBody
		if code, _ := call(t, "GET", g.URL+"/v1/runs", key, "", &l); code != http.StatusOK {
			t.Fatalf("GET /v1/runs: HTTP %d", code)
		}
		return l
	}
	ended := start(a, "instant")
	var v runView
	waitStatusKey(t, g.URL, a, ended, "completed", &v)
	a1 := start(a, "slow")
	a2 := start(a, "slow")
	b1 := start(b, "slow")
	l := list(a)
	if l.Object != "list" || l.Scope != "cluster" || l.Gateways != 1 || !l.Complete || len(l.Data) != 2 || l.Data[0].ID != a2 || l.Data[1].ID != a1 {
		t.Fatalf("tenant A's list: %+v, want %s then %s", l, a2, a1)
	}
	for _, r := range l.Data {
		if r.Object != "run" || r.Status != "running" || r.Profile != "slow" || r.Strategy != "chain" {
			t.Errorf("listed run %+v", r)
		}
	}
	if l := list(b); len(l.Data) != 1 || l.Data[0].ID != b1 {
		t.Fatalf("tenant B's list: %+v, want only %s", l, b1)
	}
	var one runListBody
	if code, _ := call(t, "GET", g.URL+"/v1/runs?limit=1", a, "", &one); code != http.StatusOK || len(one.Data) != 1 || one.Data[0].ID != a2 {
		t.Fatalf("limit=1: HTTP %d %+v", code, one)
	}
	var own runListBody
	if code, _ := call(t, "GET", g.URL+"/v1/runs?scope=gateway", a, "", &own); code != http.StatusOK || own.Scope != "gateway" || len(own.Data) != 2 {
		t.Fatalf("scope=gateway: HTTP %d %+v", code, own)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/runs", g.Dev.AdminKey, "", nil); code != http.StatusForbidden {
		t.Errorf("an admin key: HTTP %d, want 403", code)
	}
	for _, id := range []string{a1, a2} {
		if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+id, a, "", nil); code != http.StatusOK {
			t.Fatalf("cancel %s: HTTP %d", id, code)
		}
	}
	if l := list(a); len(l.Data) != 0 {
		t.Fatalf("after cancelling: %+v", l)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+b1, b, "", nil); code != http.StatusOK {
		t.Fatalf("cancel %s: HTTP %d", b1, code)
	}
}

func TestMergeRunBriefs(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0).UTC() }
	a := []runBrief{{ID: "run_b", CreatedAt: at(2), LastSeq: 5}, {ID: "run_a", CreatedAt: at(1)}}
	b := []runBrief{{ID: "run_c", CreatedAt: at(3)}, {ID: "run_b", CreatedAt: at(2), LastSeq: 9}, {ID: "run_d", CreatedAt: at(2)}}
	got := mergeRunBriefs([][]runBrief{a, b}, 0)
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	if !reflect.DeepEqual(ids, []string{"run_c", "run_b", "run_d", "run_a"}) || got[1].LastSeq != 9 {
		t.Fatalf("merged %v (run_b at seq %d): want newest first, then by id, run_b once at its furthest copy", ids, got[1].LastSeq)
	}
	if got := mergeRunBriefs([][]runBrief{a, b}, 2); len(got) != 2 || got[0].ID != "run_c" {
		t.Fatalf("limit 2: %+v", got)
	}
	if got := mergeRunBriefs(nil, 5); got == nil || len(got) != 0 {
		t.Fatalf("nothing: %#v (want an empty list, not null)", got)
	}
}
