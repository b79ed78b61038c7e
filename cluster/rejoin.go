package cluster

import (
	"context"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"
)

// Re-joining seeds.
//
// memberlist re-merges nothing by itself: after a partition each side has declared the other dead, its
// periodic push/pull goes only to members it sees alive, and after GossipToTheDeadTime it stops
// gossiping to the dead. A seed that starts after us is not found either. So a member joins seeds again
// in the background. Each join is a full push/pull: the state of all N members, both ways. Joining every
// seed every RejoinInterval (what this package did up to issue 15) made each of S seeds serve N/S of
// those per RejoinInterval — O(N²) bytes at the seeds, ~11 MB/s per seed at 500 members, enough to
// starve a 500-member simulation on two cores. The rule now:
//
//  1. Missing seeds. Every RejoinInterval (±20 % jitter; RejoinInterval/4 while we know no other member)
//     the seeds are resolved (DNS names again each time) and only the addresses that no member of our
//     view has are joined, at most maxRejoinTargets of them, chosen at random. That keeps what the
//     re-join is for: after a partition one side misses the seeds on the other side (every seed is on
//     one side, so the other misses them all) and joins them, which merges the two views and carries
//     the tombstones that fence the cut-off side; a seed that started later is missing until someone
//     joins it. In a steady cluster where every seed is a member nothing is joined: O(1) per member.
//  2. A stall. A member that was not scheduled for longer than the others need to declare it dead
//     (ProbeTimeout + SuspicionMult × ProbeInterval: a SIGSTOP, a frozen VM, a starved cgroup) may
//     have been declared dead while it still sees everyone alive, so rule 1 joins nothing. When the
//     loop's own tick comes that late it push/pulls with one random member of its view (a member
//     that declared us dead answers with its tombstones, and we fence): at most once per
//     RejoinInterval per process (see lastProcessStallJoin), spread over the members, not the seeds.
//  3. Safety net. Every SeedResyncInterval × m(N) on average (uniformly 0.5–1.5 of it; m(N) is 1 up to
//     32 members and grows by one per doubling beyond, as memberlist scales its own push/pull) one
//     random seed is joined even when it is in the view, for views that disagree in ways rule 1 does
//     not see (a seed we see alive that sees us dead). At 500 members and 3 seeds that is ~1.1
//     push/pulls per second per seed, against ~167 with the old rule.

// maxRejoinTargets bounds the addresses one re-join round contacts: one member of the other side of a
// partition is enough to merge the views (its push/pull carries its whole state), and a DNS seed name
// that resolves to every pod of a Kubernetes headless service must not make every member push/pull with
// every pod.
const maxRejoinTargets = 3

// Reasons of qlc_cluster_rejoins_total.
const (
	rejoinMissing = "missing_seed"
	rejoinStall   = "stall"
	rejoinResync  = "resync"
)

// rejoinLoop joins seeds (and, after a stall, one member) again in the background, by the rules above.
// It is the only caller of memberlist's Join after Start; a Join may block up to TCPTimeout per address.
func (c *Cluster) rejoinLoop() {
	defer c.wg.Done()
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	tick := c.stallThreshold() / 2
	t := time.NewTicker(tick)
	defer t.Stop()
	now := time.Now()
	last := now
	nextMissing := now.Add(jitter(rnd, c.rejoinWait(), 0.2))
	nextResync := now.Add(jitter(rnd, c.resyncWait(), 0.5))
	var lastStall time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		stalled := now.Sub(last) > c.stallThreshold() // two ticks: unscheduled for at least one
		last = now
		c.life.Lock()
		active := !c.closed && !c.left && !c.isFenced
		c.life.Unlock()
		if !active {
			continue
		}
		switch {
		case stalled && now.Sub(lastStall) >= c.cfg.RejoinInterval && processStallJoin(now, c.cfg.RejoinInterval):
			lastStall = now
			if peer, ok := c.randomPeer(rnd); ok {
				c.join(rejoinStall, []string{peer})
			}
		case !now.Before(nextMissing):
			if targets := c.missingSeeds(rnd); len(targets) > 0 {
				c.join(rejoinMissing, targets)
			}
			nextMissing = time.Now().Add(jitter(rnd, c.rejoinWait(), 0.2))
		case !now.Before(nextResync):
			if seeds := c.resolveSeeds(); len(seeds) > 0 {
				c.join(rejoinResync, []string{seeds[rnd.IntN(len(seeds))]})
			}
			nextResync = time.Now().Add(jitter(rnd, c.resyncWait(), 0.5))
		}
		last = time.Now() // a Join's own duration is not a stall
	}
}

