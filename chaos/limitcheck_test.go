package main

import (
	"testing"
	"time"
)

// TestCheckBudget: the checker flags a grant that the runs granted before
// it leave no room for, and the overrun of two owners, but not runs that
// were granted at the same time (either order is possible), nor a grant
// after runs settled for less than they reserved.
func TestCheckBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g := func(run string, call, ret int, r, a int64) attempt {
		return attempt{run: run, call: at(call), ret: at(ret), outcome: outGranted, reserved: r, billed: a}
	}
	cases := []struct {
		name       string
		hist       []attempt
		violations int
	}{
		{"within", []attempt{g("a", 0, 1, 40, 40), g("b", 2, 3, 60, 60)}, 0},
		{"settled for less", []attempt{g("a", 0, 1, 60, 10), g("b", 2, 3, 80, 80)}, 0},
		{"over at a grant and in all", []attempt{g("a", 0, 1, 60, 60), g("b", 2, 3, 60, 60)}, 2},
		{"concurrent: only the sum is over", []attempt{g("a", 0, 3, 60, 60), g("b", 1, 2, 60, 60)}, 1},
		{"unknown bill counts nothing", []attempt{g("a", 0, 1, 60, -1), g("b", 2, 3, 60, 60)}, 0},
		{"refusals and unknowns are not grants", []attempt{g("a", 0, 1, 90, 90), {outcome: outRefused, call: at(2), ret: at(3)},
			{outcome: outUnknown, call: at(2), ret: at(4)}}, 0},
	}
	for _, c := range cases {
		got := checkBudget(100, c.hist)
		if len(got.violations) != c.violations {
			t.Errorf("%s: %d violations %q, want %d", c.name, len(got.violations), got.violations, c.violations)
		}
	}
}
