package topology

import (
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// Candidates places a run's coordinator: the less loaded of the two
// rendezvous-ranked coordinator hosts for the run id
// (cluster.PickLeastLoaded), then every other coordinator host that is not
// draining; addresses declared dead within LostWarmup go last.
func (m *Membership) Candidates(runID string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	first, ok := c.PickLeastLoaded(actors.KindCoordinator, runID)
	ms := c.Members()
	out := order(first, ok, ms, actors.KindCoordinator, m.recentlyLost)
	// Members at their run limit go last (before them, the order above):
	// they would refuse at once anyway.
	return lastIf(out, ms, m.full())
}

// CountOwnRuns implements actors.OwnLoadPlacer.
func (m *Membership) CountOwnRuns(own func(addr string) int) { m.own.Store(&own) }

// full is whether a member is at its run limit: by the load it announced,
// or by this process's own runs there (the announcement lags; what this
// process placed since, it knows at once).
func (m *Membership) full() func(cluster.Member) bool {
	own := m.own.Load()
	if own == nil {
		return cluster.Member.Saturated
	}
	return func(mem cluster.Member) bool {
		return mem.Limit > 0 && max(mem.Load, (*own)(mem.RemoteAddr)) >= mem.Limit
	}
}

// lastIf moves the addresses of the members for which full is true to the
// end of out, keeping the order within each part.
func lastIf(out []string, ms []cluster.Member, full func(cluster.Member) bool) []string {
	last := map[string]bool{}
	for _, mem := range ms {
		if full(mem) {
			last[mem.RemoteAddr] = true
		}
	}
	if len(last) > 0 {
		slices.SortStableFunc(out, func(a, b string) int {
			switch fa, fb := last[a], last[b]; {
			case fa == fb:
				return 0
			case fa:
				return 1
			}
			return -1
		})
	}
	return out
}

// StepCandidates implements actors.StepPlacer: the stage hosts for a
// parallel step's attempt (key: run/step), best first — the rendezvous
// owner of key among the coordinator hosts, then the others (not
// draining; addresses declared dead within LostWarmup after them); members
// that announced their stage-attempt share full (cluster.Member.StageFull)
// go last, since they would refuse the attempt anyway. The view lags by the
// load interval plus gossip: a host that filled up since refuses (busy), and
// the coordinator offers the attempt to the next.
func (m *Membership) StepCandidates(key string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	return stepCandidates(c.Members(), key, m.recentlyLost)
}

func stepCandidates(ms []cluster.Member, key string, lost func(string) bool) []string {
	first, ok := cluster.Topology{Members: ms}.Owner(actors.KindCoordinator, key)
	out := order(first, ok, ms, actors.KindCoordinator, lost)
	return lastIf(out, ms, cluster.Member.StageFull)
}

// Saturated implements actors.HeadroomPlacer: true when at least one member
// hosts run coordinators and every such member that is not draining is at
// or above its limit: by the load it announced (cluster.Member.Saturated),
// or by the runs this process placed there (CountOwnRuns). The announced
// view lags by the load interval plus gossip; a node that filled up since
// with another gateway's runs refuses the StartRun itself.
func (m *Membership) Saturated() (bool, time.Duration) {
	c := m.current()
	if c == nil {
		return false, 0
	}
	return saturated(c.EachMember, m.full()) // no copy of the members: asked on every request for a run
}

func saturated(each func(func(*cluster.Member) bool), full func(cluster.Member) bool) (bool, time.Duration) {
	n, room := 0, false
	each(func(mem *cluster.Member) bool {
		if !mem.Has(actors.KindCoordinator) || mem.Draining || mem.RemoteAddr == "" {
			return true
		}
		if !full(*mem) {
			room = true
			return false
		}
		n++
		return true
	})
	if room {
		return false, 0
	}
	return n > 0, time.Second
}

// TokenizerHosts returns the actor addresses of members hosting tokenizer
// actors: the rendezvous owner of key first (so equal requests meet warm
// caches), then the others (not draining).
func (m *Membership) TokenizerHosts(key string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	ms := c.Members()
	first, ok := cluster.Topology{Members: ms}.Owner(actors.KindTokenizer, key)
	return order(first, ok, ms, actors.KindTokenizer, nil)
}

// order lists first (if ok), then every other member hosting kind that is
// not draining and has an actor address, in members' order; with lost,
// the addresses it reports go last (the others keep their order).
func order(first cluster.Member, ok bool, members []cluster.Member, kind string, lost func(string) bool) []string {
	var out []string
	if ok && first.RemoteAddr != "" {
		out = append(out, first.RemoteAddr)
	}
	for _, mem := range members {
		if mem.Has(kind) && !mem.Draining && mem.RemoteAddr != "" && !slices.Contains(out, mem.RemoteAddr) {
			out = append(out, mem.RemoteAddr)
		}
	}
	if lost == nil {
		return out
	}
	slices.SortStableFunc(out, func(a, b string) int {
		la, lb := lost(a), lost(b)
		switch {
		case la == lb:
			return 0
		case la:
			return 1
		}
		return -1
	})
	return out
}

// LimiterHost places tenant limiters: the rendezvous owner of the tenant
// among the members hosting run coordinators (and not draining). view
// names that set of members, so a limiter knows when ownership may have
// moved, and refuses a gateway that sees another set.
func (m *Membership) LimiterHost(tenant string) (addr, view string, ok bool) {
	c := m.current()
	if c == nil {
		return "", "", false
	}
	return limiterHost(c.Members(), tenant)
}

// LimiterView is this process's own view of tenant's limiter hosts (see
// LimiterHost).
func (m *Membership) LimiterView(tenant string) string {
	_, view, _ := m.LimiterHost(tenant)
	return view
}

// limiterHost decides LimiterHost from one snapshot of the members: among
// the quota group's members when any is seen (their limiters grant budget
// tokens from slices the group allocated), else among the coordinators.
func limiterHost(members []cluster.Member, tenant string) (string, string, bool) {
	kind := limiterKind(members)
	owner, ok := cluster.Topology{Members: members}.Owner(kind, "tenant/"+tenant)
	if !ok || owner.RemoteAddr == "" {
		return "", "", false
	}
	return owner.RemoteAddr, viewOf(members, kind), true
}

// limiterKind is the kind of the members that host tenant limiters.
func limiterKind(members []cluster.Member) string {
	for _, mem := range members {
		if mem.Has(actors.KindQuota) {
			return actors.KindQuota
		}
	}
	return actors.KindCoordinator
}

// QuotaPeer returns the actor address of the quota group's member id (the
// member announcing actors.KindQuotaPeer(id)); a draining member still
// counts: it is still in the group.
func (m *Membership) QuotaPeer(id uint64) (string, bool) {
	c := m.current()
	if c == nil {
		return "", false
	}
	kind := actors.KindQuotaPeer(id)
	for _, mem := range c.Members() {
		if mem.Has(kind) && mem.RemoteAddr != "" {
			return mem.RemoteAddr, true
		}
	}
	return "", false
}

var _ actors.QuotaPeers = (*Membership)(nil)

// viewOf names the set of limiter hosts: a hash of the sorted names of the
// members of kind, not draining.
func viewOf(members []cluster.Member, kind string) string {
	var ns []string
	for _, mem := range members {
		if mem.Has(kind) && !mem.Draining {
			ns = append(ns, mem.Name)
		}
	}
	slices.Sort(ns)
	h := fnv.New64a()
	for _, n := range ns {
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// Gateways returns the actor addresses of the gateways in the cluster
// (their ledgers and tenant registries), except the address skip.
func (m *Membership) Gateways(skip string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	var out []string
	for _, mem := range c.Members() {
		if mem.Has(actors.KindGateway) && mem.RemoteAddr != "" && mem.RemoteAddr != skip {
			out = append(out, mem.RemoteAddr)
		}
	}
	return out
}

// LedgerHosts returns the gateways whose ledgers a tenant limiter rebuilds
// from: the members, and those declared dead within LedgerGrace.
func (m *Membership) LedgerHosts() []string {
	out := m.Gateways("")
	now := time.Now()
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	for addr, at := range m.lostGateways {
		switch {
		case now.Sub(at) > m.cfg.LedgerGrace:
			delete(m.lostGateways, addr)
		case !slices.Contains(out, addr):
			out = append(out, addr)
		}
	}
	return out
}
