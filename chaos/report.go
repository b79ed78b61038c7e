package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is one scenario's figures.
type report struct {
	scenario string
	backend  string // "" (local processes) or "docker compose"
	command  string
	faults   string // what was injected, e.g. "10 × kill -9"
	wall     time.Duration

	started, completed, failed, cancelled, lost int
	failedBy                                    map[string]int
	refusedBy                                   map[string]int
	cancelAsked, cancelLate                     int // DELETEs sent; of those, 409 (the run had ended)
	tokensAfterCancel                           int
	defects                                     int
	defectsBy                                   map[string]int
	examples                                    []string
	recovery                                    []time.Duration
	resumes                                     []time.Duration
	made                                        []time.Duration // fault → the redo event's own time
	slowest                                     string          // the run with the longest recovery
	slowestRec                                  time.Duration
	unrecovered                                 int
	restartGaps                                 []time.Duration
	restarts, retries, fallbacks, reconnects    int
	quiescentTokens                             float64
	extra                                       [][2]string
	failedNoReason                              int
	budget                                      *budgetResult // the budget check (budget.go), if it ran
}

func newReport(scenario, command string) *report {
	return &report{scenario: scenario, command: command, failedBy: map[string]int{}, refusedBy: map[string]int{}, defectsBy: map[string]int{}}
}

// add folds the runs' results in.
func (r *report) add(results []*runResult) {
	for _, x := range results {
		if x.refused != "" {
			r.refusedBy[x.refused]++
			continue
		}
		r.started++
		if x.cancelAsked {
			r.cancelAsked++
			if x.cancelStatus == 409 {
				r.cancelLate++
			}
		}
		switch {
		case x.lost:
			r.lost++
			r.examples = append(r.examples, fmt.Sprintf("%s: LOST (no terminal event within the run timeout)", x.id))
		case x.status == "completed":
			r.completed++
		case x.status == "failed":
			r.failed++
			r.failedBy[x.code]++
			if x.code == "" || x.reason == "" {
				r.failedNoReason++
			}
		case x.status == "cancelled":
			r.cancelled++
		}
		r.tokensAfterCancel += x.tokensAfter
		r.defects += len(x.defects)
		for _, d := range x.defects {
			kind, _, _ := strings.Cut(d, ":")
			r.defectsBy[kind]++
			if len(r.examples) < 20 {
				r.examples = append(r.examples, x.id+": "+d)
			}
		}
		r.recovery = append(r.recovery, x.recovered...)
		for _, d := range x.recovered {
			if d > r.slowestRec {
				r.slowest, r.slowestRec = x.id, d
			}
		}
		r.resumes = append(r.resumes, x.resumes...)
		r.made = append(r.made, x.made...)
		r.unrecovered += x.lostFault
		r.restartGaps = append(r.restartGaps, x.restartGaps...)
		r.restarts += x.restarts
		r.retries += x.retries
		r.fallbacks += x.fallbacks
		r.reconnects += x.reconnects
	}
}

// ok is whether the scenario kept QLC's promise.
func (r *report) ok() bool {
	return r.lost == 0 && r.defects == 0 && r.tokensAfterCancel == 0 && r.quiescentTokens == 0 && r.failedNoReason == 0 &&
		(r.budget == nil || len(r.budget.violations) == 0)
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000)
}

func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s (n=%d)", ms(pct(ds, 0.5)), ms(pct(ds, 0.99)), ms(slices.Max(ds)), len(ds))
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(no code)"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

func must0(n int) string {
	if n == 0 {
		return "**0**"
	}
	return fmt.Sprintf("**%d ✗**", n)
}

