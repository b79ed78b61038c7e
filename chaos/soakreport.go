package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

var nan = math.NaN()

// soakLine is one process's series in the table.
type soakLine struct {
	proc             string
	kind             seriesKind
	start, end       float64 // first and last sample of the analysis window
	min, max         float64
	tr               trend
	verdict          verdict
	windowFrom, upTo float64
}

// soakSettle is one process's goroutines after the load.
type soakSettle struct {
	proc                 string
	before, level, final float64 // before the load, just after warm-up, after the cool-down
	ok                   bool
	judged               bool
}

// soakReport is the soak suite's figures.
type soakReport struct {
	command     string
	duration    time.Duration
	concurrency int
	tenants     int
	faults      int
	retain      time.Duration
	warmup      float64 // seconds
	loadEnd     float64 // seconds: the load stopped (the plots mark it)
	tally       *soakRun
	lines       []soakLine
	settles     []soakSettle
	profiles    map[string][]string // process → goroutine groups (goroutineProfile)
}

// suspects are the processes whose goroutines leaked or did not settle.
func (r *soakReport) suspects() []string {
	var out []string
	for _, l := range r.lines {
		if l.kind == kindGoroutines && l.verdict == verdictLeak && !slices.Contains(out, l.proc) {
			out = append(out, l.proc)
		}
	}
	for _, s := range r.settles {
		if s.judged && !s.ok && !slices.Contains(out, s.proc) {
			out = append(out, s.proc)
		}
	}
	return out
}

// judgeSoak judges every process's series over the analysis window
// [warmup, loadEnd) (for a process first sampled at t > 0: [t+warmup,
// loadEnd)) and its goroutines after coolStart.
func judgeSoak(samples []soakSample, warmup, loadEnd, coolStart float64) *soakReport {
	rep := &soakReport{warmup: warmup, loadEnd: min(loadEnd, coolStart)}
	var procs []string
	for _, s := range samples {
		if !slices.Contains(procs, s.proc) {
			procs = append(procs, s.proc)
		}
	}
	for _, p := range procs {
		// A process started during the load (a replacement node) warms up
		// too: its window starts a warm-up after its first sample.
		from := warmup
		for _, s := range samples {
			if s.proc == p {
				from = max(warmup, s.at+warmup)
				break
			}
		}
		for ki, k := range soakKinds {
			var ts, vs []float64
			for _, s := range samples {
				if s.proc == p && s.at >= from && s.at < loadEnd && s.at < coolStart && !math.IsNaN(s.figures[ki]) {
					ts, vs = append(ts, s.at), append(vs, s.figures[ki])
				}
			}
			if len(vs) == 0 {
				continue
			}
			v, tr := leakVerdict(k, ts, vs)
			rep.lines = append(rep.lines, soakLine{proc: p, kind: k, start: vs[0], end: vs[len(vs)-1],
				min: slices.Min(vs), max: slices.Max(vs), tr: tr, verdict: v, windowFrom: ts[0], upTo: ts[len(ts)-1]})
		}
		// Goroutines: before the load, the median of the first 10 s after
		// warm-up, and the last sample of the cool-down.
		gi := slices.Index(soakKinds, kindGoroutines)
		st := soakSettle{proc: p, before: nan, level: nan, final: nan}
		var level []float64
		lastAt := -1.0
		for _, s := range samples {
			g := s.figures[gi]
			if s.proc != p || math.IsNaN(g) {
				continue
			}
			if math.IsNaN(st.before) {
				st.before = g
			}
			if s.at >= warmup && s.at < warmup+10 {
				level = append(level, g)
			}
			if s.at >= coolStart && s.at > lastAt {
				st.final, lastAt = g, s.at
			}
		}
		st.level = nan
		if len(level) > 0 {
			st.level = median(level)
		}
		if len(level) > 0 && !math.IsNaN(st.final) {
			st.judged, st.ok = true, settled(st.level, st.final)
		}
		rep.settles = append(rep.settles, st)
	}
	return rep
}

// ok says whether the soak passed: no leak, goroutines settled, no run
// lost, no transcript defect.
func (r *soakReport) ok() bool {
	for _, l := range r.lines {
		if l.verdict == verdictLeak {
			return false
		}
	}
	for _, s := range r.settles {
		if s.judged && !s.ok {
			return false
		}
	}
	return r.tally == nil || (r.tally.lost == 0 && r.tally.defects == 0)
}

func (k seriesKind) format(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if k.unit == "" {
		return fmt.Sprintf("%.0f", v/k.scale)
	}
	return fmt.Sprintf("%.1f", v/k.scale)
}

func (k seriesKind) label() string {
	if k.unit == "" {
		return k.name
	}
	return k.name + " (" + k.unit + ")"
}

