package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Stats summarises one latency in milliseconds.
type Stats struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	// CDF is the distribution for plots (at most 200 points).
	CDF []CDFPointMs `json:"cdf,omitempty"`
}

// CDFPointMs is a CDFPoint in milliseconds.
type CDFPointMs struct {
	Ms       float64 `json:"ms"`
	Fraction float64 `json:"f"`
}

func statsOf(h *Hist, cdf bool) Stats {
	s := Stats{Count: h.Count(), Mean: ms(h.Mean()), Min: ms(h.Min()), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)),
		P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
	if cdf {
		for _, p := range h.CDF(200) {
			s.CDF = append(s.CDF, CDFPointMs{ms(p.Value), p.Fraction})
		}
	}
	return s
}

// ProbeSummary counts the probes.
type ProbeSummary struct {
	// CancelTried cancel probes; CancelEnded of them ended cancelled (their
	// cancel_to_end latency is in Latency["cancel_to_end"]); CancelMissed
	// ended before the DELETE took effect.
	CancelTried  int `json:"cancel_tried"`
	CancelEnded  int `json:"cancel_ended"`
	CancelMissed int `json:"cancel_missed"`
	// ReconnectTried streams were dropped on purpose (Reconnects in all)
	// and ReconnectGapFree of them got every seq exactly once.
	ReconnectTried   int `json:"reconnect_tried"`
	Reconnects       int `json:"reconnects"`
	ReconnectGapFree int `json:"reconnect_gap_free"`
	// ReconnectMissed runs ended before their drop point (not counted
	// in ReconnectTried).
	ReconnectMissed int `json:"reconnect_missed"`
	// SeqGaps counts seqs missing or repeated over every run stream.
	SeqGaps int `json:"seq_gaps"`
}

// MixReport is one mix item's share of the load.
type MixReport struct {
	Name     string `json:"name"`
	Requests int    `json:"requests"`
	OK       int    `json:"ok"`
	Errors   int    `json:"errors"`
	Tokens   int64  `json:"tokens"`
	TTFT     Stats  `json:"ttft"`
	E2E      Stats  `json:"e2e"`
}

// Second is one second of the load's timeline.
type Second struct {
	T        int   `json:"t"`
	Sent     int64 `json:"sent"`
	Done     int64 `json:"done"`
	Errors   int64 `json:"errors"`
	Tokens   int64 `json:"tokens"`
	InFlight int64 `json:"in_flight"`
}

// Report is a load's results: Run returns it, WriteJSON and WriteHTML
// write it.
type Report struct {
	Tool     string    `json:"tool"`
	Started  time.Time `json:"started"`
	Target   Target    `json:"target"`
	URL      string    `json:"url"`
	Loop     string    `json:"loop"` // "open 20/s poisson" or "closed 8"
	Requests int       `json:"requests_max"`
	Duration float64   `json:"duration_max_s"`
	// Interrupted: the load was stopped (Ctrl-C) before its end.
	Interrupted bool `json:"interrupted"`
	// WallSeconds runs from the start to the last request's end.
	WallSeconds float64 `json:"wall_s"`

	Sent     int            `json:"sent"`
	Outcomes map[string]int `json:"outcomes"`
	// Errors counts failed requests by code: an HTTP refusal
	// ("429 concurrent_runs"), a streamed failure (run_failed's code, an
	// OpenAI error chunk's code), "seq_gap", "stream_lost",
	// "incomplete_stream", "cancel_not_ended", "connection"…
	Errors       map[string]int    `json:"errors"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`

	RunsPerSecond         float64 `json:"runs_per_s"`
	TokensPerSecond       float64 `json:"tokens_per_s"`
	AnswerTokensPerSecond float64 `json:"answer_tokens_per_s"`
	Tokens                int64   `json:"tokens"`
	AnswerTokens          int64   `json:"answer_tokens"`
	UsageTokens           int64   `json:"usage_completion_tokens"`
	TokenSource           string  `json:"token_source"`

	// Latency: ttft, ttft_any, e2e, itl, tpot, queue, cancel_to_end (see
	// Result for the definitions).
	Latency  map[string]Stats `json:"latency"`
	Mix      []MixReport      `json:"mix"`
	Probes   ProbeSummary     `json:"probes"`
	Timeline []Second         `json:"timeline"`
	// Nodes is each sampled node's runs in flight over time.
	Nodes []NodeSeries `json:"nodes,omitempty"`
	// Agreement compares the load's figures with the server's own.
	Agreement *Agreement `json:"agreement,omitempty"`
	// Results is every request (Config.KeepRequests), in the order they
	// ended.
	Results []Result `json:"results,omitempty"`
}

