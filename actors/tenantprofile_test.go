package actors

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// ownProfile is a tenant's own profile on testProfiles' endpoints.
const ownProfile = `{"provider": "sim", "stages": {"generator": {"model": "own-g", "max_tokens": 30}, "refiner": {"model": "own-r"},
	"validator": {"model": "own-v"}, "curator": {"model": "own-c", "max_tokens": 20}}}`

// A run carrying its tenant's own profile runs it (its models, its
// reservation), a resume of it too, and a definition that does not check
// against this process's profile file is refused.
func TestRunWithItsTenantsOwnProfile(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	req := RunRequest{Tenant: "t", Profile: "mine", ProfileDefinition: []byte(ownProfile), Query: "What is a mutex?", Seed: 5}
	h, err := e.StartRun(req)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	var models []string
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil {
			models = append(models, s.Model)
		}
	}
	if got := strings.Join(models, " "); got != "own-g own-r own-v own-c" || terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("stages started on %q; end %v", got, terminal(evs))
	}
	// Metrics label it "tenant-own", never by the tenant's name for it.
	if got := testutil.ToFloat64(e.metrics.runsEnded.WithLabelValues(TenantProfileLabel, "completed")); got != 1 {
		t.Fatalf("runs ended {profile=%s} = %v, want 1", TenantProfileLabel, got)
	}
	if got := testutil.CollectAndCount(e.metrics.runsEnded); got != 1 {
		t.Fatalf("runs ended has %d series, want 1", got)
	}
	if p, ok := e.RunProfile(h); !ok || p.Name != "mine" || p.Stages[0].Model != "own-g" {
		t.Fatalf("RunProfile: %+v %v", p, ok)
	}
	// Its reservation counts its own steps: 30 + 2×1024 + 20 output tokens.
	floor, err := e.ReservationFloor(req)
	if err != nil || floor != 30+2*stagework.DefaultMaxTokens+20 {
		t.Fatalf("ReservationFloor = %d, %v", floor, err)
	}
	if n, err := e.Reservation(req); err != nil || n <= floor {
		t.Fatalf("Reservation = %d, %v", n, err)
	}

	// Failover: a resumed run still runs the tenant's profile.
	cut := 0
	for i, ev := range evs {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_VALIDATOR {
			cut = i + 2
			break
		}
	}
	h2, err := e.Resume(&messages.StartRun{RunId: "run_own_resumed", Tenant: "t", Profile: "mine", ProfileDefinition: []byte(ownProfile),
		Query: "What is a mutex?", Epoch: 2, Options: &messages.RunOptions{Seed: 5}, PriorEvents: evs[:cut]})
	if err != nil {
		t.Fatal(err)
	}
	evs2 := collect(t, h2, 1)
	if terminal(evs2).GetRunCompleted().GetAnswer() != terminal(evs).GetRunCompleted().GetAnswer() {
		t.Fatal("the resumed run's answer differs")
	}

	// Checked again here: an endpoint this process does not have, a base
	// URL, garbage.
	for _, def := range []string{
		strings.ReplaceAll(ownProfile, `"provider": "sim"`, `"provider": "elsewhere"`),
		`{"provider": "sim", "base_url": "http://169.254.169.254"}`,
		`{{{`,
	} {
		_, err := e.StartRun(RunRequest{Tenant: "t", Profile: "mine", ProfileDefinition: []byte(def), Query: "q"})
		if !errors.Is(err, stagework.ErrInvalidConfig) {
			t.Errorf("definition %s: error %v, want ErrInvalidConfig", def, err)
		}
	}
}

// The response cache tells a tenant's profile from another definition of
// the same name.
func TestCacheKeyIncludesTheOwnProfile(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	p1, err := e.Profile("mine", []byte(ownProfile))
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(ownProfile, "own-r", "own-r2", 1)
	p2, err := e.Profile("mine", []byte(other))
	if err != nil {
		t.Fatal(err)
	}
	req := RunRequest{Tenant: "t", Profile: "mine", Query: "q", Seed: 3, ProfileDefinition: []byte(ownProfile)}
	k1, ok1 := cacheKey(req, p1)
	req.ProfileDefinition = []byte(other)
	k2, ok2 := cacheKey(req, p2)
	if !ok1 || !ok2 || k1 == k2 {
		t.Fatalf("cache keys %q %v, %q %v", k1, ok1, k2, ok2)
	}
}