// write prints the report as markdown.
func (r *soakReport) write(w io.Writer) {
	fmt.Fprintf(w, "\n## Soak — %v, %d clients, %d tenants, %d node replacements\n\n", r.duration, r.concurrency, r.tenants, r.faults)
	if r.command != "" {
		fmt.Fprintf(w, "`%s`\n\n", r.command)
	}
	if t := r.tally; t != nil {
		t.mu.Lock()
		fmt.Fprintf(w, "Runs: %d started (%s; %s), %d completed, %d cancelled, %d failed, **%d lost**, %d transcript defects; %d streams dropped on purpose and resumed with Last-Event-ID, %d broken and resumed",
			t.started, mapList(t.byProfile), mapList(t.byTenant), t.completed, t.cancelled, t.failed, t.lost, t.defects, t.resumes, t.reconnects)
		if len(t.refused) > 0 {
			fmt.Fprintf(w, "; refused: %s", mapList(t.refused))
		}
		fmt.Fprintln(w, ".")
		for _, e := range t.examples {
			fmt.Fprintf(w, "- %s\n", e)
		}
		t.mu.Unlock()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Analysis window: after a warm-up of %.0f s (a node started later: as long after its start) until the load stops; gateway's finished runs retained %v. "+
		"A series LEAKs if its least-squares line rises > %.0f %% of its mean over the window (and above a floor), with t > %.0f, R² ≥ %.1f, and its last half still rises > %.0f %%.\n\n",
		r.warmup, r.retain, leakGrowth*100, leakT, leakR2, leakTail*100)
	fmt.Fprintln(w, "| process | series | start | end | min | max | slope /min | growth over window | R² | verdict |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, l := range r.lines {
		k := l.kind
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %+.1f %% | %.2f | %s |\n", l.proc, k.label(), k.format(l.start), k.format(l.end),
			k.format(l.min), k.format(l.max), signed(k, l.tr.slope*60), l.tr.growth()*100, l.tr.r2, l.verdict)
	}
	fmt.Fprintln(w, "\n| process | goroutines before load | after warm-up (under load) | after cool-down | verdict |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|")
	for _, s := range r.settles {
		v := "not judged (exited)"
		if math.IsNaN(s.level) || s.level == 0 {
			v = "not judged (started after warm-up)"
		}
		if s.judged {
			v = "ok"
			if !s.ok {
				v = fmt.Sprintf("**NOT SETTLED** (> %.2f × level + %d)", settleShare, settleSlack)
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", s.proc, kindGoroutines.format(s.before), kindGoroutines.format(s.level), kindGoroutines.format(s.final), v)
	}
	for _, p := range slices.Sorted(maps.Keys(r.profiles)) {
		g := r.profiles[p]
		fmt.Fprintf(w, "\nGoroutines of %s at the end (SIGQUIT dump, largest groups; all in goroutines-%s.txt):\n\n", p, p)
		for _, l := range g[:min(len(g), 8)] {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	verdict := "PASS"
	if !r.ok() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\nSoak: **%s**\n", verdict)
}

func signed(k seriesKind, v float64) string {
	if k.unit == "" {
		return fmt.Sprintf("%+.2f", v/k.scale)
	}
	return fmt.Sprintf("%+.2f", v/k.scale)
}

func mapList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// save writes samples.csv, one SVG per series and report.md into dir.
func (r *soakReport) save(dir string, samples []soakSample) error {
	var b bytes.Buffer
	b.WriteString("t_s,process,pid,phase")
	for _, k := range soakKinds {
		b.WriteString("," + k.name)
	}
	b.WriteByte('\n')
	for _, s := range samples {
		fmt.Fprintf(&b, "%.3f,%s,%d,%s", s.at, s.proc, s.pid, s.phase)
		for _, v := range s.figures {
			if math.IsNaN(v) {
				b.WriteString(",")
			} else {
				fmt.Fprintf(&b, ",%.0f", v)
			}
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "samples.csv"), b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	for ki, k := range soakKinds {
		if err := os.WriteFile(filepath.Join(dir, k.name+".svg"), []byte(svgPlot(k, ki, samples, r.warmup, r.loadEnd)), 0o644); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
	}
	var md bytes.Buffer
	r.write(&md)
	for _, k := range soakKinds {
		fmt.Fprintf(&md, "\n![%s](%s.svg)\n", k.label(), k.name)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), md.Bytes(), 0o644); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	return nil
}

// svgPlot draws series ki of every process against time: one polyline per
// process, dashed lines where warm-up ends and where the load ends.
func svgPlot(k seriesKind, ki int, samples []soakSample, warmup, loadEnd float64) string {
	const W, H, L, R, T, B = 900.0, 360.0, 70.0, 170.0, 30.0, 40.0
	var procs []string
	maxT, maxV := 1.0, 0.0
	for _, s := range samples {
		v := s.figures[ki]
		if math.IsNaN(v) {
			continue
		}
		if !slices.Contains(procs, s.proc) {
			procs = append(procs, s.proc)
		}
		maxT, maxV = max(maxT, s.at), max(maxV, v/k.scale)
	}
	if maxV == 0 {
		maxV = 1
	}
	maxV *= 1.1
	x := func(t float64) float64 { return L + t/maxT*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/maxV*(H-T-B) }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="18" font-size="14">%s per process (soak)</text>`+"\n", L, k.label())
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n",
		L, H-B, W-R, H-B, L, T, L, H-B)
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.4g</text>`+"\n", L-5, y(v)+4, v)
		t := maxT * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%.0f s</text>`+"\n", x(t), H-B+16, t)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="gray" stroke-dasharray="4 4"/><text x="%.1f" y="%.0f" fill="gray">warm-up</text>`+"\n",
		x(warmup), T, x(warmup), H-B, x(warmup)+3, T+12)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="gray" stroke-dasharray="4 4"/><text x="%.1f" y="%.0f" fill="gray">load ends</text>`+"\n",
		x(loadEnd), T, x(loadEnd), H-B, x(loadEnd)+3, T+12)
	for pi, p := range procs {
		col := colors[pi%len(colors)]
		var pts []string
		for _, s := range samples {
			if s.proc == p && !math.IsNaN(s.figures[ki]) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.at), y(s.figures[ki]/k.scale)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`+"\n", W-R+10, T+14+float64(pi)*16, col, p)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
