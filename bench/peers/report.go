package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// stat is the median and range of one figure over rounds.
type stat struct {
	Med, Min, Max float64
	N             int
}

// summary returns the median (the mean of the middle two for an even
// count) and the range of vs.
func summary(vs []float64) stat {
	if len(vs) == 0 {
		return stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Med: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// format writes the median with its range: "54.1 (53.0–55.2)"; the range
// is left out for one round or when it is a point.
func (s stat) format(prec int) string {
	if s.N == 0 {
		return "–"
	}
	m := fmtNum(s.Med, prec)
	if s.N == 1 || (fmtNum(s.Min, prec) == m && fmtNum(s.Max, prec) == m) {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, fmtNum(s.Min, prec), fmtNum(s.Max, prec))
}

// fmtNum writes v with prec decimals, thousands as "k" from 10 000 up.
func fmtNum(v float64, prec int) string {
	if v >= 10_000 || v <= -10_000 {
		return fmt.Sprintf("%.1f k", v/1000)
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// fanKey identifies a fan-out configuration and target.
type fanKey struct {
	Readers int
	Mode    string
	Target  string
}

// fanRow is one row of the fan-out table: a configuration's rounds.
type fanRow struct {
	fanKey
	Rounds []roundResult
}

// groupRounds groups results by configuration, in the order of readers,
// modes and targets given.
func groupRounds(results []roundResult, readers []int, modes, targets []string) []fanRow {
	var rows []fanRow
	for _, n := range readers {
		for _, m := range modes {
			for _, t := range targets {
				row := fanRow{fanKey: fanKey{n, m, t}}
				for _, r := range results {
					if r.Readers == n && r.Mode == m && r.Target == t {
						row.Rounds = append(row.Rounds, r)
					}
				}
				if len(row.Rounds) > 0 {
					rows = append(rows, row)
				}
			}
		}
	}
	return rows
}

// pick returns f of every round.
func (r fanRow) pick(f func(roundResult) float64) stat {
	vs := make([]float64, len(r.Rounds))
	for i, x := range r.Rounds {
		vs[i] = f(x)
	}
	return summary(vs)
}

// writeFanTable writes the fan-out table in markdown.
func writeFanTable(w io.Writer, rows []fanRow, rate float64) {
	fmt.Fprintln(w, "| readers | source | target | deliveries/s | frames/s | latency p50 ms | latency p99 ms | server CPU µs/delivery | server CPU s | RSS idle / peak / after MiB | readers lost | source tokens/s |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
	for _, r := range rows {
		src := fmt.Sprintf("%g tokens/s", rate)
		if r.Mode == modeFull {
			src = "full speed"
		}
		lost := 0
		for _, x := range r.Rounds {
			lost += x.Lost
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %d of %d | %s |\n",
			r.Readers, src, r.Target,
			r.pick(func(x roundResult) float64 { return x.DeliveriesPerS }).format(0),
			r.pick(func(x roundResult) float64 { return x.FramesPerS }).format(0),
			r.pick(func(x roundResult) float64 { return x.P50ms }).format(2),
			r.pick(func(x roundResult) float64 { return x.P99ms }).format(2),
			r.pick(func(x roundResult) float64 { return x.CPUPerDelivery }).format(2),
			r.pick(func(x roundResult) float64 { return x.ServerCPUSecs }).format(2),
			r.pick(func(x roundResult) float64 { return x.RSSIdleMiB }).format(0),
			r.pick(func(x roundResult) float64 { return x.RSSPeakMiB }).format(0),
			r.pick(func(x roundResult) float64 { return x.RSSAfterMiB }).format(0),
			lost, r.Readers*len(r.Rounds), sourceCell(r))
	}
}

// sourceCell is the source's rate, and for a publisher held back by the
// server's API, how late its last token went out against the schedule.
func sourceCell(r fanRow) string {
	cell := r.pick(func(x roundResult) float64 { return x.SourceRate }).format(0)
	if lag := r.pick(func(x roundResult) float64 { return x.SourceLagMs / 1000 }); lag.Med >= 0.05 {
		cell += ", last sent " + lag.format(1) + " s late"
	}
	return cell
}

// writeComparisons writes, for each configuration both targets ran, QLC's
// figures as ratios of Centrifugo's (medians), and checks the issue's
// goals at 1000 readers and the paced rate.
func writeComparisons(w io.Writer, rows []fanRow) {
	byKey := map[fanKey]fanRow{}
	for _, r := range rows {
		byKey[r.fanKey] = r
	}
	for _, r := range rows {
		if r.Target != "QLC" {
			continue
		}
		c, ok := byKey[fanKey{r.Readers, r.Mode, "Centrifugo"}]
		if !ok {
			continue
		}
		med := func(row fanRow, f func(roundResult) float64) float64 { return row.pick(f).Med }
		dq, dc := med(r, func(x roundResult) float64 { return x.DeliveriesPerS }), med(c, func(x roundResult) float64 { return x.DeliveriesPerS })
		cq, cc := med(r, func(x roundResult) float64 { return x.CPUPerDelivery }), med(c, func(x roundResult) float64 { return x.CPUPerDelivery })
		pq, pc := med(r, func(x roundResult) float64 { return x.P99ms }), med(c, func(x roundResult) float64 { return x.P99ms })
		line := fmt.Sprintf("- %d readers, %s: QLC/Centrifugo deliveries/s **%s×**, CPU per delivery **%s×**, p99 %.2f vs %.2f ms",
			r.Readers, r.Mode, ratio(dq, dc), ratio(cq, cc), pq, pc)
		if r.Readers == 1000 && r.Mode == modePaced {
			line += fmt.Sprintf(" — goals (≥ 2×, ≤ 0.5×, p99 below): %s, %s, %s",
				verdict(dc > 0 && dq >= 2*dc), verdict(cc > 0 && cq <= 0.5*cc), verdict(pq < pc))
		}
		fmt.Fprintln(w, line)
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// ttftRow is one arm's rounds (the arm at one answer length).
type ttftRow struct {
	Arm    ttftArm
	Rounds []ttftRound
}

// isFloor reports whether an arm is a floor (the proxy, one or four calls).
func isFloor(a ttftArm) bool { return a.Name == armProxy1 || a.Name == armProxy4 }

// addedOverFloor returns, for each round of r, r's p50 TTFT and median E2E
// minus its floor's (the proxy arm of the same stages and length) in the
// same round; ok is false for a floor or an arm without one.
func addedOverFloor(r ttftRow, rows []ttftRow) (ttft, e2e []float64, ok bool) {
	if isFloor(r.Arm) {
		return nil, nil, false
	}
	for _, f := range rows {
		if !isFloor(f.Arm) || f.Arm.Stages != r.Arm.Stages || f.Arm.Tokens != r.Arm.Tokens {
			continue
		}
		for _, x := range r.Rounds {
			for _, y := range f.Rounds {
				if y.Round == x.Round {
					ttft = append(ttft, x.TTFT["p50"]-y.TTFT["p50"])
					e2e = append(e2e, x.E2E-y.E2E)
				}
			}
		}
		return ttft, e2e, true
	}
	return nil, nil, false
}

// writeTTFTTable writes the TTFT table (a row per arm and answer length:
// TTFT p50/p99, E2E, and what QLC adds over its floor, paired round by
// round), then for each non-floor arm measured at several lengths the
// added cost per token: the slope of the added E2E (and TTFT) between the
// shortest and the longest answer, per token the upstream streamed (a
// four-stage answer streams four times its length).
func writeTTFTTable(w io.Writer, rows []ttftRow) {
	fmt.Fprintln(w, "| tokens a stage | stages | path | TTFT p50 ms | TTFT p99 ms | E2E p50 ms | added TTFT p50 over the floor, ms | added E2E p50 over the floor, ms |")
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		var p50, p99, e2e []float64
		for _, x := range r.Rounds {
			p50 = append(p50, x.TTFT["p50"])
			p99 = append(p99, x.TTFT["p99"])
			e2e = append(e2e, x.E2E)
		}
		addT, addE, ok := addedOverFloor(r, rows)
		at, ae := "–", "–"
		if ok {
			at, ae = summary(addT).format(3), summary(addE).format(3)
		}
		fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %s | %s | %s |\n", r.Arm.Tokens, r.Arm.Stages, r.Arm.Name,
			summary(p50).format(3), summary(p99).format(3), summary(e2e).format(3), at, ae)
	}
	fmt.Fprintln(w)
	type key struct {
		name   string
		stages int
	}
	type point struct {
		tokens    int
		ttft, e2e float64
	}
	var order []key
	points := map[key][]point{}
	for _, r := range rows {
		addT, addE, ok := addedOverFloor(r, rows)
		if !ok || len(addE) == 0 {
			continue
		}
		k := key{r.Arm.Name, r.Arm.Stages}
		if _, seen := points[k]; !seen {
			order = append(order, k)
		}
		points[k] = append(points[k], point{r.Arm.Tokens, summary(addT).Med, summary(addE).Med})
	}
	for _, k := range order {
		ps := points[k]
		lo, hi := ps[0], ps[0]
		for _, p := range ps {
			if p.tokens < lo.tokens {
				lo = p
			}
			if p.tokens > hi.tokens {
				hi = p
			}
		}
		if hi.tokens == lo.tokens {
			continue
		}
		per := float64((hi.tokens - lo.tokens) * k.stages)
		fmt.Fprintf(w, "- %s: added per token over the floor (%d → %d tokens a stage): E2E **%.0f ns**, TTFT %.0f ns\n",
			k.name, lo.tokens, hi.tokens, (hi.e2e-lo.e2e)*1e6/per, (hi.ttft-lo.ttft)*1e6/per)
	}
}

// mdEscape makes s safe in a markdown table cell.
func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
