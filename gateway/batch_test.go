package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
)

// batchProfiles: a zero-latency chain ("instant"), zero-latency moa and
// vote strategies under the built-ins' names, and a chain slow enough to
// cancel.
const batchProfiles = `
default_profile: instant
providers:
  sim:  {kind: sim, sim: {output_tokens: 40}}
  slow: {kind: sim, sim: {ttft: 10ms, itl: 15ms, output_tokens: 4000}}
profiles:
  instant:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  moa:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
  vote:
    strategy: vote
    provider: sim
    samples: [{model: a}, {model: b}]
    count: 3
  slow:
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// batchProfilesFast is batchProfiles with "slow" as fast as "instant": a
// gateway restarted with it finishes what the first one left.
var batchProfilesFast = strings.Replace(batchProfiles, "provider: slow\n", "provider: sim\n", 1)

// rawCall sends a request with key and returns the status and the body.
func rawCall(t *testing.T, method, url, key, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// batchBody builds a POST /v1/runs/batch body.
func batchBody(t *testing.T, items ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"items": items})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// postBatch posts a batch and returns it (failing the test unless 202).
func postBatch(t *testing.T, base, key, body string) batchView {
	t.Helper()
	code, h, data := rawCall(t, "POST", base+"/v1/runs/batch", key, body)
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/runs/batch: HTTP %d %s", code, data)
	}
	var v batchView
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if h.Get("Location") != "/v1/runs/batch/"+v.ID || !strings.HasPrefix(v.ID, "batch_") {
		t.Fatalf("Location %q for batch %q", h.Get("Location"), v.ID)
	}
	return v
}

func getBatchView(t *testing.T, base, key, id, query string) batchView {
	t.Helper()
	var v batchView
	if code, _ := call(t, "GET", base+"/v1/runs/batch/"+id+query, key, "", &v); code != http.StatusOK {
		t.Fatalf("GET batch %s%s: HTTP %d", id, query, code)
	}
	return v
}

// waitBatch polls a batch until ok says so (or a minute passes).
func waitBatch(t *testing.T, base, key, id, what string, ok func(batchView) bool) batchView {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v := getBatchView(t, base, key, id, "?limit=0")
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s: waiting for %s; now %s %+v", id, what, v.Status, v.Counts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allItems reads every item of a batch, page by page (limit per page),
// following next_after.
func allItems(t *testing.T, base, key, id string, limit int) []batchItemView {
	t.Helper()
	var out []batchItemView
	q := fmt.Sprintf("?limit=%d", limit)
	for pages := 0; ; pages++ {
		v := getBatchView(t, base, key, id, q)
		if v.HasMore == nil {
			t.Fatal("a page without has_more")
		}
		if len(v.Items) > limit {
			t.Fatalf("a page of %d items; limit %d", len(v.Items), limit)
		}
		out = append(out, v.Items...)
		if !*v.HasMore {
			if v.NextAfter != "" {
				t.Fatalf("last page has next_after %q", v.NextAfter)
			}
			return out
		}
		if v.NextAfter != v.Items[len(v.Items)-1].CustomID {
			t.Fatalf("next_after %q; the page ends with %q", v.NextAfter, v.Items[len(v.Items)-1].CustomID)
		}
		q = fmt.Sprintf("?limit=%d&after=%s", limit, v.NextAfter)
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
	}
}

// refusedFor is the gateway's count of runs refused for limit.
func refusedFor(t *testing.T, g *tenantGateway, limit string) float64 {
	t.Helper()
	mfs, err := g.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "qlc_tenant_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestBatchRunsEveryItem: 50 queries over a chain, moa and vote run as
// ordinary runs, never more at once than the tenant's concurrent_runs;
// every item's answer is its run's; pages follow custom_id or index.
func TestBatchRunsEveryItem(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	const limit = 3
	_, key := newTenant(t, g, "batcher", fmt.Sprintf(`{"concurrent_runs":%d}`, limit))

	profiles := []string{"instant", "moa", "vote", ""} // "" = the default (instant)
	var items []map[string]any
	for i := range 50 {
		it := map[string]any{"custom_id": fmt.Sprintf("q-%02d", 49-i), "query": fmt.Sprintf("question %d: why is the sky blue?", i), "seed": i + 1}
		if p := profiles[i%len(profiles)]; p != "" {
			it["profile"] = p
		}
		if i%5 == 0 {
			it["max_tokens"] = 30
		}
		items = append(items, it)
	}
	b := postBatch(t, g.URL, key, batchBody(t, items...))
	if b.Status != "in_progress" || b.Total != 50 || b.Counts.Queued != 50 || b.Object != "batch" {
		t.Fatalf("created batch: %+v", b)
	}
	done := waitBatch(t, g.URL, key, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	if done.Counts != (batchCounts{Completed: 50}) || done.EndedAt == nil {
		t.Fatalf("ended batch: %+v", done)
	}

	got := allItems(t, g.URL, key, b.ID, 7)
	if len(got) != 50 {
		t.Fatalf("%d items over the pages; want 50", len(got))
	}
	runIDs := map[string]bool{}
	for i, it := range got {
		wantProfile := profiles[i%len(profiles)]
		if wantProfile == "" {
			wantProfile = "instant"
		}
		if it.Index != i || it.CustomID != fmt.Sprintf("q-%02d", 49-i) || it.Profile != wantProfile || it.Status != "completed" ||
			it.Answer == "" || it.Error != nil || it.Attempts != 1 || it.StartedAt == nil || it.EndedAt == nil {
			t.Fatalf("item %d: %+v", i, it)
		}
		var run runView
		if code, _ := call(t, "GET", g.URL+"/v1/runs/"+it.RunID, key, "", &run); code != 200 {
			t.Fatalf("item %d's run %s: HTTP %d", i, it.RunID, code)
		}
		if run.Status != "completed" || run.Answer != it.Answer || run.Profile != wantProfile || run.Query != items[i]["query"] {
			t.Fatalf("item %d: answer %q; its run %s (%s, %s) answered %q", i, it.Answer, run.ID, run.Status, run.Profile, run.Answer)
		}
		runIDs[it.RunID] = true
	}
	if len(runIDs) != 50 {
		t.Fatalf("%d distinct runs for 50 items", len(runIDs))
	}

	// Pages by index and by custom_id name the same items.
	byIndex := getBatchView(t, g.URL, key, b.ID, "?after=9&limit=5")
	byID := getBatchView(t, g.URL, key, b.ID, "?after=q-40&limit=5") // q-40 is index 9
	if len(byIndex.Items) != 5 || byIndex.Items[0].Index != 10 || byIndex.Items[4].Index != 14 || !*byIndex.HasMore || byIndex.NextAfter != "q-35" {
		t.Fatalf("after=9&limit=5: %+v", byIndex.Items)
	}
	if !slices.EqualFunc(byIndex.Items, byID.Items, func(a, b batchItemView) bool { return a.CustomID == b.CustomID && a.Answer == b.Answer }) {
		t.Fatal("after=q-40 and after=9 give different pages")
	}
	if last := getBatchView(t, g.URL, key, b.ID, "?after=q-00"); len(last.Items) != 0 || *last.HasMore {
		t.Fatalf("after the last item: %+v", last)
	}
	if def := getBatchView(t, g.URL, key, b.ID, ""); len(def.Items) != 50 || *def.HasMore {
		t.Fatalf("default page: %d items", len(def.Items))
	}
	for _, q := range []string{"?limit=1001", "?limit=-1", "?limit=x", "?after=nope", "?after=-2"} {
		var e errBody
		if code, _ := call(t, "GET", g.URL+"/v1/runs/batch/"+b.ID+q, key, "", &e); code != 400 {
			t.Fatalf("GET %s: HTTP %d %+v", q, code, e)
		}
	}

	// Never more runs at once than the tenant's concurrent_runs: by the
	// runs' admission and end times in the ledger, and the limiter never
	// had to refuse one for it (the dispatcher kept to the limit itself).
	var recs []store.Usage
	for _, u := range waitUsage(t, g.URL, key, 50) {
		if runIDs[u.RunID] {
			recs = append(recs, u)
		}
	}
	if len(recs) != 50 {
		t.Fatalf("%d usage records of the batch's runs", len(recs))
	}
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, u := range recs {
		edges = append(edges, edge{u.AdmittedAt, +1}, edge{u.EndedAt, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	most, n := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	if most > limit {
		t.Fatalf("%d of the batch's runs went at once; the tenant's concurrent_runs is %d", most, limit)
	}
	if r := refusedFor(t, g, "concurrent_runs"); r != 0 {
		t.Fatalf("%v runs refused for concurrent_runs: the dispatcher went past the limit", r)
	}
	t.Logf("at most %d runs at once (limit %d)", most, limit)

	// The batch is listed.
	var list struct{ Data []batchView }
	call(t, "GET", g.URL+"/v1/runs/batch", key, "", &list)
	if len(list.Data) != 1 || list.Data[0].ID != b.ID || list.Data[0].Status != "completed" {
		t.Fatalf("list: %+v", list.Data)
	}
}

// TestBatchValidation: a batch with any bad item is refused whole, with a
// 400 naming the bad items.
func TestBatchValidation(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	_, key := newTenant(t, g, "v", `{"profiles":["instant","moa"]}`)
	ok := func(id string) map[string]any { return map[string]any{"custom_id": id, "query": "why?"} }
	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = ok(fmt.Sprint(i))
	}
	cases := []struct {
		name, body, code, param string
		says                    []string
	}{
		{"duplicate custom_id", batchBody(t, ok("a"), ok("b"), ok("a")), "duplicate_custom_id", "items[2].custom_id",
			[]string{`items[2] (custom_id "a")`, `also items[0]`}},
		{"empty query", batchBody(t, ok("a"), map[string]any{"custom_id": "b", "query": "  "}), "empty_query", "items[1].query",
			[]string{`items[1] (custom_id "b"): query is empty`}},
		{"unknown profile", batchBody(t, ok("a"), map[string]any{"custom_id": "b", "query": "q", "profile": "nope"}), "unknown_profile", "items[1].profile",
			[]string{`unknown profile "nope"`, "instant"}},
		{"profile not allowed", batchBody(t, map[string]any{"custom_id": "a", "query": "q", "profile": "vote"}), "profile_not_allowed", "items[0].profile",
			[]string{`profile "vote" is not allowed`}},
		{"too many items", batchBody(t, many...), "too_many_items", "items", []string{"1001 items", "limit is 1000"}},
		{"no items", `{"items":[]}`, "empty_batch", "items", []string{"items is empty"}},
		{"missing custom_id", batchBody(t, map[string]any{"query": "q"}), "missing_custom_id", "items[0].custom_id", []string{"custom_id is missing"}},
		{"long custom_id", batchBody(t, ok(strings.Repeat("x", 65))), "invalid_custom_id", "items[0].custom_id", []string{"65 bytes", "64"}},
		{"max_tokens", batchBody(t, map[string]any{"custom_id": "a", "query": "q", "max_tokens": -1}), "invalid_max_tokens", "items[0].max_tokens", []string{"max_tokens"}},
		{"unknown field", batchBody(t, map[string]any{"custom_id": "a", "query": "q", "stream": true}), "unknown_field", "items[0].stream", []string{`unknown field "stream"`}},
		{"several", batchBody(t, ok("a"), map[string]any{"custom_id": "b"}, ok("a"), ok("c")), "empty_query", "items[1].query",
			[]string{"2 of 4 items are invalid; nothing was queued", "items[1]", "items[2]"}},
		{"not an object", `[1,2]`, "invalid_json", "", []string{"JSON object"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var e struct {
				Error struct {
					Message, Code, Type string
					Param               *string
				}
			}
			code, _, data := rawCall(t, "POST", g.URL+"/v1/runs/batch", key, c.body)
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("%d %s", code, data)
			}
			if code != 400 || e.Error.Code != c.code || e.Error.Type != "invalid_request_error" {
				t.Fatalf("HTTP %d %s; want 400 %s", code, data, c.code)
			}
			if c.param != "" && (e.Error.Param == nil || *e.Error.Param != c.param) {
				t.Fatalf("param %v; want %q (%s)", e.Error.Param, c.param, e.Error.Message)
			}
			for _, s := range c.says {
				if !strings.Contains(e.Error.Message, s) {
					t.Fatalf("message %q does not say %q", e.Error.Message, s)
				}
			}
		})
	}
	var list struct{ Data []batchView }
	call(t, "GET", g.URL+"/v1/runs/batch", key, "", &list)
	if len(list.Data) != 0 {
		t.Fatalf("a refused batch was kept: %+v", list.Data)
	}
}

// TestBatchOfAnotherTenantIsNotFound: another tenant's batch answers
// exactly as a missing one does, for GET and cancel, and is not listed.
func TestBatchOfAnotherTenantIsNotFound(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	_, owner := newTenant(t, g, "owner", "")
	_, other := newTenant(t, g, "other", "")
	b := postBatch(t, g.URL, owner, batchBody(t, map[string]any{"custom_id": "a", "query": "why?"}))
	missing := "batch_" + strings.Repeat("0", 40)
	for _, path := range []string{"/v1/runs/batch/%s", "/v1/runs/batch/%s?after=a&limit=1"} {
		code, _, theirs := rawCall(t, "GET", g.URL+fmt.Sprintf(path, b.ID), other, "")
		code2, _, none := rawCall(t, "GET", g.URL+fmt.Sprintf(path, missing), other, "")
		if code != 404 || code2 != 404 || strings.ReplaceAll(string(theirs), b.ID, missing) != string(none) {
			t.Fatalf("another tenant's batch: %d %s; a missing one: %d %s", code, theirs, code2, none)
		}
	}
	code, _, theirs := rawCall(t, "POST", g.URL+"/v1/runs/batch/"+b.ID+"/cancel", other, "")
	_, _, none := rawCall(t, "POST", g.URL+"/v1/runs/batch/"+missing+"/cancel", other, "")
	if code != 404 || strings.ReplaceAll(string(theirs), b.ID, missing) != string(none) {
		t.Fatalf("cancel another tenant's batch: %d %s", code, theirs)
	}
	var list struct{ Data []batchView }
	call(t, "GET", g.URL+"/v1/runs/batch", other, "", &list)
	if len(list.Data) != 0 {
		t.Fatalf("another tenant lists %+v", list.Data)
	}
	waitBatch(t, g.URL, owner, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	// Unknown routes under /v1/runs/batch answer in the API's error shape.
	if code, _, data := rawCall(t, "DELETE", g.URL+"/v1/runs/batch/"+b.ID, owner, ""); code != 404 || !strings.Contains(string(data), "unknown_endpoint") {
		t.Fatalf("DELETE a batch: %d %s", code, data)
	}
	// Under /v1/runs/batch/ a name is a batch's, even "events".
	if code, _, _ := rawCall(t, "GET", g.URL+"/v1/runs/batch/events", owner, ""); code != 404 {
		t.Fatalf("GET /v1/runs/batch/events: %d", code)
	}
}

// TestBatchCancel: cancel stops the running runs and cancels the queued
// items; the runs are ordinary runs, cancelled as DELETE would; a finished
// batch cannot be cancelled; a tenant's open batches are bounded.
func TestBatchCancel(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	_, key := newTenant(t, g, "c", `{"concurrent_runs":2}`)
	var items []map[string]any
	for i := range 6 {
		items = append(items, map[string]any{"custom_id": fmt.Sprint("s", i), "query": "a long one", "profile": "slow"})
	}
	b := postBatch(t, g.URL, key, batchBody(t, items...))
	waitBatch(t, g.URL, key, b.ID, "two running", func(v batchView) bool { return v.Counts.Running == 2 })
	running := getBatchView(t, g.URL, key, b.ID, "").Items
	var runs []string
	for _, it := range running {
		if it.Status == "running" {
			runs = append(runs, it.RunID)
			waitTokens(t, g.URL, key, it.RunID) // a run of the batch streams like any run
		}
	}
	if len(runs) != 2 {
		t.Fatalf("running items: %+v", running)
	}

	var v batchView
	if code, _ := call(t, "POST", g.URL+"/v1/runs/batch/"+b.ID+"/cancel", key, "", &v); code != 200 {
		t.Fatalf("cancel: HTTP %d", code)
	}
	v = waitBatch(t, g.URL, key, b.ID, "cancelled", func(v batchView) bool { return v.Status == "cancelled" })
	if v.Counts != (batchCounts{Cancelled: 6}) || v.CancelledAt == nil || v.EndedAt == nil {
		t.Fatalf("cancelled batch: %+v", v)
	}
	for _, it := range getBatchView(t, g.URL, key, b.ID, "").Items {
		if it.Status != "cancelled" || it.Error == nil || it.Error.Code != "cancelled" {
			t.Fatalf("item after cancel: %+v", it)
		}
		if (it.RunID != "") != slices.Contains(runs, it.RunID) {
			t.Fatalf("item %s has run %q; the running ones were %v", it.CustomID, it.RunID, runs)
		}
	}
	for _, id := range runs {
		var run runView
		waitStatusKey(t, g.URL, key, id, "cancelled", &run)
	}
	// Again: still cancelled, not an error.
	if code, _ := call(t, "POST", g.URL+"/v1/runs/batch/"+b.ID+"/cancel", key, "", &v); code != 200 || v.Status != "cancelled" {
		t.Fatalf("cancel again: HTTP %d %s", code, v.Status)
	}

	// A finished batch: 409.
	done := postBatch(t, g.URL, key, batchBody(t, map[string]any{"custom_id": "x", "query": "q"}))
	waitBatch(t, g.URL, key, done.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	var e errBody
	if code, _ := call(t, "POST", g.URL+"/v1/runs/batch/"+done.ID+"/cancel", key, "", &e); code != 409 || e.Error.Code != "batch_finished" {
		t.Fatalf("cancel a completed batch: %d %+v", code, e)
	}

	// Open batches are bounded per tenant: the next one is refused, and
	// nothing of it is kept.
	var open []string
	for i := range maxOpenBatches {
		open = append(open, postBatch(t, g.URL, key, batchBody(t, map[string]any{"custom_id": fmt.Sprint(i), "query": "q", "profile": "slow"})).ID)
	}
	code, h, data := rawCall(t, "POST", g.URL+"/v1/runs/batch", key, batchBody(t, map[string]any{"custom_id": "x", "query": "q"}))
	if code != 429 || !strings.Contains(string(data), "open_batches") || h.Get("Retry-After") == "" {
		t.Fatalf("batch %d: %d %s", maxOpenBatches+1, code, data)
	}
	for _, id := range open {
		if code, _ := call(t, "POST", g.URL+"/v1/runs/batch/"+id+"/cancel", key, "", nil); code != 200 {
			t.Fatalf("cancel: %d", code)
		}
		waitBatch(t, g.URL, key, id, "cancelled", func(v batchView) bool { return v.Status == "cancelled" })
	}
	postBatch(t, g.URL, key, batchBody(t, map[string]any{"custom_id": "x", "query": "q"})) // room again
}

// TestBatchResumesAfterRestart: a gateway that shuts down with a batch
// half done leaves it in its store; a gateway started on the same store
// finishes it — the items whose runs the shutdown cut off run again.
func TestBatchResumesAfterRestart(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	_, key := newTenant(t, g, "r", `{"concurrent_runs":2}`)
	var items []map[string]any
	for i := range 5 {
		items = append(items, map[string]any{"custom_id": fmt.Sprint("r", i), "query": fmt.Sprint("question ", i), "profile": "slow"})
	}
	b := postBatch(t, g.URL, key, batchBody(t, items...))
	before := waitBatch(t, g.URL, key, b.ID, "two running", func(v batchView) bool { return v.Counts.Running == 2 })
	cut := map[string]string{}
	for _, it := range getBatchView(t, g.URL, key, b.ID, "").Items {
		if it.Status == "running" {
			cut[it.CustomID] = it.RunID
		}
	}

	// Shut the first gateway down as cmd/gateway does on a signal.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.Engine.Shutdown(ctx)
	if err := g.Server.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := g.Tenancy.Store()
	if counts, err := st.BatchCounts(b.ID); err != nil || counts[store.ItemQueued] != 5 {
		t.Fatalf("after the shutdown the store has %v (%v); want 5 queued (before: %+v)", counts, err, before.Counts)
	}

	// A new gateway on the same store, where "slow" is fast.
	g2 := startGateway(t, batchProfilesFast, func(c *Config, _ *actors.Config) { c.Tenancy = g.Tenancy })
	done := waitBatch(t, g2.URL, key, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	if done.Counts != (batchCounts{Completed: 5}) {
		t.Fatalf("resumed batch: %+v", done)
	}
	for _, it := range getBatchView(t, g2.URL, key, b.ID, "").Items {
		want := 1
		if old, ok := cut[it.CustomID]; ok {
			want = 2 // its first run was cut off
			var run runView
			if code, _ := call(t, "GET", g2.URL+"/v1/runs/"+old, key, "", &run); code != 200 || run.Status != "cancelled" {
				t.Fatalf("the cut-off run %s: %d %s", old, code, run.Status)
			}
			if it.RunID == old {
				t.Fatalf("item %s kept its cut-off run", it.CustomID)
			}
		}
		var run runView
		call(t, "GET", g2.URL+"/v1/runs/"+it.RunID, key, "", &run)
		if it.Status != "completed" || it.Attempts != want || it.Answer == "" || run.Answer != it.Answer {
			t.Fatalf("item %+v; its run answered %q (want %d attempts)", it, run.Answer, want)
		}
	}
}

// TestBatchWaitsAndFailsAsAdmissionSays: a start refused for a limit that
// passes (the tenant's own run holds its one slot) waits and is tried
// again; one refused for good (the budget is spent) fails its item with
// that error.
func TestBatchWaitsAndFailsAsAdmissionSays(t *testing.T) {
	g := startTenantGatewayProfiles(t, batchProfiles, nil)
	_, key := newTenant(t, g, "one", `{"concurrent_runs":1}`)
	code, _, run, _ := postRun(t, g.URL, key, "slow")
	if code != http.StatusCreated {
		t.Fatalf("run: %d", code)
	}
	b := postBatch(t, g.URL, key, batchBody(t, map[string]any{"custom_id": "a", "query": "q"}, map[string]any{"custom_id": "b", "query": "q"}))
	waitUntil(t, "a refused start", func() bool { return refusedFor(t, g, "concurrent_runs") >= 1 })
	if v := getBatchView(t, g.URL, key, b.ID, "?limit=0"); v.Counts != (batchCounts{Queued: 2}) {
		t.Fatalf("while the slot is held: %+v", v.Counts)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+run.ID, key, "", nil); code != 200 {
		t.Fatalf("cancel the run: %d", code)
	}
	done := waitBatch(t, g.URL, key, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	if done.Counts != (batchCounts{Completed: 2}) {
		t.Fatalf("after the slot was freed: %+v", done.Counts)
	}

	_, poor := newTenant(t, g, "poor", `{"token_budget":10}`)
	b = postBatch(t, g.URL, poor, batchBody(t, map[string]any{"custom_id": "a", "query": "q"}, map[string]any{"custom_id": "b", "query": "q", "profile": "moa"}))
	done = waitBatch(t, g.URL, poor, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	if done.Counts != (batchCounts{Failed: 2}) {
		t.Fatalf("a spent budget: %+v", done.Counts)
	}
	for _, it := range getBatchView(t, g.URL, poor, b.ID, "").Items {
		if it.Status != "failed" || it.RunID != "" || it.Error == nil || it.Error.Code != "token_budget" || !strings.Contains(it.Error.Message, "budget") {
			t.Fatalf("item refused for its budget: %+v %+v", it, it.Error)
		}
	}
}

// Batch items take budgets like POST /v1/runs: batch-wide fields apply to
// every item that does not set its own (field by field); an item its
// budget cannot pay for is refused with the 422's code, message, type and
// param (the same message as POST /v1/runs gives), while the others run on
// their plans; a bad budget refuses the whole batch with a 400 naming the
// item's field; a batch whose every item is refused ends at once.
func TestBatchItemsWithBudgets(t *testing.T) {
	g := startTenantGatewayProfiles(t, budgetProfiles, nil)
	_, key := newTenant(t, g, "budgeted", `{}`)
	const over = `{"profile":"tiered","query":"What is 2+2?","min_quality":"high","max_cost_usd":0.001}`
	var direct struct{ Error apiError }
	if code, _ := call(t, "POST", g.URL+"/v1/runs", key, over, &direct); code != http.StatusUnprocessableEntity || direct.Error.Code != "over_cost_cap" {
		t.Fatalf("POST /v1/runs over its cap: HTTP %d %+v", code, direct.Error)
	}
	body, err := json.Marshal(map[string]any{
		"min_quality": "medium", "max_cost_usd": 1, // batch-wide
		"items": []map[string]any{
			{"custom_id": "ok", "profile": "tiered", "query": "What is 2+2?"},
			{"custom_id": "over", "profile": "tiered", "query": "What is 2+2?", "min_quality": "high", "max_cost_usd": 0.001},
			{"custom_id": "late", "profile": "tiered", "query": "What is 2+2?", "min_quality": 5, "max_latency_ms": 20},
			{"custom_id": "down", "profile": "tiered", "query": "What is 2+2?", "min_quality": "high", "max_cost_usd": 0.003, "on_budget": "downgrade"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := postBatch(t, g.URL, key, string(body))
	if b.Status != "in_progress" || b.Total != 4 || b.Counts.Queued != 2 || b.Counts.Failed != 2 {
		t.Fatalf("created batch: %+v", b)
	}
	done := waitBatch(t, g.URL, key, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	if done.Counts != (batchCounts{Completed: 2, Failed: 2}) {
		t.Fatalf("ended batch: %+v", done)
	}
	items := allItems(t, g.URL, key, b.ID, 10)
	byID := map[string]batchItemView{}
	for _, it := range items {
		byID[it.CustomID] = it
	}
	o := byID["over"]
	if o.Status != "failed" || o.RunID != "" || o.Error == nil || o.Error.Code != "over_cost_cap" || o.Error.Message != direct.Error.Message ||
		o.Error.Type != "invalid_request_error" || o.Error.Param == nil || *o.Error.Param != "max_cost_usd" || o.Error.Status != 422 {
		t.Fatalf("over: %+v (error %+v); want POST /v1/runs's 422: %+v", o, o.Error, direct.Error)
	}
	if l := byID["late"]; l.Status != "failed" || l.Error == nil || l.Error.Code != "over_latency_cap" || *l.Error.Param != "max_latency_ms" ||
		!strings.Contains(l.Error.Message, "max_latency_ms 20") {
		t.Fatalf("late: %+v (error %+v)", l, l.Error)
	}
	models := func(id string) []modelChoiceView {
		t.Helper()
		var run runView
		if code, _ := call(t, "GET", g.URL+"/v1/runs/"+byID[id].RunID, key, "", &run); code != 200 || run.Status != "completed" {
			t.Fatalf("%s's run %s: HTTP %d %s", id, byID[id].RunID, code, run.Status)
		}
		if run.Budget == nil {
			t.Fatalf("%s's run has no budget", id)
		}
		return run.Models
	}
	// ok ran under the batch's budget: mid, the cheapest meeting medium.
	if m := models("ok"); len(m) != 2 || m[0].Model != "mid" || m[1].Model != "mid" {
		t.Fatalf("ok's choices: %+v", m)
	}
	// down was downgraded step by step to fit its own cap.
	if m := models("down"); len(m) != 4 || !m[3].Downgraded {
		t.Fatalf("down's choices: %+v", m)
	}

	// A bad budget, the batch's or an item's, is a 400 and queues nothing.
	for raw, param := range map[string]string{
		`{"max_cost_usd":-1,"items":[{"custom_id":"a","query":"q"}]}`:                             "max_cost_usd",
		`{"items":[{"custom_id":"a","query":"q"},{"custom_id":"b","query":"q","on_budget":"x"}]}`: "items[1].on_budget",
		`{"on_budget":"downgrade","items":[{"custom_id":"a","query":"q"}]}`:                       "on_budget", // the batch's own
	} {
		var e struct{ Error apiError }
		if code, _ := call(t, "POST", g.URL+"/v1/runs/batch", key, raw, &e); code != http.StatusBadRequest || e.Error.Param == nil || *e.Error.Param != param {
			t.Errorf("%s: HTTP %d %+v, want 400 naming %s", raw, code, e.Error, param)
		}
	}
	// Every item over its cap: the batch ends at once.
	all := postBatch(t, g.URL, key, `{"min_quality":"high","max_cost_usd":0.001,"items":[{"custom_id":"a","profile":"tiered","query":"q"}]}`)
	if all.Status != "completed" || all.Counts != (batchCounts{Failed: 1}) || all.EndedAt == nil {
		t.Fatalf("a batch of refused items: %+v", all)
	}
}
