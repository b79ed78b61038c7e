package gateway

import (
	"fmt"
	"strings"
	"testing"
)

// uiRoutingProfiles: two chains, routing by tier, and a profile whose
// unseeded runs are cached (so the page's second identical question is a
// cache hit).
const uiRoutingProfiles = `
default_profile: quick
providers:
  simfast: {kind: sim, sim: {ttft: 1ms, itl: 1ms, output_tokens: 40}}
profiles:
  quick:
    description: Simulated chain (UI test).
    provider: simfast
    cache_unseeded: true
    stages:
      generator: {model: sim-small, max_tokens: 100}
      refiner:   {model: sim-medium, max_tokens: 100}
      validator: {model: sim-small, max_tokens: 100}
      curator:   {model: sim-large, max_tokens: 100}
  thorough:
    description: Another simulated chain (UI test).
    provider: simfast
    stages:
      generator: {model: sim-large, max_tokens: 100}
      refiner:   {model: sim-large, max_tokens: 100}
      validator: {model: sim-large, max_tokens: 100}
      curator:   {model: sim-large, max_tokens: 100}
routing:
  simple: quick
  standard: quick
  complex: thorough
`

// TestUIShowsRoutingAndCacheHits: "auto" is offered with what it maps to;
// a run asked for with it shows the tier, the profile and why, as the run
// resource says; a second identical question answered from the response
// cache is marked cached, naming the run it replays.
func TestUIShowsRoutingAndCacheHits(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, profiles: uiRoutingProfiles})
	b := newUIBrowser(t)

	question := "Write a Go function that parses a CSV file, validates every row against a schema, and explain step by step how to test it, including the edge cases for quoted fields and multi-line values."
	b.startRun(t, f.URL, "auto", question)
	b.waitFor(t, "the run to end", uiRunEnded)
	desc := uiEval[string](t, b, `document.querySelector('#profile-desc').textContent`)
	if !strings.Contains(desc, "complex → thorough") || !strings.Contains(desc, "simple → quick") {
		t.Errorf("the auto profile's description: %q", desc)
	}
	st := b.state(t)
	run := f.run(t, st.RunID)
	if run.Routing == nil {
		t.Fatalf("the run asked for with auto has no routing: %+v", run)
	}
	if run.Profile != run.Routing.Profile {
		t.Errorf("run profile %q, routing says %q", run.Profile, run.Routing.Profile)
	}
	shown := uiEval[string](t, b, `document.querySelector('#run-routing').textContent`)
	tier := uiEval[string](t, b, `document.querySelector('#run-routing').dataset.tier`)
	prof := uiEval[string](t, b, `document.querySelector('#run-routing').dataset.profile`)
	if tier != run.Routing.Tier || prof != run.Routing.Profile || !strings.Contains(shown, run.Routing.Tier+" question → "+run.Routing.Profile) {
		t.Errorf("routing on the page: %q (tier %q, profile %q); the run's: %+v", shown, tier, prof, run.Routing)
	}
	for _, r := range run.Routing.Reasons {
		if !strings.Contains(shown, r) {
			t.Errorf("the page does not give the reason %q: %q", r, shown)
		}
	}
	if hidden := uiEval[bool](t, b, `document.querySelector('#run-cached').hidden`); !hidden || run.Cached {
		t.Errorf("first run: cached badge hidden %v, run cached %v", hidden, run.Cached)
	}

	// The same question on a cacheable profile, twice: the second is a hit.
	b.startRun(t, f.URL, "quick", "Why is the sky blue?")
	b.waitFor(t, "the first quick run to end", uiRunEnded)
	first := b.state(t).RunID
	if uiEval[string](t, b, `document.querySelector('#run-routing').textContent`) != "" {
		t.Error("a run of a named profile shows routing")
	}
	b.startRun(t, f.URL, "quick", "Why is the sky blue?")
	b.waitFor(t, "the second run", fmt.Sprintf(`document.querySelector('#run-id').textContent !== %q`, first))
	b.waitFor(t, "the second run to end", uiRunEnded)
	second := f.run(t, b.state(t).RunID)
	if !second.Cached || second.CachedFr != first {
		t.Fatalf("second identical run: cached %v from %q, want from %s", second.Cached, second.CachedFr, first)
	}
	b.waitFor(t, "the cached badge", `!document.querySelector('#run-cached').hidden`)
	if from := uiEval[string](t, b, `document.querySelector('#run-cached').dataset.cachedFrom`); from != first {
		t.Errorf("the cached badge names %q, want %s", from, first)
	}
	b.noProblems(t)
}
