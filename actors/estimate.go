package actors

import (
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// statsMaxAge is how old the cluster's model statistics an estimate reads
// may be before a refresh is started (in the background: admission never
// waits for the cluster).
const statsMaxAge = 2 * time.Second

// estimateMinSamples: a model with fewer finished attempts in the
// telemetry window is estimated from the profiles file.
const estimateMinSamples = 3

// statsCache holds the last merged model statistics for estimates.
type statsCache struct {
	mu         sync.Mutex
	at         time.Time
	refreshing bool
	views      map[modelKey]ModelStatsView
	breakers   map[string]BreakerCount // the nodes' breakers per endpoint
}

// cachedModelStats returns the last merged statistics, starting a refresh
// (on a goroutine Shutdown waits for) when they are older than statsMaxAge.
func (e *Engine) cachedModelStats() map[modelKey]ModelStatsView {
	c := &e.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > statsMaxAge && !c.refreshing {
		c.refreshing = true
		if !e.goOwned(func() {
			views, breakers, _ := e.ClusterModelStats()
			m := make(map[modelKey]ModelStatsView, len(views))
			for _, v := range views {
				m[modelKey{v.Endpoint, v.Model}] = v
			}
			c.mu.Lock()
			c.views, c.breakers, c.at, c.refreshing = m, breakers, time.Now(), false
			c.mu.Unlock()
		}) {
			c.refreshing = false
		}
	}
	return c.views
}

// cachedBreakers returns the nodes' breakers per endpoint as of the last
// refresh of cachedModelStats (call that first).
func (e *Engine) cachedBreakers() map[string]BreakerCount {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	return e.stats.breakers
}

// perfOf is step sp's model's performance from views when it has enough
// samples, else as the profiles file declares it.
func perfOf(cfg *stagework.Config, views map[modelKey]ModelStatsView, sp stagework.StageSpec) stagework.ModelPerf {
	v, ok := views[modelKey{sp.Provider, sp.Model}]
	if !ok || v.Succeeded < estimateMinSamples || v.TTFTms.P50 == nil {
		return cfg.DeclaredPerf(sp)
	}
	p := stagework.ModelPerf{TTFT: msDuration(*v.TTFTms.P50), OutputTokens: float64(v.OutputTokens) / float64(v.Succeeded), Basis: "telemetry"}
	if v.ITLms.Mean != nil {
		p.ITL = msDuration(*v.ITLms.Mean)
	}
	return p
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// Estimate predicts a run of profile for a question and history
// (stagework.EstimateRun) from the cluster's live model statistics and
// the profiles file. maxTokens > 0 overrides every step's max_tokens. The
// question's tokens are approximated (4 bytes per token): the estimate
// serves latency and a cost indication, and admission must stay cheap.
func (e *Engine) Estimate(profile, query string, history []stagework.Message, maxTokens int) (stagework.RunEstimate, error) {
	return e.estimate(profile, nil, query, history, maxTokens)
}

// estimate is Estimate of a run whose profile may be its tenant's own
// (def: its definition; nil for the file's).
func (e *Engine) estimate(profile string, def []byte, query string, history []stagework.Message, maxTokens int) (stagework.RunEstimate, error) {
	p, err := e.profiles.resolve(profile, def)
	if err != nil {
		return stagework.RunEstimate{}, err
	}
	if maxTokens > 0 {
		cp := *p
		cp.Stages = slices.Clone(p.Stages)
		for i := range cp.Stages {
			cp.Stages[i].MaxTokens = maxTokens
		}
		p = &cp
	}
	n := utf8.RuneCountInString(query)
	for _, m := range history {
		n += utf8.RuneCountInString(m.Content)
	}
	views := e.cachedModelStats()
	return stagework.EstimateRun(p, (n+3)/4, func(sp stagework.StageSpec) stagework.ModelPerf {
		return perfOf(e.cat.stages(), views, sp)
	}, e.cat.stages().Price), nil
}

func toMsgEstimate(est stagework.RunEstimate) *messages.RunEstimate {
	return &messages.RunEstimate{AnswerTtft: durationpb.New(est.AnswerTTFT), Duration: durationpb.New(est.Duration),
		PromptTokens: est.PromptTokens, OutputTokens: est.OutputTokens, CostUsd: est.CostUSD, Basis: est.Basis}
}

// statsAt is when the cached model statistics were last refreshed.
func (e *Engine) statsAt() time.Time {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	return e.stats.at
}
