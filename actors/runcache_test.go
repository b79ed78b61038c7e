package actors

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

const cacheProfiles = `
providers:
  sim:  {kind: sim, sim: {output_tokens: 40}}
  slow: {kind: sim, sim: {ttft: 20ms, itl: 2ms, output_tokens: 60}}
profiles:
  sampled:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  greedy:
    provider: sim
    stages: {generator: {model: g, temperature: 0}, refiner: {model: r, temperature: 0}, validator: {model: v, temperature: 0}, curator: {model: c, temperature: 0}}
  allowed:
    provider: sim
    cache_unseeded: true
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  slow:
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  near:
    provider: sim
    cache_near_duplicates: true
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// Which requests may be cached, and what their key covers.
func TestCacheKey(t *testing.T) {
	c, err := stagework.ParseConfig([]byte(cacheProfiles))
	if err != nil {
		t.Fatal(err)
	}
	prof := func(n string) *stagework.Profile { p, _ := c.Profile(n); return p }
	base := RunRequest{Tenant: "a", Profile: "sampled", Query: "What is  Raft?", Seed: 7}
	k0, ok := cacheKey(base, prof("sampled"))
	if !ok {
		t.Fatal("a seeded request is cacheable")
	}
	same := base
	same.Query = "  What is Raft? "
	if k, _ := cacheKey(same, prof("sampled")); k != k0 {
		t.Fatal("whitespace around and inside the question changes the key")
	}
	for name, r := range map[string]RunRequest{
		"tenant":     {Tenant: "b", Profile: "sampled", Query: base.Query, Seed: 7},
		"seed":       {Tenant: "a", Profile: "sampled", Query: base.Query, Seed: 8},
		"question":   {Tenant: "a", Profile: "sampled", Query: "What is Paxos?", Seed: 7},
		"max_tokens": {Tenant: "a", Profile: "sampled", Query: base.Query, Seed: 7, MaxTokens: 9},
		"history":    {Tenant: "a", Profile: "sampled", Query: base.Query, Seed: 7, History: []stagework.Message{{Role: "user", Content: "hi"}}},
	} {
		if k, ok := cacheKey(r, prof("sampled")); !ok || k == k0 {
			t.Errorf("a different %s gives the same key (or none)", name)
		}
	}
	if _, ok := cacheKey(RunRequest{Tenant: "a", Profile: "greedy", Query: "q", Seed: 7}, prof("allowed")); !ok {
		t.Error("seeded request on a profile that allows it: not cacheable")
	}
	for name, c := range map[string]struct {
		r    RunRequest
		p    string
		want bool
	}{
		"unseeded, sampling":             {RunRequest{Tenant: "a", Query: "q"}, "sampled", false},
		"unseeded, temperature 0":        {RunRequest{Tenant: "a", Query: "q"}, "greedy", true},
		"unseeded, cache_unseeded":       {RunRequest{Tenant: "a", Query: "q"}, "allowed", true},
		"seeded but the caller opts out": {RunRequest{Tenant: "a", Query: "q", Seed: 3, NoCache: true}, "greedy", false},
	} {
		if _, ok := cacheKey(c.r, prof(c.p)); ok != c.want {
			t.Errorf("%s: cacheable %v, want %v", name, ok, c.want)
		}
	}
}

// The kept logs are bounded in bytes (least recently used out first) and
// expire.
func TestRunCacheBounds(t *testing.T) {
	ev := func(n int) []*messages.RunEvent {
		return []*messages.RunEvent{{Seq: 1, Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{Answer: string(make([]byte, n))}}}}
	}
	now := time.Unix(1000, 0)
	c := newRunCache(RunCacheConfig{MaxBytes: 3000, MaxEntryBytes: 1500, TTL: time.Minute})
	c.now = func() time.Time { return now }
	if c.put("huge", "r0", ev(2000)) {
		t.Fatal("a log above MaxEntryBytes was kept")
	}
	for i := 1; i <= 3; i++ {
		c.put(fmt.Sprint("k", i), fmt.Sprint("r", i), ev(1000))
	}
	if _, ok := c.get("k1"); ok {
		t.Fatal("the least recently used log stayed past MaxBytes")
	}
	if n, b := c.stats(); n != 2 || b > 3000 {
		t.Fatalf("%d logs, %d bytes", n, b)
	}
	now = now.Add(61 * time.Second)
	if _, ok := c.get("k3"); ok {
		t.Fatal("an expired log was served")
	}
	c.put("k4", "r4", ev(100))
	c.clear() // the memory budget's shedding
	if n, b := c.stats(); n != 0 || b != 0 {
		t.Fatalf("after clear: %d logs, %d bytes", n, b)
	}
	if _, ok := c.get("k4"); ok {
		t.Fatal("a cleared log was served")
	}
}

func waitRun(t *testing.T, h *Hub) []*messages.RunEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		t.Fatalf("run %s did not end: %v", h.RunID, err)
	}
	return h.Events(1)
}

// A repeated seeded request is answered from the kept log: a new run, the
// same events, its end marked cached, no coordinator started.
func TestCachedRunReplaysTheLog(t *testing.T) {
	e, _, _ := newProfileEngine(t, cacheProfiles, nil)
	req := RunRequest{Tenant: "a", Profile: "sampled", Query: "How does Raft elect a leader?", Seed: 11}
	first, err := e.StartRun(req)
	if err != nil {
		t.Fatal(err)
	}
	orig := waitRun(t, first)
	second, err := e.StartRun(req)
	if err != nil {
		t.Fatal(err)
	}
	again := waitRun(t, second)
	if second.RunID == first.RunID || second.CachedFrom() != first.RunID {
		t.Fatalf("second run %s cached from %q, want a new run replaying %s", second.RunID, second.CachedFrom(), first.RunID)
	}
	if len(again) != len(orig) {
		t.Fatalf("replayed %d events, the run had %d", len(again), len(orig))
	}
	for i, ev := range again {
		if ev.Seq != uint64(i+1) || ev.RunId != second.RunID {
			t.Fatalf("event %d: seq %d run %q", i, ev.Seq, ev.RunId)
		}
	}
	rc := again[len(again)-1].GetRunCompleted()
	if rc == nil || !rc.Cached || rc.CachedFrom != first.RunID || rc.Answer != orig[len(orig)-1].GetRunCompleted().GetAnswer() {
		t.Fatalf("replayed end: %v", again[len(again)-1])
	}
	if got := testutil.ToFloat64(e.metrics.coordinators); got != 1 {
		t.Fatalf("%v coordinators started, want 1 (the replay calls no model)", got)
	}
	if got := testutil.ToFloat64(e.metrics.runCache.WithLabelValues("hit")); got != 1 {
		t.Fatalf("cache hits %v, want 1", got)
	}
	// Opting out runs the models again.
	req.NoCache = true
	third, err := e.StartRun(req)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, third)
	if third.CachedFrom() != "" || testutil.ToFloat64(e.metrics.coordinators) != 2 {
		t.Fatal("a request that opted out was served from the cache")
	}
}

// 100 identical requests at once share one run: one coordinator, every
// run completes with the same answer; cancelling one of them ends only it.
func TestIdenticalRequestsShareOneRun(t *testing.T) {
	e, _, _ := newProfileEngine(t, cacheProfiles, func(c *Config) { c.MaxActiveRuns = 200 })
	req := RunRequest{Tenant: "a", Profile: "slow", Query: "Why is the sky blue?", Seed: 5}
	const n = 100
	hubs := make([]*Hub, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := e.StartRun(req)
			if err != nil {
				errs <- err
				return
			}
			hubs[i] = h
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var leader *Hub
	for _, h := range hubs {
		if h.CachedFrom() == "" {
			if leader != nil {
				t.Fatalf("two runs called the models: %s and %s", leader.RunID, h.RunID)
			}
			leader = h
		}
	}
	if leader == nil {
		t.Fatal("no run called the models")
	}
	var quitter *Hub
	for _, h := range hubs {
		if h != leader {
			quitter = h
			break
		}
	}
	if err := e.Cancel(quitter.RunID, "not needed"); err != nil {
		t.Fatal(err)
	}
	want := waitRun(t, leader)
	answer := want[len(want)-1].GetRunCompleted().GetAnswer()
	if answer == "" {
		t.Fatalf("the shared run ended with %v", want[len(want)-1])
	}
	for _, h := range hubs {
		evs := waitRun(t, h)
		last := evs[len(evs)-1]
		if h == quitter {
			if last.GetRunCancelled() == nil {
				t.Fatalf("the cancelled follower ended with %v", last)
			}
			continue
		}
		if last.GetRunCompleted().GetAnswer() != answer {
			t.Fatalf("run %s ended with %v, want the shared answer", h.RunID, last)
		}
	}
	if got := testutil.ToFloat64(e.metrics.coordinators); got != 1 {
		t.Fatalf("%v coordinators started for %d identical requests, want 1", got, n)
	}
}

// BenchmarkCacheHitFirstEvent: from StartRun of a request whose identical
// run is kept to its first event in the new run's hub, in one process
// (goal p99 ≤ 1 ms). go test ./actors -run '^$' -bench BenchmarkCacheHitFirstEvent -benchtime 2000x
func BenchmarkCacheHitFirstEvent(b *testing.B) {
	e, _, _ := newProfileEngine(b, cacheProfiles, func(c *Config) { c.MaxActiveRuns = 1 << 20 })
	req := RunRequest{Tenant: "a", Profile: "sampled", Query: "How does Raft elect a leader?", Seed: 11}
	h, err := e.StartRun(req)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		b.Fatal(err)
	}
	for e.cache == nil || func() bool { n, _ := e.cache.stats(); return n == 0 }() {
		time.Sleep(time.Millisecond)
	}
	lat := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		h, err := e.StartRun(req)
		if err != nil {
			b.Fatal(err)
		}
		sub := h.Subscribe(1)
		if _, err := sub.Next(ctx, nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(time.Since(t0).Microseconds()))
		sub.Close()
		if h.CachedFrom() == "" {
			b.Fatal("not served from the cache")
		}
		if err := h.WaitDone(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(quantile(lat, 0.5), "p50-µs")
	b.ReportMetric(quantile(lat, 0.99), "p99-µs")
}

// A profile that opts in answers a near-duplicate question from a kept
// run (the same seed and settings); a question with another name or a
// negation is not one; a profile that does not opt in needs the exact
// question.
func TestNearDuplicateQuestionFromTheCache(t *testing.T) {
	e, _, _ := newProfileEngine(t, cacheProfiles, nil)
	run := func(profile, q string) *Hub {
		t.Helper()
		h, err := e.StartRun(RunRequest{Tenant: "a", Profile: profile, Query: q, Seed: 4})
		if err != nil {
			t.Fatal(err)
		}
		waitRun(t, h)
		return h
	}
	first := run("near", "How does Raft elect a leader?")
	// The log is kept by the run's end hook, just after its end is logged.
	// Kept, then indexed for near duplicates (two steps: wait for both).
	pollUntilTrue(t, "the first run's log kept and indexed", func() bool {
		n, _ := e.cache.stats()
		e.cache.mu.Lock()
		defer e.cache.mu.Unlock()
		indexed := 0
		for _, entries := range e.cache.near {
			indexed += len(entries)
		}
		return n == 1 && indexed == 1
	})
	for _, c := range []struct {
		q         string
		fromFirst bool
	}{
		{"how does raft elect its leader", true},
		{"How does Paxos elect a leader?", false},
		{"How does Raft not elect a leader?", false},
	} {
		h := run("near", c.q)
		if got := h.CachedFrom() == first.RunID; got != c.fromFirst {
			t.Errorf("%q: cached from the first run %v, want %v (cached from %q)", c.q, got, c.fromFirst, h.CachedFrom())
		}
	}
	plain := run("sampled", "How does Raft elect a leader?")
	pollUntilTrue(t, "the plain run's log kept", func() bool { n, _ := e.cache.stats(); return n >= 4 }) // first, Paxos, "not", plain
	if h := run("sampled", "how does raft elect its leader"); h.CachedFrom() != "" {
		t.Errorf("a profile without cache_near_duplicates answered a reworded question from %s (%s)", h.CachedFrom(), plain.RunID)
	}
	if got := testutil.ToFloat64(e.metrics.runCache.WithLabelValues("near")); got != 1 {
		t.Fatalf("near hits %v, want 1", got)
	}
}

// An owner's claims: the first run claiming a key is the one in flight for
// it; a stale claim (its run ended without an answer) is replaced; a
// release or the key's log being kept drops it; claims expire and are
// bounded.
func TestRunCacheClaims(t *testing.T) {
	c := newRunCache(RunCacheConfig{})
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	if got := c.claim("k", "", ""); got != "" {
		t.Fatalf("a lookup without a claim recorded %q", got)
	}
	if got := c.claim("k", "run_a", ""); got != "run_a" {
		t.Fatalf("first claim: %q", got)
	}
	if got := c.claim("k", "run_b", ""); got != "run_a" {
		t.Fatalf("second claim: %q; want the run in flight, run_a", got)
	}
	if got := c.claim("k", "run_b", "run_a"); got != "run_b" {
		t.Fatalf("claim replacing the stale run_a: %q", got)
	}
	c.release("k", "run_a") // not the claim any more: kept
	if got := c.claim("k", "", ""); got != "run_b" {
		t.Fatalf("after releasing another run: %q", got)
	}
	c.release("k", "run_b")
	if got := c.claim("k", "", ""); got != "" {
		t.Fatalf("after release: %q", got)
	}
	c.claim("k", "run_c", "")
	c.put("k", "run_c", []*messages.RunEvent{{Seq: 1, Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{}}}})
	if got := c.claim("k", "", ""); got != "" {
		t.Fatalf("after its log was kept: %q", got)
	}
	c.claim("old", "run_d", "")
	now = now.Add(claimTTL)
	if got := c.claim("old", "run_e", ""); got != "run_e" {
		t.Fatalf("an expired claim was kept: %q", got)
	}
	for i := range maxClaims {
		c.claim(fmt.Sprint("key-", i), "run", "")
	}
	if got := c.claim("one-more", "run_f", ""); got != "" || len(c.claims) > maxClaims {
		t.Fatalf("a claim beyond maxClaims live ones: %q, %d kept", got, len(c.claims))
	}
	now = now.Add(claimTTL)
	if got := c.claim("one-more", "run_f", ""); got != "run_f" {
		t.Fatalf("expired claims were not made room for: %q", got)
	}
}
