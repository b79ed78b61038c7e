package main

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// series builds n one-second samples of f(i) plus Gaussian noise of the
// given standard deviation (a fixed seed: the tests are deterministic).
func series(n int, noise float64, f func(i int) float64) (ts, vs []float64) {
	rng := rand.New(rand.NewPCG(17, 42))
	for i := 0; i < n; i++ {
		ts = append(ts, float64(i))
		vs = append(vs, f(i)+rng.NormFloat64()*noise)
	}
	return ts, vs
}

const mib = 1 << 20

func TestFitTrendExactLine(t *testing.T) {
	ts, vs := series(10, 0, func(i int) float64 { return 5 + 2*float64(i) })
	tr := fitTrend(ts, vs)
	if math.Abs(tr.slope-2) > 1e-9 || math.Abs(tr.intercept-5) > 1e-9 || math.Abs(tr.r2-1) > 1e-9 || !math.IsInf(tr.t, 1) {
		t.Fatalf("fit of 5+2t: %+v", tr)
	}
	if g := tr.growth(); math.Abs(g-18.0/14) > 1e-9 { // 2×9 over a mean of 14
		t.Fatalf("growth %v, want %v", g, 18.0/14)
	}
	flat := fitTrend([]float64{0, 1, 2, 3}, []float64{7, 7, 7, 7})
	if flat.slope != 0 || flat.r2 != 0 || flat.t != 0 || flat.mean != 7 {
		t.Fatalf("fit of a constant: %+v", flat)
	}
	if short := fitTrend([]float64{1, 2}, []float64{3, 5}); short.n != 2 || short.slope != 0 || short.mean != 4 {
		t.Fatalf("fit of two points: %+v", short)
	}
}

func TestLeakVerdict(t *testing.T) {
	const n = 135 // the 3-minute run's analysis window: 45 s of warm-up, then 135 s
	for _, tc := range []struct {
		name string
		kind seriesKind
		f    func(i int) float64
		// noise is the standard deviation of the noise around f.
		noise float64
		want  verdict
	}{
		{"flat noisy heap", kindHeap, func(int) float64 { return 100 * mib }, 15 * mib, verdictOK},
		{"flat noisy goroutines", kindGoroutines, func(int) float64 { return 80 }, 8, verdictOK},
		// The GC saw-tooth: heap in use climbs to twice the live heap,
		// drops, climbs again (a 20 s cycle).
		{"GC saw-tooth", kindHeap, func(i int) float64 { return 60*mib + float64(i%20)*3*mib }, 2 * mib, verdictOK},
		{"linear heap leak", kindHeap, func(i int) float64 { return 100*mib + float64(i)*0.5*mib }, 10 * mib, verdictLeak},
		{"slow RSS leak, little noise", kindRSS, func(i int) float64 { return 100*mib + float64(i)*0.25*mib }, 1 * mib, verdictLeak},
		{"goroutine leak (a few a second)", kindGoroutines, func(i int) float64 { return 60 + float64(i)/2 }, 4, verdictLeak},
		// Growth that is steady and significant but below 20 % of the mean
		// over the window: not yet (the 1-hour run would see 20× more).
		{"slow growth, below the bar", kindRSS, func(i int) float64 { return 100*mib + float64(i)*0.1*mib }, 1 * mib, verdictOK},
		// Above 20 % of a small mean but below the floor: 12 → 18 files.
		{"tiny fd growth", kindFDs, func(i int) float64 { return 12 + float64(i)*6/n }, 0.3, verdictOK},
		{"fd leak", kindFDs, func(i int) float64 { return 20 + float64(i)/5 }, 1, verdictLeak},
		// A step up early in the window (a pool reaching its size), flat
		// afterwards: passes.
		{"early step", kindGoroutines, func(i int) float64 { return step(i, n/4, 60, 90) }, 2, verdictOK},
		// A step up in the last half of the window: fails (it cannot be
		// told from the start of a leak).
		{"late step", kindGoroutines, func(i int) float64 { return step(i, 3*n/4, 60, 120) }, 2, verdictLeak},
		{"falling", kindRSS, func(i int) float64 { return 200*mib - float64(i)*0.5*mib }, 2 * mib, verdictOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, vs := series(n, tc.noise, tc.f)
			got, tr := leakVerdict(tc.kind, ts, vs)
			if got != tc.want {
				t.Errorf("verdict %v, want %v (growth %.1f %%, t %.1f, R² %.2f)", got, tc.want, tr.growth()*100, tr.t, tr.r2)
			}
		})
	}
}