func (r *runner) report(end time.Time) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agg
	rep := &Report{Tool: "qlc-load", Started: r.start.UTC(), Target: r.cfg.Target, URL: r.cfg.URL, Requests: r.cfg.Requests,
		Duration: r.cfg.Duration.Seconds(), Sent: int(r.sent.Load()), Outcomes: a.outcomes, Errors: a.errors, ErrorSamples: a.errorSamples,
		Tokens: a.tokens, AnswerTokens: a.answerTokens, UsageTokens: a.usageTokens, Probes: a.probes, Results: a.results}
	if r.cfg.Rate > 0 {
		rep.Loop = fmt.Sprintf("open %g/s %s", r.cfg.Rate, r.cfg.Arrival)
	} else {
		rep.Loop = fmt.Sprintf("closed %d", r.cfg.Concurrency)
	}
	rep.TokenSource = "token_delta events' tokens (the server's count)"
	if r.cfg.Target == TargetChat {
		rep.TokenSource = "local tokenizer " + r.cfg.Tokenizer + " over content and reasoning text"
		if r.cfg.Tokenizer == "chunks" {
			rep.TokenSource = "one per non-empty chunk"
		}
	}
	rep.WallSeconds = a.lastEndMs / 1000
	if rep.WallSeconds <= 0 {
		rep.WallSeconds = end.Sub(r.start).Seconds()
	}
	if w := rep.WallSeconds; w > 0 {
		rep.RunsPerSecond = float64(a.outcomes[OutcomeOK]) / w
		rep.TokensPerSecond = float64(a.tokens) / w
		rep.AnswerTokensPerSecond = float64(a.answerTokens) / w
	}
	rep.Latency = map[string]Stats{
		"ttft": statsOf(&a.ttft, true), "ttft_any": statsOf(&a.ttftAny, true), "e2e": statsOf(&a.e2e, true),
		"itl": statsOf(&a.itl, true), "tpot": statsOf(&a.tpot, true), "queue": statsOf(&a.queue, false),
		"cancel_to_end": statsOf(&a.cancelToEnd, true),
	}
	for _, name := range sortedKeys(a.byMix) {
		m := a.byMix[name]
		rep.Mix = append(rep.Mix, MixReport{Name: name, Requests: m.n, OK: m.ok, Errors: m.errors, Tokens: m.tokens,
			TTFT: statsOf(&m.ttft, false), E2E: statsOf(&m.e2e, false)})
	}
	last := min(int(end.Sub(r.start)/time.Second), len(r.tl.secs)-1)
	for i := 0; i <= last; i++ {
		s := &r.tl.secs[i]
		rep.Timeline = append(rep.Timeline, Second{T: i, Sent: s.sent.Load(), Done: s.done.Load(), Errors: s.errors.Load(),
			Tokens: s.tokens.Load(), InFlight: s.inFlight.Load()})
	}
	rep.Nodes = r.nodes.series()
	return rep
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(rep)
}

// WriteFile writes the report to path: JSON, or HTML when path ends in
// ".html".
func (rep *Report) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if strings.HasSuffix(path, ".html") {
		err = rep.WriteHTML(f)
	} else {
		err = rep.WriteJSON(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteSummary writes the report as a short text table.
func (rep *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "qlc-load: %s %s, %s; %d sent in %.1f s", rep.Target, rep.URL, rep.Loop, rep.Sent, rep.WallSeconds)
	if rep.Interrupted {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	var outs []string
	for _, k := range sortedKeys(rep.Outcomes) {
		outs = append(outs, fmt.Sprintf("%s %d", k, rep.Outcomes[k]))
	}
	fmt.Fprintf(w, "outcomes: %s\n", strings.Join(outs, ", "))
	fmt.Fprintf(w, "throughput: %.2f runs/s, %.0f tokens/s (%.0f answer tokens/s; tokens: %s)\n",
		rep.RunsPerSecond, rep.TokensPerSecond, rep.AnswerTokensPerSecond, rep.TokenSource)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency (ms)\tcount\tmean\tp50\tp90\tp99\tmax\t")
	for _, k := range []string{"ttft", "ttft_any", "e2e", "itl", "tpot", "queue", "cancel_to_end"} {
		s := rep.Latency[k]
		if s.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", k, s.Count, s.Mean, s.P50, s.P90, s.P99, s.Max)
	}
	tw.Flush()
	if len(rep.Errors) > 0 {
		codes := sortedKeys(rep.Errors)
		sort.SliceStable(codes, func(i, j int) bool { return rep.Errors[codes[i]] > rep.Errors[codes[j]] })
		fmt.Fprintln(w, "errors by code:")
		for _, c := range codes {
			fmt.Fprintf(w, "  %6d  %s  (%s)\n", rep.Errors[c], c, rep.ErrorSamples[c])
		}
	}
	p := rep.Probes
	if p.CancelTried > 0 {
		fmt.Fprintf(w, "cancel probes: %d, ended cancelled %d (DELETE → end p50 %.1f ms, max %.1f ms), missed %d\n",
			p.CancelTried, p.CancelEnded, rep.Latency["cancel_to_end"].P50, rep.Latency["cancel_to_end"].Max, p.CancelMissed)
	}
	if p.ReconnectTried > 0 {
		fmt.Fprintf(w, "reconnect probes: %d, %d reconnects, gap-free %d of %d\n", p.ReconnectTried, p.Reconnects, p.ReconnectGapFree, p.ReconnectTried)
	}
	if p.SeqGaps > 0 {
		fmt.Fprintf(w, "SEQ GAPS: %d seqs missing or repeated\n", p.SeqGaps)
	}
	if rep.Agreement != nil {
		rep.Agreement.write(w)
	}
}
