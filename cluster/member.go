package cluster

import (
	"slices"
	"sort"
	"time"
)

// Member is one alive (or suspect) member as announced in its metadata. Values are copies: callers may
// keep and modify them.
type Member struct {
	// Name is the member's unique memberlist name (one per process incarnation).
	Name string
	// GossipAddr is the "host:port" of its memberlist transport.
	GossipAddr string
	// RemoteAddr is its actor-transport (protoactor remote) address.
	RemoteAddr string
	// Version is its software version.
	Version string
	// Kinds are the actor kinds it hosts.
	Kinds []string
	// Features are its CPU features (names from KnownFeatures), minus those it was told to disable.
	Features []string
	// Load is the number of active runs it last announced (see SetLoad); it lags by up to
	// LoadUpdateInterval plus gossip time.
	Load int
	// Draining is true once the member started a graceful Leave: it takes no
	// new work (placement skips it) and finishes what it has.
	Draining bool
	// Limit is the member's adaptive limit on Load (issue 18; 0: none): at Limit it refuses new runs
	// (see Saturated). Queued is how many of its runs wait for a run slot; StageLatency is its recent
	// stage attempts' mean duration. All three lag like Load.
	Limit, Queued int
	StageLatency  time.Duration
	// StageLoad is how many stage attempts (parallel steps) it runs and StageLimit its adaptive limit on
	// them (issue 14; 0: none): at StageLimit it refuses new attempts (see StageFull). Both lag like Load.
	StageLoad, StageLimit int
}

// StageFull reports whether m announced a stage-attempt limit and as many attempts running: it refuses
// new ones until one ends or its limit grows.
func (m Member) StageFull() bool { return m.StageLimit > 0 && m.StageLoad >= m.StageLimit }

// Saturated reports whether m announced a limit and a load at or above it: it refuses new runs until
// one of its runs ends or its limit grows.
func (m Member) Saturated() bool { return m.Limit > 0 && m.Load >= m.Limit }

// Has reports whether m hosts kind.
func (m Member) Has(kind string) bool { return slices.Contains(m.Kinds, kind) }

// HasFeature reports whether m announced CPU feature f (e.g. "avx2").
func (m Member) HasFeature(f string) bool { return slices.Contains(m.Features, f) }

// Topology is one view of the cluster, delivered on Cluster.Updates.
type Topology struct {
	// Epoch increases by one with every delivered Topology of one Cluster (starting at 1). Actors can
	// tag work with it to refuse results computed under an older view.
	Epoch uint64
	// Members are the alive members, self included, sorted by name. Empty after fencing.
	Members []Member
	// Joined are the members in Members that were not in the previously delivered Topology (for the
	// first one: every member). Left are the members of the previous Topology that are gone: they left,
	// were declared dead, or (after fencing) everyone. Changed are members whose metadata other than
	// Load changed.
	Joined, Left, Changed []Member
	// Departed are the members of Left that left gracefully (they said so:
	// a node draining on SIGTERM); the others in Left were declared dead or
	// were lost with a fencing. Work on a departed member may still finish.
	Departed []Member
}

// Owner returns the member hosting kind (and not draining) that ranks first for key by rendezvous (highest random weight)
// hashing. Adding or removing one of n candidates moves only the keys it wins or owned (~1/n of them).
func (t Topology) Owner(kind, key string) (Member, bool) { return ownerOf(t.Members, kind, key) }

// PickLeastLoaded is Cluster.PickLeastLoaded over this view with d choices: of the d members hosting
// kind (and not draining) ranked highest by rendezvous hashing of key, the least loaded (ties: the better
// ranked). A pure function of the members' names and announced loads, so simulations and tests can place
// with the code the cluster places with.
func (t Topology) PickLeastLoaded(kind, key string, d int) (Member, bool) {
	return pickLeastLoaded(t.Members, kind, key, d)
}

func ownerOf(members []Member, kind, key string) (Member, bool) {
	var best Member
	var bestScore uint64
	found := false
	kh := hashString(key)
	for _, m := range members {
		if !m.Has(kind) || m.Draining {
			continue
		}
		s := hrwScore(kh, m.Name)
		if !found || s > bestScore || (s == bestScore && m.Name < best.Name) {
			best, bestScore, found = m, s, true
		}
	}
	return best, found
}

// pickLeastLoaded ranks the members hosting kind by rendezvous score for key, keeps the first d, and
// returns the least loaded of those (ties: the better ranked).
func pickLeastLoaded(members []Member, kind, key string, d int) (Member, bool) {
	type cand struct {
		m     Member
		score uint64
	}
	kh := hashString(key)
	var cs []cand
	for _, m := range members {
		if m.Has(kind) && !m.Draining {
			cs = append(cs, cand{m, hrwScore(kh, m.Name)})
		}
	}
	if len(cs) == 0 {
		return Member{}, false
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].score != cs[j].score {
			return cs[i].score > cs[j].score
		}
		return cs[i].m.Name < cs[j].m.Name
	})
	if d < 1 {
		d = 1
	}
	if d > len(cs) {
		d = len(cs)
	}
	best := cs[0]
	for _, c := range cs[1:d] {
		cs, bs := c.m.Saturated(), best.m.Saturated()
		if (bs && !cs) || (bs == cs && c.m.Load < best.m.Load) {
			best = c
		}
	}
	return best.m, true
}

// hashString is 64-bit FNV-1a: stable across processes and Go versions (unlike hash/maphash).
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// hrwScore is the rendezvous weight of member name for a key hash: FNV of the name mixed with the key
// hash through the splitmix64 finalizer, so scores for one key are independent across names.
func hrwScore(keyHash uint64, name string) uint64 {
	x := hashString(name) ^ (keyHash * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