// machine describes where the figures were measured.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	s := fmt.Sprintf("%d cores, %s %s/%s", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if model != "" {
		s += ", " + model
	}
	return s
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "\n### chaos: %s%s\n\n", r.scenario, backendSuffix(r.backend))
	fmt.Fprintf(w, "`%s` — %s, %s\n\n", r.command, machine(), r.wall.Round(time.Second))
	fmt.Fprintf(w, "| figure | value |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(w, "| %s | %s |\n", k, v) }
	row("faults injected", r.faults)
	row("runs started", fmt.Sprint(r.started))
	row("completed", fmt.Sprint(r.completed))
	failed := fmt.Sprint(r.failed)
	if r.failed > 0 {
		failed += " (" + counts(r.failedBy) + ")"
	}
	row("failed (by code)", failed)
	row("cancelled", fmt.Sprintf("%d (DELETE sent for %d; %d arrived after the run ended)", r.cancelled, r.cancelAsked, r.cancelLate))
	if len(r.refusedBy) > 0 {
		row("POST refused (not started)", counts(r.refusedBy))
	}
	row("runs LOST", must0(r.lost))
	defects := must0(r.defects)
	if r.defects > 0 {
		defects += " (" + counts(r.defectsBy) + ")"
	}
	row("transcript defects", defects)
	row("tokens after a cancel", must0(r.tokensAfterCancel))
	row("tokens streamed with no run active (2 s)", must0(int(r.quiescentTokens)))
	row("recovery, fault → next token of an affected run (p50 / p99 / max)", dist(r.recovery))
	if r.slowest != "" {
		row("slowest recovery", fmt.Sprintf("%s (%s)", r.slowest, ms(r.slowestRec)))
	}
	row("fault → the run's redo event (stage_restarted / stage_started) (p50 / p99 / max)", dist(r.resumes))
	if len(r.made) > 0 {
		row("fault → the redo event's time stamp, when its coordinator logged it (same clock on one host) (p50 / p99 / max)", dist(r.made))
	}
	if r.unrecovered > 0 {
		row("affected runs that ended with no new token", fmt.Sprint(r.unrecovered))
	}
	row("stage_restarted → next token (p50 / p99 / max)", dist(r.restartGaps))
	row("stage restarts / retries / fallbacks seen", fmt.Sprintf("%d / %d / %d", r.restarts, r.retries, r.fallbacks))
	row("stream reconnects", fmt.Sprint(r.reconnects))
	for _, kv := range r.extra {
		row(kv[0], kv[1])
	}
	if r.budget != nil {
		for _, kv := range r.budget.rows() {
			row(kv[0], kv[1])
		}
	}
	if len(r.examples) > 0 || (r.budget != nil && len(r.budget.violations) > 0) {
		fmt.Fprintf(w, "\nFirst problems found:\n\n")
		for _, e := range r.examples {
			fmt.Fprintf(w, "- %s\n", e)
		}
		if r.budget != nil {
			for i, v := range r.budget.violations {
				if i == 10 {
					fmt.Fprintf(w, "- … %d more budget violations\n", len(r.budget.violations)-10)
					break
				}
				fmt.Fprintf(w, "- budget: %s\n", v)
			}
		}
	}
}

// backendSuffix is " (backend)" for a backend other than local processes, else "".
func backendSuffix(backend string) string {
	if backend == "" {
		return ""
	}
	return " (" + backend + ")"
}

// summary is one row per scenario.
func summary(w io.Writer, reps []*report) {
	fmt.Fprintf(w, "\n### chaos summary%s\n\n%s\n\n", backendSuffix(reps[0].backend), machine())
	fmt.Fprintln(w, "| scenario | faults | started | completed | failed | cancelled | lost | defects | tokens after cancel | budget violations | recovery p50 / p99 / max |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range reps {
		rec := "–"
		if len(r.recovery) > 0 {
			rec = fmt.Sprintf("%s / %s / %s", ms(pct(r.recovery, 0.5)), ms(pct(r.recovery, 0.99)), ms(slices.Max(r.recovery)))
		}
		bv := "– (not checked)"
		if r.budget != nil && r.budget.attempts > 0 {
			bv = must0(len(r.budget.violations))
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %s | %s | %s | %s | %s |\n", r.scenario, r.faults, r.started, r.completed, r.failed, r.cancelled,
			must0(r.lost), must0(r.defects), must0(r.tokensAfterCancel), bv, rec)
	}
}
