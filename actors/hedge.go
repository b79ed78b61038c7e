package actors

import (
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// hedgeMinSamples: with fewer TTFTs of a model in its telemetry window, a
// hedge waits the default delay (Config.HedgeWait), not the model's p95.
const hedgeMinSamples = 8

// hedgeTick is a coordinator's timer to itself: the primary of attempt has
// had its p95 time to send a first token.
type hedgeTick struct {
	step    string
	attempt int32
}

// hedgeDelay is when a hedged step's fallback starts beside its primary
// model m: after m's recent p95 TTFT on this node (def with fewer than
// hedgeMinSamples), or at once — speculative — when that p95 is over the
// step's TTFT budget: the primary is expected to miss it.
func hedgeDelay(t *Telemetry, spec stagework.StageSpec, m stagework.ModelRef, def time.Duration) (wait time.Duration, speculative bool) {
	p95 := t.TTFTQuantile(m.Provider, m.Model, 0.95, hedgeMinSamples, -1)
	switch {
	case p95 < 0:
		return def, false
	case spec.TTFTBudget > 0 && p95 > spec.TTFTBudget:
		return 0, true
	}
	return p95, false
}
