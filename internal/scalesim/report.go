package scalesim

import (
	"fmt"
	"io"
	"time"
)

// PlacementRow is one line of the placement table: the same nodes, load
// and seed placed three ways.
type PlacementRow struct {
	// One is plain rendezvous hashing (one choice; loads do not matter).
	One PlacementResult
	// Two is the shipped placement: two choices over loads as stale as
	// gossip makes them (Announce and GossipDelay defaults).
	Two PlacementResult
	// Fresh is two choices over exact loads: the bound that faster load
	// gossip could reach.
	Fresh PlacementResult
}

// PlacementSweep simulates each node count of nodes three ways (see
// PlacementRow) at perNode runs per node. The run length in turnovers
// shrinks from 10 to 4 above 100 nodes: one placement costs O(nodes log
// nodes) (BenchmarkPickLeastLoaded), and 500 nodes × 32 runs already give
// tens of thousands of samples per turnover.
func PlacementSweep(nodes []int, perNode float64, seed uint64, progress func(PlacementRow)) ([]PlacementRow, error) {
	var rows []PlacementRow
	for _, n := range nodes {
		turn := 10
		if n > 100 {
			turn = 4
		}
		base := PlacementConfig{Nodes: n, PerNode: perNode, Turnovers: turn, Seed: seed}
		var row PlacementRow
		var err error
		one := base
		one.Choices = 1
		if row.One, err = SimulatePlacement(one); err != nil {
			return rows, err
		}
		if row.Two, err = SimulatePlacement(base); err != nil {
			return rows, err
		}
		fresh := base
		fresh.Announce = -1
		if row.Fresh, err = SimulatePlacement(fresh); err != nil {
			return rows, err
		}
		rows = append(rows, row)
		if progress != nil {
			progress(row)
		}
	}
	return rows, nil
}

// WritePlacementTable writes rows as a Markdown table.
func WritePlacementTable(w io.Writer, rows []PlacementRow) {
	fmt.Fprintln(w, "| nodes | runs/node (mean) | arrivals | one choice: max/mean (p99) | two choices, gossiped loads: max/mean (p99) | two choices, exact loads: max/mean (p99) | busiest node, two choices (runs) |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %.0f | %d | %.3f (%.3f) | %.3f (%.3f) | %.3f (%.3f) | %d |\n",
			r.Two.Nodes, r.Two.PerNode, r.Two.Arrivals, r.One.MaxOverMean, r.One.P99,
			r.Two.MaxOverMean, r.Two.P99, r.Fresh.MaxOverMean, r.Fresh.P99, r.Two.MaxRuns)
	}
}

// WriteMembershipTable writes results as Markdown tables: times, then
// traffic and the health of the process that ran them.
func WriteMembershipTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| members | reps | join → all (median / max) | death → all (median / max) | metadata change → all (median / max) | waits timed out |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		if r.Failed != "" {
			fmt.Fprintf(w, "| %d | – | %s | | | |\n", r.N, r.Failed)
			continue
		}
		fmt.Fprintf(w, "| %d | %d | %s / %s | %s / %s | %s / %s | %d |\n", r.N, len(r.Join),
			ms(quantile(r.Join, 0.5)), ms(quantile(r.Join, 1)), ms(quantile(r.Death, 0.5)), ms(quantile(r.Death, 1)),
			ms(quantile(r.Meta, 0.5)), ms(quantile(r.Meta, 1)), r.Missed)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| members | bytes/member/s (packets + streams) | busiest member B/s | packets/member/s | packet loss | CPU (of all cores) | timer lag p99 / max (start max) | min view | fenced | goroutines |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		if r.Failed != "" {
			continue
		}
		fmt.Fprintf(w, "| %d | %.0f (%.0f + %.0f) | %.0f | %.1f | %.2f %% | %.0f %% | %s / %s (%s) | %d | %d | %d |\n", r.N,
			r.BytesPerMember, r.PacketBytesPerMember, r.StreamBytesPerMember, r.MaxBytesPerMember, r.PacketsPerMember,
			100*r.Loss, 100*r.CPU, ms(r.LagP99), ms(r.LagMax), ms(r.StartLagMax), r.MinView, r.Fenced, r.Goroutines)
	}
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

// RepsFor is how many repetitions a membership simulation of n members
// gets when the caller asks for reps: at most 2 above 250 members (each
// repetition costs seconds of two saturated cores there).
func RepsFor(n, reps int) int {
	if n >= 250 {
		return min(reps, 2)
	}
	return reps
}
