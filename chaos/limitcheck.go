package main

import (
	"fmt"
	"slices"
	"time"
)

// The limits scenario's history and its checker. Every admission attempt
// is recorded with when it was sent and answered and what came back; a run
// that was granted is later read for what it was billed. The checker asks
// of the history only what the budget guarantees, with the most favourable
// reading for the cluster wherever the history leaves it open (so a
// violation it reports is one, whatever the timing):
//
//   - a limiter counts a granted run j at least min(A_j, R_j) once it knows
//     of it (R_j its reservation, A_j what it was billed: the reservation
//     until the run settles, then the bill, given back to or taken from
//     the budget), and it knows of j before any admission sent after j's
//     grant came back;
//   - so for every granted run g: R_g + Σ min(A_j, R_j) over the runs j
//     granted before g was sent ≤ budget;
//   - and at the end: Σ min(A_j, R_j) over every granted run ≤ budget.
//
// An attempt whose outcome is unknown (no answer, a 5xx after the limiter
// may have granted) counts as not granted: the check stays sound, if
// weaker. This is an invariant checker, not a linearizability search
// (porcupine): the budget's model needs no search once reservations are
// upper bounds.

// Outcomes of an admission attempt.
const (
	outGranted     = "granted"     // 201: the run started; R from X-QLC-Reserved-Tokens
	outRefused     = "refused"     // 429 token_budget (or another limit)
	outUnavailable = "unavailable" // 503 (limiter_unavailable, no_node, …): not granted, or given back
	outUnknown     = "unknown"     // no answer: granted or not, nobody knows
)

// attempt is one admission attempt of the history.
type attempt struct {
	gateway   int
	call, ret time.Time
	outcome   string
	code      string // the error code of a refusal or 5xx
	run       string
	reserved  int64 // R (granted)
	billed    int64 // A once the run ended; -1: not known (counted as 0)
}

// budgetCheck is the checker's verdict.
type budgetCheck struct {
	granted, grantedTokens int64 // runs granted and Σ R
	counted                int64 // Σ min(A, R) over the granted runs
	peak                   int64 // the largest R_g + Σ before it
	violations             []string
}

// checkBudget checks hist against budget.
func checkBudget(budget int64, hist []attempt) budgetCheck {
	var out budgetCheck
	var granted []attempt
	for _, a := range hist {
		if a.outcome == outGranted {
			granted = append(granted, a)
		}
	}
	least := func(a attempt) int64 {
		if a.billed < 0 {
			return 0
		}
		return min(a.billed, a.reserved)
	}
	byRet := slices.Clone(granted)
	slices.SortFunc(byRet, func(a, b attempt) int { return a.ret.Compare(b.ret) })
	byCall := slices.Clone(granted)
	slices.SortFunc(byCall, func(a, b attempt) int { return a.call.Compare(b.call) })
	var before int64
	k := 0
	for _, g := range byCall {
		for k < len(byRet) && byRet[k].ret.Before(g.call) {
			before += least(byRet[k])
			k++
		}
		if need := g.reserved + before; need > out.peak {
			out.peak = need
		}
		if g.reserved+before > budget {
			out.violations = append(out.violations, fmt.Sprintf("run %s granted at %s by gateway %d: it reserves %d and the runs granted before it count at least %d: %d > budget %d",
				g.run, g.ret.Format("15:04:05.000"), g.gateway, g.reserved, before, g.reserved+before, budget))
		}
	}
	for _, g := range granted {
		out.granted++
		out.grantedTokens += g.reserved
		out.counted += least(g)
	}
	if out.counted > budget {
		out.violations = append(out.violations, fmt.Sprintf("the granted runs count at least %d tokens in all: more than the budget %d", out.counted, budget))
	}
	return out
}
