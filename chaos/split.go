package main

import (
	"context"
	"fmt"
	"time"
)

// The group partition scenarios (groups.go makes the cuts):
//
//   - split: the nodes in two halves (the older half, the younger half);
//     the gateway goes with one half, in turn, so each fault the other half
//     is cut off from it and from the gateway, both ways, while each half
//     keeps its peers. Runs on the gateway-less half move; that half, back
//     on the network, learns it was declared dead, fences and rejoins.
//   - asymmetric: a node hosting a streaming run's coordinator (A) cannot
//     send to one peer (B: another node, then the gateway, in turn); B's
//     packets to A pass. A is heard by every member but B; B's probes of A
//     get no answer, so B asks the others to probe A for it (memberlist's
//     indirect probes), and they vouch for A.

// groupMinNodes is the smallest cluster the group scenarios run: two halves
// of two nodes each, so the gateway-less half keeps a peer whichever it is.
const groupMinNodes = 4

func groupScenarioOf(name string, cfg Config, def func(v, d int) int, rt time.Duration) scenario {
	if name == "asymmetric" {
		return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, 4), profile: "steady", runTimeout: rt, inject: injectAsymmetric}
	}
	return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, 4), profile: "steady", runTimeout: rt, inject: injectSplit}
}

// splitGroups divides nodes (oldest first) into the half cut off from the
// gateway at fault i (the older half on even faults, the younger on odd
// ones) and the half that stays with it. With four nodes or more each half
// has at least two; with three (compose), the gateway keeps one node (each
// in turn) and the other two are cut off together, so each side still has
// a peer.
func splitGroups(nodes []*proc, i int) (cut, withGateway []*proc) {
	if len(nodes) < groupMinNodes {
		k := i % len(nodes)
		for j, n := range nodes {
			if j == k {
				withGateway = append(withGateway, n)
			} else {
				cut = append(cut, n)
			}
		}
		return cut, withGateway
	}
	h := len(nodes) / 2
	older, younger := nodes[:h], nodes[h:]
	if i%2 == 0 {
		return older, younger
	}
	return younger, older
}

// asymmetricPeer is who node a cannot send to at fault i: the gateway on
// odd faults, else the first other node of nodes.
func asymmetricPeer(nodes []*proc, a, gw *proc, i int) *proc {
	if i%2 == 1 {
		return gw
	}
	for _, n := range nodes {
		if n != a {
			return n
		}
	}
	return gw
}

// pickIn waits for a streaming run whose coordinator is on one of nodes and
// returns that node after a random 0–200 ms; nil if ctx ends first or no
// run is placed there within 20 s (then the caller injects anyway).
func (e *env) pickIn(ctx context.Context, nodes []*proc) *proc {
	deadline := time.Now().Add(20 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		for _, r := range e.d.streaming() {
			if pl, ok := e.c.placements().of(r.id); ok {
				for _, n := range nodes {
					if n.name == pl.node && !n.exited() {
						sleep(ctx, time.Duration(e.rng.IntN(200))*time.Millisecond)
						return n
					}
				}
			}
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return nil
}

func fencingsOf(nodes []*proc) float64 {
	var s float64
	for _, n := range nodes {
		f, _ := metric("http://"+n.ops+"/metrics", "qlc_cluster_fencings_total")
		s += f
	}
	return s
}

func names(ps []*proc) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.name
	}
	return s
}

