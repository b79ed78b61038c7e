package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFigures measures, on real loopback with DefaultConfig's LAN settings: detection time after an
// abrupt stop, gossip bandwidth per member, and false suspicions while external processes saturate every
// core. It only runs with QLC_CLUSTER_FIGURES=1 (timing figures are not unit-test assertions):
//
//	QLC_CLUSTER_FIGURES=1 go test -run TestFigures -v -count=1 -timeout 10m ./cluster/
//
// QLC_CLUSTER_FIGURES_N (default 4) sets the cluster size, QLC_CLUSTER_FIGURES_BURN (default 30s) the
// CPU-burn period.
func TestFigures(t *testing.T) {
	if os.Getenv("QLC_CLUSTER_FIGURES") == "" {
		t.Skip("set QLC_CLUSTER_FIGURES=1 to measure detection time, bandwidth and false suspicions")
	}
	n := 4
	if v, err := strconv.Atoi(os.Getenv("QLC_CLUSTER_FIGURES_N")); err == nil && v >= 3 {
		n = v
	}
	burn := 30 * time.Second
	if v, err := time.ParseDuration(os.Getenv("QLC_CLUSTER_FIGURES_BURN")); err == nil {
		burn = v
	}
	d := DefaultConfig()
	t.Logf("settings: probe %v/%v, suspicion mult %d (max mult %d), gossip %v x%d, retransmit %d, indirect %d; n=%d, GOMAXPROCS=%d, %s",
		d.ProbeInterval, d.ProbeTimeout, d.SuspicionMult, d.SuspicionMaxTimeoutMult, d.GossipInterval, d.GossipNodes,
		d.RetransmitMult, d.IndirectChecks, n, runtime.GOMAXPROCS(0), runtime.Version())

	type node struct {
		c  *Cluster
		ft *FaultTransport
	}
	start := func(name string, seeds ...string) node {
		nt, err := NewLoopbackTransport()
		if err != nil {
			t.Fatal(err)
		}
		ft := WrapTransport(nt)
		cfg := DefaultConfig()
		cfg.NodeName = name
		cfg.Transport = ft
		cfg.Seeds = seeds
		cfg.ClusterKey = testKey
		cfg.Logger = testLogger()
		c, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Shutdown() })
		return node{c, ft}
	}
	var obs []node
	obs = append(obs, start("obs-0"))
	seed := obs[0].c.Self().GossipAddr
	for i := 1; i < n-1; i++ {
		obs = append(obs, start(fmt.Sprintf("obs-%d", i), seed))
	}

	// 1. Detection time: n-1 observers and a fresh victim per trial, stopped without Leave.
	const trials = 24
	var det []time.Duration
	for i := range trials {
		v := start(fmt.Sprintf("victim-%d", i), seed)
		waitFor(t, 10*time.Second, "victim joined everywhere", func() bool {
			for _, o := range obs {
				if !hasName(o.c.Members(), v.c.Name()) {
					return false
				}
			}
			return len(v.c.Members()) == n
		})
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // random phase against the probe cycle
		t0 := time.Now()
		_ = v.c.Shutdown()
		waitFor(t, 30*time.Second, "victim marked dead everywhere", func() bool {
			for _, o := range obs {
				if hasName(o.c.Members(), v.c.Name()) {
					return false
				}
			}
			return true
		})
		det = append(det, time.Since(t0))
	}
	slices.Sort(det)
	pct := func(p float64) time.Duration { return det[int(p*float64(len(det)-1)+0.5)] }
	t.Logf("FIGURE detection (abrupt stop -> all %d others mark dead), %d trials: min %v p50 %v p99 %v max %v",
		n-1, len(det), det[0].Round(time.Millisecond), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), det[len(det)-1].Round(time.Millisecond))

	// 2. Bandwidth with n members idle.
	last := start("bw", seed)
	all := append(slices.Clone(obs), last)
	waitFor(t, 10*time.Second, "all joined", func() bool { return len(last.c.Members()) == n })
	before := make([]TransportStats, len(all))
	for i, x := range all {
		before[i] = x.ft.Stats()
	}
	const idle = 10 * time.Second
	time.Sleep(idle)
	for i, x := range all {
		s := x.ft.Stats()
		pkt := float64(s.PacketBytesSent-before[i].PacketBytesSent) / idle.Seconds()
		str := float64(s.StreamBytesSent-before[i].StreamBytesSent) / idle.Seconds()
		pps := float64(s.PacketsSent-before[i].PacketsSent) / idle.Seconds()
		t.Logf("FIGURE bandwidth %s (n=%d): sent %.0f B/s UDP (%.1f pkt/s) + %.0f B/s TCP = %.0f B/s", x.c.Name(), n, pkt, pps, str, pkt+str)
	}

	// 3. False suspicions while every core is saturated by other processes.
	count := func() (susp, dead, fenced float64) {
		for _, x := range all {
			susp += testutil.ToFloat64(x.c.met.suspicions)
			dead += testutil.ToFloat64(x.c.met.leaves)
			fenced += testutil.ToFloat64(x.c.met.fencings)
		}
		return
	}
	s0, d0, f0 := count()
	var burners []*exec.Cmd
	for range runtime.NumCPU() {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		burners = append(burners, cmd)
	}
	defer func() {
		for _, b := range burners {
			_ = b.Process.Kill()
			_ = b.Wait()
		}
	}()
	time.Sleep(burn)
	s1, d1, f1 := count()
	alive := 0
	for _, x := range all {
		alive += len(x.c.Members())
	}
	t.Logf("FIGURE cpu burn %v with %d burner processes on %d cores, n=%d: suspicions %.0f (%.2f/member/min), false deaths %.0f, fencings %.0f, member views at end %d/%d",
		burn, len(burners), runtime.NumCPU(), n, s1-s0, (s1-s0)/float64(n)/burn.Minutes(), d1-d0, f1-f0, alive, n*n)
}
