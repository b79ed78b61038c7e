package actors

import (
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// A run may use its tenant's own profile instead of one of the profile
// file's (gateway: PUT /v1/profiles/{name}). Its definition travels with
// the run (RunRequest.ProfileDefinition, StartRun.profile_definition):
// nodes know only the profile file. Every process that needs the run's
// profile (the engine for its estimate and reservation, the coordinator
// wherever it is placed, the failover that moves it) parses and checks
// the definition again against its own profile file (stagework's
// Config.ParseProfile): a message is never trusted blindly, and a
// definition naming an endpoint this process does not have is refused.

// maxParsedProfiles bounds the parsed definitions a process keeps; past
// it the cache starts over (a tenant profile is parsed in well under a
// millisecond).
const maxParsedProfiles = 256

// profileResolver finds a run's profile: the file's, by name, or the
// tenant's own, parsed from its definition (cached by name and digest).
// Safe for concurrent use.
type profileResolver struct {
	cat *catalogRef

	mu     sync.Mutex
	parsed map[string]*stagework.Profile // name "\x00" sha256(definition) → profile
}

func newProfileResolver(cat *catalogRef) *profileResolver {
	return &profileResolver{cat: cat, parsed: map[string]*stagework.Profile{}}
}

// resolve returns the profile named name: the file's when def is empty,
// else the one def defines. The profile returned is shared: never change it.
func (r *profileResolver) resolve(name string, def []byte) (*stagework.Profile, error) {
	if len(def) == 0 {
		return r.cat.stages().Profile(name)
	}
	sum := sha256.Sum256(def)
	key := name + "\x00" + string(sum[:])
	r.mu.Lock()
	p, ok := r.parsed[key]
	r.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := r.cat.stages().ParseProfile(name, def)
	if err != nil {
		return nil, fmt.Errorf("actors: the tenant's own profile %q: %w", name, err)
	}
	r.mu.Lock()
	if len(r.parsed) >= maxParsedProfiles {
		clear(r.parsed)
	}
	r.parsed[key] = p
	r.mu.Unlock()
	return p, nil
}

// RunProfile returns the profile of a run this engine holds: the tenant's
// own when the run was started with one (its definition is in the hub's
// copy of StartRun), else the profile file's. A hub attached to a run
// started elsewhere holds no StartRun: ok is false for it if its profile
// is not the file's (the caller may know the tenant's profile itself).
func (e *Engine) RunProfile(h *Hub) (p *stagework.Profile, ok bool) {
	p, err := e.profiles.resolve(h.Profile, h.profileDefinition())
	return p, err == nil
}

// profileDefinition is the definition of the tenant's own profile the run
// was started with (nil: a profile of the file's, or a hub attached to a
// run started elsewhere). The bytes are never changed: StartRun is
// replaced, not modified (copy on write).
func (h *Hub) profileDefinition() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetProfileDefinition()
}

// Profile resolves a profile as a run started with (name, def) would: the
// tenant's own when def is set (parsed and checked), else the file's.
func (e *Engine) Profile(name string, def []byte) (*stagework.Profile, error) {
	return e.profiles.resolve(name, def)
}

// TenantProfileLabel is the profile label, in metrics, of every run of a
// tenant's own profile: tenants name their profiles freely, and a label
// value per name would grow the metrics without bound.
const TenantProfileLabel = "tenant-own"

// metricsLabel is the profile label of a run started with start.
func metricsLabel(start *messages.StartRun) string {
	if len(start.GetProfileDefinition()) > 0 {
		return TenantProfileLabel
	}
	return start.GetProfile()
}

// startProfile resolves the profile of a run's start message.
func (e *Engine) startProfile(start *messages.StartRun) (*stagework.Profile, error) {
	return e.profiles.resolve(start.GetProfile(), start.GetProfileDefinition())
}
