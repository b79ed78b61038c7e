package loadgen

import (
	"math/rand/v2"
	"time"
)

// Schedule gives an open loop's send times: offsets from the start of the
// load, in order. It is pure (no clock): the runner sleeps until each
// offset and counts every latency from it, the scheduled send, not from
// when the request actually went out — a server that stalls, or a load
// generator that falls behind, shows up as latency instead of as fewer
// requests (no coordinated omission). Not safe for concurrent use.
type Schedule struct {
	interval float64 // seconds between sends (mean, for Poisson)
	poisson  bool
	rng      *rand.Rand
	i        int
	t        float64 // the last offset handed out, seconds
}

// NewSchedule returns the schedule of rate sends per second, evenly spaced
// (ArrivalConstant) or as a Poisson process (ArrivalPoisson: exponential
// gaps, reproducible from seed).
func NewSchedule(arrival Arrival, rate float64, seed uint64) *Schedule {
	return &Schedule{interval: 1 / rate, poisson: arrival == ArrivalPoisson, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

// Next returns the offset of the next send. The first constant-rate send
// is at 0; the first Poisson send one exponential gap in.
func (s *Schedule) Next() time.Duration {
	if s.poisson {
		s.t += s.rng.ExpFloat64() * s.interval
	} else {
		s.t = float64(s.i) * s.interval
	}
	s.i++
	return time.Duration(s.t * float64(time.Second))
}
