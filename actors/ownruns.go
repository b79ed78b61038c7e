package actors

import "sync"

// The runs this process placed, by node (issue 18: every refusal in
// ≤ 5 ms). A gateway refuses at the door only while every node announced
// it is at its run limit (HeadroomPlacer.Saturated), and the announcements
// lag by the load interval plus gossip: between two, a gateway under 3×
// overload offered a node run after run it could not take, and each such
// run was refused only after a round trip to a starved node — 822 of the
// 871 refusals made past the door took over 5 ms, up to 1 s (chaos
// overload, 20 s). What this process placed itself it knows at once: a
// placer that reads ownRuns.on (OwnLoadPlacer) counts a node as loaded by
// at least the runs this process has running there.

// ownRuns counts this process's unfinished runs by the actor address of
// the node hosting their coordinator.
type ownRuns struct {
	mu sync.Mutex
	on map[string]int    // node → runs of ours there
	of map[string]string // run id → its node
}

func newOwnRuns() *ownRuns { return &ownRuns{on: map[string]int{}, of: map[string]string{}} }

// place records that run's coordinator is now on node (a start, or a move
// from another node).
func (o *ownRuns) place(run, node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(run)
	o.of[run] = node
	o.on[node]++
}

// end forgets run (it ended, or never started); a no-op for a run not placed.
func (o *ownRuns) end(run string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(run)
}

func (o *ownRuns) dropLocked(run string) {
	node, ok := o.of[run]
	if !ok {
		return
	}
	delete(o.of, run)
	if o.on[node]--; o.on[node] <= 0 {
		delete(o.on, node)
	}
}

// count is the number of our unfinished runs on node. Non-blocking but for
// the short lock; called on every request for a run.
func (o *ownRuns) count(node string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.on[node]
}