func injectSplit(ctx context.Context, e *env) string {
	g, ok := e.c.(groupFleet)
	if !ok {
		return "SKIPPED — group partitions are not made on this backend"
	}
	done, affected := 0, 0
	var rejoin []time.Duration
	var sides []string
	for done < e.faults && ctx.Err() == nil {
		nodes := e.c.liveNodes()
		if len(nodes) < 2 {
			e.progress("split: fewer than two nodes")
			break
		}
		cut, kept := splitGroups(nodes, done)
		if e.pickIn(ctx, cut) == nil && ctx.Err() != nil {
			break
		}
		gw := g.gateway()
		fencings := map[*proc]float64{}
		for _, n := range cut {
			fencings[n], _ = metric("http://"+n.ops+"/metrics", "qlc_cluster_fencings_total")
		}
		keptFencings := fencingsOf(kept)
		d := e.cfg.PauseMin + time.Duration(e.rng.Int64N(int64(e.cfg.PauseMax-e.cfg.PauseMin)+1))
		var before []*runState
		for _, n := range cut {
			before = append(before, e.onNode(n.name)...)
		}
		at, err := g.dropBetween(cut, append(append([]*proc{gw}, g.bystanders()...), kept...), true)
		if err != nil {
			e.progress("split: %v", err)
			_ = g.healGroups()
			break
		}
		n := 0
		for i, v := range cut {
			b := before
			if i > 0 {
				b = nil
			}
			n += e.markAffected(b, v.name, at)
		}
		affected += n
		done++
		side := fmt.Sprintf("{%s} ⟂ {%s}", names(cut), names(append(append([]*proc{gw}, g.bystanders()...), kept...)))
		sides = append(sides, side)
		e.progress("split %d/%d: %s for %v (%d runs in flight on the gateway-less side)", done, e.faults, side, d.Round(time.Millisecond), n)
		sleep(context.Background(), d) // never leave the cluster split
		if err := g.healGroups(); err != nil {
			e.progress("split: heal: %v", err)
			break
		}
		t := time.Now()
		for _, v := range cut {
			e.waitFenced(v, fencings[v], "the heal")
		}
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 30*time.Second); err != nil {
			e.progress("split: %v", err)
		}
		rejoin = append(rejoin, time.Since(t))
		if f := fencingsOf(kept); f > keptFencings {
			e.rep.examples = append(e.rep.examples, fmt.Sprintf("split %d: %v fencing(s) on the gateway's side {%s}", done, f-keptFencings, names(kept)))
		}
		e.progress("split: healed; the cut side fenced and rejoined after %v", time.Since(t).Round(time.Millisecond))
		if !sleep(ctx, time.Second+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the gateway-less side", fmt.Sprint(affected)},
		[2]string{"heal → cut side fenced and member again (p50 / max)", distShort(rejoin)},
		[2]string{"fencings (nodes' qlc_cluster_fencings_total)", fmt.Sprint(fencingsOf(e.c.liveNodes()))})
	if len(sides) > 0 {
		e.rep.extra = append(e.rep.extra, [2]string{"first two splits", sides[0] + first(sides[1:])})
	}
	return fmt.Sprintf("%d × the nodes split in two groups that each keep a peer, the gateway with one group and then the other (iptables between the groups, both ways), for %v–%v, then healed",
		done, e.cfg.PauseMin, e.cfg.PauseMax)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return "; " + s[0]
}

func injectAsymmetric(ctx context.Context, e *env) string {
	g, ok := e.c.(groupFleet)
	if !ok {
		return "SKIPPED — group partitions are not made on this backend"
	}
	done, affected, toGateway := 0, 0, 0
	var settle []time.Duration
	fencedBefore := fencingsOf(e.c.liveNodes())
	for done < e.faults && ctx.Err() == nil {
		a := e.pickVictim(ctx)
		if a == nil {
			break
		}
		gw := g.gateway()
		b := asymmetricPeer(e.c.liveNodes(), a, gw, done)
		if b == gw {
			toGateway++
		}
		d := e.cfg.PauseMin + time.Duration(e.rng.Int64N(int64(e.cfg.PauseMax-e.cfg.PauseMin)+1))
		before := e.onNode(a.name)
		at, err := g.dropBetween([]*proc{a}, []*proc{b}, false)
		if err != nil {
			e.progress("asymmetric: %v", err)
			_ = g.healGroups()
			break
		}
		n := e.markAffected(before, a.name, at)
		affected += n
		done++
		e.progress("asymmetric %d/%d: %s → %s dropped (%s → %s passes) for %v (%d runs in flight on %s)",
			done, e.faults, a.name, b.name, b.name, a.name, d.Round(time.Millisecond), n, a.name)
		sleep(context.Background(), d) // never leave it cut
		if err := g.healGroups(); err != nil {
			e.progress("asymmetric: heal: %v", err)
			break
		}
		t := time.Now()
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 30*time.Second); err != nil {
			e.progress("asymmetric: %v", err)
		}
		settle = append(settle, time.Since(t))
		if !sleep(ctx, time.Second+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the muted nodes (A)", fmt.Sprint(affected)},
		[2]string{"faults where B was the gateway", fmt.Sprintf("%d of %d", toGateway, done)},
		[2]string{"heal → every member alive at the gateway (p50 / max)", distShort(settle)},
		[2]string{"fencings during the scenario (nodes' qlc_cluster_fencings_total)", fmt.Sprint(fencingsOf(e.c.liveNodes()) - fencedBefore)})
	return fmt.Sprintf("%d × a node hosting a streaming run's coordinator (A) cannot send to one peer B (another node, then the gateway, in turn; B → A passes; iptables), for %v–%v, then healed",
		done, e.cfg.PauseMin, e.cfg.PauseMax)
}
