package scalesim

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
	"github.com/qlc-project/qlc/topology"
)

// PlacementConfig configures one placement simulation. Zero values take the
// defaults named on each field.
type PlacementConfig struct {
	// Nodes is the number of coordinator hosts. Required.
	Nodes int
	// PerNode is the mean number of runs per node in the steady state (the
	// arrival rate is Nodes × PerNode / MeanDuration). Default 32: half of
	// a node's default 64 run slots.
	PerNode float64
	// MeanDuration is the mean run duration (exponentially distributed).
	// Default 20 s (four LLM stages).
	MeanDuration time.Duration
	// Choices is d in "power of d choices"; 1 is plain rendezvous hashing.
	// Default: the shipped PlacementChoices (2).
	Choices int
	// Announce is how often each node's load reaches the placers: topology
	// reads it every LoadInterval and cluster announces it at most every
	// LoadUpdateInterval, each node at its own phase. Default: the shipped
	// LoadInterval (250 ms). Negative: placers see every load at once.
	Announce time.Duration
	// GossipDelay is added to every announcement before placers see it.
	// Default 100 ms (a metadata change at 100–500 members, see
	// SimulateMembership). Ignored when Announce is negative.
	GossipDelay time.Duration
	// Turnovers is how long the simulation runs, in mean durations; the
	// first two are warm-up, the rest are measured at every arrival.
	// Default 10.
	Turnovers int
	// Seed seeds arrivals, durations, run ids and node names. Default 1.
	Seed uint64
}

func (c *PlacementConfig) validate() error {
	d := topology.DefaultConfig()
	if c.Nodes < 1 {
		return fmt.Errorf("scalesim: Nodes is %d, want at least 1", c.Nodes)
	}
	if c.PerNode == 0 {
		c.PerNode = 32
	}
	if c.MeanDuration == 0 {
		c.MeanDuration = 20 * time.Second
	}
	if c.Choices == 0 {
		c.Choices = d.Cluster.PlacementChoices
	}
	if c.Announce == 0 {
		c.Announce = d.LoadInterval
	}
	if c.GossipDelay == 0 {
		c.GossipDelay = 100 * time.Millisecond
	}
	if c.Turnovers == 0 {
		c.Turnovers = 10
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.PerNode < 0 || c.MeanDuration < 0 || c.Choices < 0 || c.GossipDelay < 0 || c.Turnovers < 3 {
		return errors.New("scalesim: negative PerNode, MeanDuration, Choices or GossipDelay, or Turnovers below 3")
	}
	return nil
}

// PlacementResult is what one placement simulation measured. A sample is
// taken at every arrival after warm-up: the largest number of runs on one
// node over the mean number per node at that moment.
type PlacementResult struct {
	Nodes, Choices int
	PerNode        float64
	// MaxOverMean is the mean of the samples; P99 their 99th percentile
	// and Worst the largest.
	MaxOverMean, P99, Worst float64
	// MaxRuns is the largest number of runs one node ever held (measured
	// part), against the 64 default run slots.
	MaxRuns int
	// Arrivals counts placed runs (warm-up included).
	Arrivals int
}

// event kinds of the placement simulation.
const (
	evEnd     = iota // a run on node ends
	evTick           // node reads its load for an announcement
	evPublish        // the announced value reaches the placers
)

type event struct {
	at    float64 // seconds
	kind  int
	node  int
	value int
}

type events []event

func (h events) Len() int           { return len(h) }
func (h events) Less(i, j int) bool { return h[i].at < h[j].at }
func (h events) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)        { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// SimulatePlacement runs one placement simulation (see the package
// comment). Every run is placed by cluster.Topology.PickLeastLoaded over
// members whose Load is what the placers have heard; the real loads are
// kept beside them.
func SimulatePlacement(cfg PlacementConfig) (PlacementResult, error) {
	if err := cfg.validate(); err != nil {
		return PlacementResult{}, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x91ace))
	n := cfg.Nodes
	ms := make([]cluster.Member, n)
	index := make(map[string]int, n)
	for i := range ms {
		ms[i] = cluster.Member{
			Name:  fmt.Sprintf("qlc-node-%d-%08x", i, rng.Uint32()),
			Kinds: []string{actors.KindCoordinator},
		}
	}
	// PickLeastLoaded expects the view sorted by name, as the cluster keeps it.
	slices.SortFunc(ms, func(a, b cluster.Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	for i := range ms {
		index[ms[i].Name] = i
	}
	view := cluster.Topology{Members: ms}
	load := make([]int, n) // real runs per node

	mean := cfg.MeanDuration.Seconds()
	rate := float64(n) * cfg.PerNode / mean
	end := float64(cfg.Turnovers) * mean
	warm := 2 * mean
	fresh := cfg.Announce < 0
	h := &events{}
	if !fresh {
		for i := range n {
			heap.Push(h, event{at: rng.Float64() * cfg.Announce.Seconds(), kind: evTick, node: i})
		}
	}
	res := PlacementResult{Nodes: n, Choices: cfg.Choices, PerNode: cfg.PerNode}
	var samples []float64
	total := 0
	t := 0.0
	var id [20]byte
	for {
		t += rng.ExpFloat64() / rate
		if t > end {
			break
		}
		// Everything due before this arrival happens first.
		for h.Len() > 0 && (*h)[0].at <= t {
			e := heap.Pop(h).(event)
			switch e.kind {
			case evEnd:
				load[e.node]--
				total--
				if fresh {
					ms[e.node].Load = load[e.node]
				}
			case evTick:
				heap.Push(h, event{at: e.at + cfg.GossipDelay.Seconds(), kind: evPublish, node: e.node, value: load[e.node]})
				heap.Push(h, event{at: e.at + cfg.Announce.Seconds(), kind: evTick, node: e.node})
			case evPublish:
				ms[e.node].Load = e.value
			}
		}
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		m, ok := view.PickLeastLoaded(actors.KindCoordinator, fmt.Sprintf("run_%x", id), cfg.Choices)
		if !ok {
			return res, errors.New("scalesim: no coordinator host")
		}
		i := index[m.Name]
		load[i]++
		total++
		res.Arrivals++
		if fresh {
			ms[i].Load = load[i]
		}
		heap.Push(h, event{at: t + rng.ExpFloat64()*mean, kind: evEnd, node: i})
		if t < warm {
			continue
		}
		peak := slices.Max(load)
		res.MaxRuns = max(res.MaxRuns, peak)
		samples = append(samples, float64(peak)*float64(n)/float64(total))
	}
	if len(samples) == 0 {
		return res, errors.New("scalesim: no samples (too few arrivals)")
	}
	var sum float64
	for _, s := range samples {
		sum += s
	}
	res.MaxOverMean = sum / float64(len(samples))
	slices.Sort(samples)
	res.P99 = samples[min(len(samples)-1, int(0.99*float64(len(samples))))]
	res.Worst = samples[len(samples)-1]
	return res, nil
}