func step(i, at int, before, after float64) float64 {
	if i < at {
		return before
	}
	return after
}

func TestLeakVerdictShort(t *testing.T) {
	ts, vs := series(minSamples-1, 0, func(i int) float64 { return float64(i) * mib })
	if v, _ := leakVerdict(kindRSS, ts, vs); v != verdictShort {
		t.Fatalf("%d samples: %v, want %v", len(ts), v, verdictShort)
	}
}

func TestSettled(t *testing.T) {
	for _, tc := range []struct {
		level, final float64
		want         bool
	}{
		{80, 40, true},  // load gone: fewer goroutines
		{80, 98, true},  // 80 × 1.1 + 10
		{80, 99, false}, // more than under load: left behind
		{10, 20, true},  // small counts: the slack
		{100, 250, false},
	} {
		if got := settled(tc.level, tc.final); got != tc.want {
			t.Errorf("settled(%v, %v) = %v, want %v", tc.level, tc.final, got, tc.want)
		}
	}
}

func TestJudgeSoak(t *testing.T) {
	// Two processes for 200 s, warm-up 50 s, load until 180 s, cool-down
	// after: "flat" stays flat and its goroutines fall back; "leaky" gains a
	// goroutine and 1 MiB a second and keeps them.
	var samples []soakSample
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		at := float64(i)
		ph := "load"
		g := 80.0
		if i >= 180 {
			ph, g = "cooldown", 40
		}
		samples = append(samples, soakSample{at: at, proc: "flat", phase: ph,
			figures: [4]float64{100*mib + rng.NormFloat64()*mib, 60*mib + rng.NormFloat64()*5*mib, g + rng.NormFloat64(), 30}})
		samples = append(samples, soakSample{at: at, proc: "leaky", phase: ph,
			figures: [4]float64{100*mib + float64(i)*mib, 60*mib + float64(i)*mib, 80 + float64(i), math.NaN()}})
	}
	rep := judgeSoak(samples, 50, 180, 180)
	if rep.ok() {
		t.Fatal("a leaky process passed")
	}
	for _, l := range rep.lines {
		want := verdictOK
		if l.proc == "leaky" {
			want = verdictLeak
		}
		if l.verdict != want {
			t.Errorf("%s %s: %v, want %v", l.proc, l.kind.name, l.verdict, want)
		}
		if l.proc == "leaky" && l.kind == kindFDs {
			t.Errorf("leaky has no fd samples, yet a line: %+v", l)
		}
	}
	for _, s := range rep.settles {
		if want := s.proc == "flat"; s.ok != want || !s.judged {
			t.Errorf("%s: settled %v (judged %v), want %v", s.proc, s.ok, s.judged, want)
		}
	}
	if got := rep.suspects(); len(got) != 1 || got[0] != "leaky" {
		t.Errorf("suspects %v, want [leaky]", got)
	}
	var b strings.Builder
	rep.write(&b)
	if !strings.Contains(b.String(), "**LEAK**") || !strings.Contains(b.String(), "Soak: **FAIL**") {
		t.Errorf("the table does not say LEAK and FAIL:\n%s", b.String())
	}
}

func TestGroupGoroutines(t *testing.T) {
	dump := `SIGQUIT: quit
PC=0x1 m=0 sigcode=0

goroutine 1 gp=0x1 m=nil [select, 2 minutes]:
runtime.gopark(0x1)
	/go/src/runtime/proc.go:462 +0xce
google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run(0x1, {0x2})
	/x/callback_serializer.go:76 +0x10b
created by google.golang.org/grpc/internal/grpcsync.NewCallbackSerializer in goroutine 30384
	/x/callback_serializer.go:52 +0x11a

goroutine 2 gp=0x1 m=nil [select]:
runtime.gopark(0x1)
	/go/src/runtime/proc.go:462 +0xce
google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run(0x1, {0x2})
	/x/callback_serializer.go:76 +0x10b
created by google.golang.org/grpc/internal/grpcsync.NewCallbackSerializer in goroutine 7
	/x/callback_serializer.go:52 +0x11a

goroutine 3 gp=0x1 m=nil [IO wait]:
main.run()
	/x/main.go:1
`
	got := groupGoroutines(dump)
	want := []string{
		"    2  [select] google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run ← created by google.golang.org/grpc/internal/grpcsync.NewCallbackSerializer",
		"    1  [IO wait] main.run ← created by ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
