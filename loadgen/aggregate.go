package loadgen

import (
	"math/rand/v2"
	"time"
)

// aggregate sums finished requests. Guarded by runner.mu.
type aggregate struct {
	mix []MixItem
	cum []float64

	ttft, ttftAny, e2e, itl, tpot, queue, cancelToEnd Hist
	tokens, answerTokens, usageTokens                 int64
	outcomes                                          map[string]int
	errors                                            map[string]int
	errorSamples                                      map[string]string
	byMix                                             map[string]*mixAgg
	probes                                            ProbeSummary
	lastEndMs                                         float64
	keep                                              bool
	results                                           []Result
}

type mixAgg struct {
	n, ok, errors int
	ttft, e2e     Hist
	tokens        int64
}

func newAggregate(cfg Config) *aggregate {
	a := &aggregate{mix: cfg.Mix, outcomes: map[string]int{}, errors: map[string]int{}, errorSamples: map[string]string{},
		byMix: map[string]*mixAgg{}, keep: *cfg.KeepRequests}
	var s float64
	for _, it := range cfg.Mix {
		s += it.Weight
		a.cum = append(a.cum, s)
	}
	return a
}

func (a *aggregate) pick(rng *rand.Rand) int {
	x := rng.Float64() * a.cum[len(a.cum)-1]
	for i, c := range a.cum {
		if x < c {
			return i
		}
	}
	return len(a.cum) - 1
}

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func (a *aggregate) add(r *Result) {
	a.outcomes[r.Outcome]++
	mx := a.byMix[r.Mix]
	if mx == nil {
		mx = &mixAgg{}
		a.byMix[r.Mix] = mx
	}
	mx.n++
	a.tokens += r.Tokens
	mx.tokens += r.Tokens
	a.lastEndMs = max(a.lastEndMs, r.EndMs)
	switch r.Probe {
	case "cancel":
		a.probes.CancelTried++
		if r.Outcome == OutcomeCancelled {
			a.probes.CancelEnded++
			a.cancelToEnd.Record(msDur(r.CancelToEndMs))
		}
	case "cancel-missed":
		a.probes.CancelTried++
		a.probes.CancelMissed++
	case "reconnect-missed":
		a.probes.ReconnectMissed++
	case "reconnect":
		a.probes.ReconnectTried++
		a.probes.Reconnects += r.Reconnects
		if r.Outcome == OutcomeOK {
			a.probes.ReconnectGapFree++
		}
	}
	a.probes.SeqGaps += r.SeqGaps
	if r.Outcome == OutcomeError {
		mx.errors++
		a.errors[r.Code]++
		if _, ok := a.errorSamples[r.Code]; !ok {
			a.errorSamples[r.Code] = r.Error
		}
	}
	if r.Outcome == OutcomeOK {
		mx.ok++
		a.answerTokens += r.AnswerTokens
		a.usageTokens += r.UsageTokens
		a.queue.Record(msDur(r.QueueMs))
		if r.TTFTMs > 0 {
			a.ttft.Record(msDur(r.TTFTMs))
			mx.ttft.Record(msDur(r.TTFTMs))
		}
		if r.TTFTAnyMs > 0 {
			a.ttftAny.Record(msDur(r.TTFTAnyMs))
		}
		a.e2e.Record(msDur(r.E2EMs))
		mx.e2e.Record(msDur(r.E2EMs))
		if r.TPOTMs > 0 {
			a.tpot.Record(msDur(r.TPOTMs))
		}
		a.itl.Merge(&r.itl)
	}
	if a.keep {
		rr := *r
		rr.itl = Hist{}
		a.results = append(a.results, rr)
	}
}
