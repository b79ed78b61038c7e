package actors

import (
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// extended is base with extraYAML's providers and profiles added, as
// AddProfiles wants it: base's maps are not written, its profiles shared.
func extended(t *testing.T, base *stagework.Config, extraYAML string) (*stagework.Config, map[string]stagework.Provider) {
	t.Helper()
	extra, err := stagework.ParseConfig([]byte(extraYAML))
	if err != nil {
		t.Fatal(err)
	}
	next := *base
	next.Providers, next.Profiles, next.Prices = maps.Clone(base.Providers), maps.Clone(base.Profiles), maps.Clone(base.Prices)
	maps.Copy(next.Providers, extra.Providers)
	maps.Copy(next.Profiles, extra.Profiles)
	if err := next.Validate(); err != nil {
		t.Fatal(err)
	}
	clients, err := BuildProviders(extra, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &next, clients
}

const extraProfiles = `
providers:
  extra: {kind: sim, sim: {output_tokens: 30}}
profiles:
  added:
    provider: extra
    stages: {generator: {model: xg}, refiner: {model: xr}, validator: {model: xv}, curator: {model: xc}}
`

// A profile on a new endpoint added while runs go is used by the next run
// at once; runs started before and during the addition complete on the
// profiles they asked for. Run with -race: the runs read the profiles and
// clients while they are swapped.
func TestAddProfilesWhileRunsGo(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	if _, err := e.StartRun(RunRequest{Tenant: "t", Profile: "added", Query: "q"}); err == nil {
		t.Fatal("profile added started before it was added")
	}
	base := e.Stages()
	next, clients := extended(t, base, extraProfiles)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "What changes?", Seed: int64(i + 1)})
			if err != nil {
				errs <- err
				return
			}
			if evs := collect(t, h, 1); terminal(evs).GetRunCompleted() == nil {
				errs <- errors.New("a run of instant did not complete: " + terminal(evs).String())
			}
		}()
	}
	if err := e.AddProfiles(base, next, clients); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if e.Stages() != next {
		t.Fatal("Stages is not the added configuration")
	}
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "added", Query: "And now?", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run of the added profile: %v", terminal(evs))
	}
	var models []string
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil {
			models = append(models, s.Model)
		}
	}
	if got := strings.Join(models, " "); got != "xg xr xv xc" {
		t.Fatalf("stages ran on %s, want the added endpoint's models", got)
	}
	if _, ok := e.breakerStates()["extra"]; !ok {
		t.Error("the added endpoint's breaker is not reported")
	}
}

// AddProfiles only adds: a replaced or removed profile, a changed
// endpoint, a step without a client, a stale base, and an engine whose runs
// execute elsewhere are refused, and nothing changes.
func TestAddProfilesOnlyAdds(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	base := e.Stages()
	next, clients := extended(t, base, extraProfiles)

	replaced, _ := extended(t, base, extraProfiles)
	cp := *replaced.Profiles["instant"]
	replaced.Profiles["instant"] = &cp
	removed, _ := extended(t, base, extraProfiles)
	delete(removed.Profiles, "slow")
	changed, _ := extended(t, base, extraProfiles)
	pc := changed.Providers["sim"]
	pc.Sim.OutputTokens++
	changed.Providers["sim"] = pc
	for name, try := range map[string]func() error{
		"replaced profile": func() error { return e.AddProfiles(base, replaced, clients) },
		"removed profile":  func() error { return e.AddProfiles(base, removed, clients) },
		"changed provider": func() error { return e.AddProfiles(base, changed, clients) },
		"no client":        func() error { return e.AddProfiles(base, next, nil) },
		"client of a provider in use": func() error {
			return e.AddProfiles(base, next, map[string]stagework.Provider{"sim": clients["extra"], "extra": clients["extra"]})
		},
		"stale base": func() error {
			other, _ := extended(t, base, extraProfiles)
			return e.AddProfiles(other, next, clients)
		},
		"runs elsewhere": func() error {
			return (&Engine{placer: &roundRobin{nodes: []string{"x"}}}).AddProfiles(base, next, clients)
		},
	} {
		if err := try(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if e.Stages() != base {
			t.Fatalf("%s: the profiles changed", name)
		}
	}
	if err := e.AddProfiles(base, next, clients); err != nil {
		t.Fatal(err)
	}
	if err := e.AddProfiles(base, next, clients); !errors.Is(err, ErrCatalogChanged) {
		t.Fatalf("the same base again: %v", err)
	}
}