// lastProcessStallJoin is when a Cluster of this process last push/pulled after a stall (unix nanos).
// A stall is the process's, not a member's: where several Clusters share a process (tests, the
// scale simulation's hundreds of members) every one of them sees it at once, and all pushing and
// pulling full state right after it would make the next stall. One of them does, per RejoinInterval.
var lastProcessStallJoin atomic.Int64

// processStallJoin reports whether this process may push/pull after a stall now, and claims it.
func processStallJoin(now time.Time, every time.Duration) bool {
	last := lastProcessStallJoin.Load()
	if now.UnixNano()-last < int64(every) {
		return false
	}
	return lastProcessStallJoin.CompareAndSwap(last, now.UnixNano())
}

// join joins addrs and counts the attempt.
func (c *Cluster) join(reason string, addrs []string) {
	c.met.rejoins.WithLabelValues(reason).Inc()
	if _, err := c.ml.Join(addrs); err != nil {
		c.met.joinFailures.Inc()
		c.joinFailures.Add(1)
		c.log.Debug("cluster: re-join reached nobody", "reason", reason, "addrs", addrs, "err", err)
	}
}

func (c *Cluster) rejoinWait() time.Duration {
	if len(*c.snap.Load()) <= 1 {
		return c.cfg.RejoinInterval / 4
	}
	return c.cfg.RejoinInterval
}

// resyncWait is SeedResyncInterval × resyncScale(N).
func (c *Cluster) resyncWait() time.Duration {
	return c.cfg.SeedResyncInterval * time.Duration(resyncScale(len(*c.snap.Load())))
}

// resyncScale is memberlist's pushPullScale multiplier: 1 up to 32 members, then one more per doubling.
func resyncScale(n int) int {
	if n <= 32 {
		return 1
	}
	return int(math.Ceil(math.Log2(float64(n))-math.Log2(32))) + 1
}

// stallThreshold is how long a member can go unscheduled before the others may declare it dead: a
// missed probe (ProbeTimeout) plus the shortest suspicion (SuspicionMult × ProbeInterval).
func (c *Cluster) stallThreshold() time.Duration {
	return c.cfg.ProbeTimeout + time.Duration(c.cfg.SuspicionMult)*c.cfg.ProbeInterval
}

// jitter returns d scaled by a uniform factor in [1-f, 1+f).
func jitter(rnd *rand.Rand, d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - f + 2*f*rnd.Float64()))
}

// resolveSeeds returns the seeds' addresses as "ip:port", DNS names resolved now (every address of a
// name), our own address left out. A name that does not resolve is kept as it is: memberlist's Join
// resolves it again and logs why it fails.
func (c *Cluster) resolveSeeds() []string {
	self := c.Self().GossipAddr
	var out []string
	for _, s := range c.seeds() {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			continue // validate rejected these
		}
		if net.ParseIP(host) != nil {
			out = append(out, s)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.TCPTimeout)
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			out = append(out, s)
			continue
		}
		for _, ip := range ips {
			if a := net.JoinHostPort(ip.IP.String(), port); a != self {
				out = append(out, a)
			}
		}
	}
	return out
}

// missingSeeds returns up to maxRejoinTargets seed addresses, at random, that no member of our view
// has (rule 1).
//
// A view of at most Config.RejoinAllSeedsUpTo members joins every seed each round instead, as before
// issue 15 (up to maxRejoinTargets): O(N·S) bytes is nothing at that size, and the push/pull with a
// seed is the anti-entropy that lets a starved member learn of a suspicion of itself and refute it in
// time (TestStarvedMemberIsNotDeclaredDead failed 2–3 runs in 15 at load < 1 without it, 0 in 15 with).
func (c *Cluster) missingSeeds(rnd *rand.Rand) []string {
	seeds := c.resolveSeeds()
	view := *c.snap.Load()
	have := make(map[string]bool, len(seeds))
	if len(view) > c.cfg.RejoinAllSeedsUpTo {
		for _, m := range view {
			have[m.GossipAddr] = true
		}
	}
	return pickMissing(seeds, have, maxRejoinTargets, rnd)
}

// pickMissing returns up to max of addrs (without duplicates) that are not in have, in random order.
func pickMissing(addrs []string, have map[string]bool, max int, rnd *rand.Rand) []string {
	seen := make(map[string]bool, len(addrs))
	var out []string
	for _, a := range addrs {
		if !have[a] && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	rnd.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if len(out) > max {
		out = out[:max]
	}
	return out
}

// randomPeer returns the gossip address of a random member of our view other than us.
func (c *Cluster) randomPeer(rnd *rand.Rand) (string, bool) {
	ms := *c.snap.Load()
	if len(ms) <= 1 {
		return "", false
	}
	for range 4 {
		m := ms[rnd.IntN(len(ms))]
		if m.Name != c.self && m.GossipAddr != "" {
			return m.GossipAddr, true
		}
	}
	return "", false
}
