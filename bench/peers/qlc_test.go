package main

import (
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// The profile file the benchmark gives its gateways is one QLC accepts,
// with the shapes the benchmark relies on: four stages of tokens/4, the
// lead-in on the generator only, the pace between every later token, the
// TTFT profiles on the mock.
func TestQLCProfileFile(t *testing.T) {
	cfg := fanConfig{Tokens: 600, Rate: 100}
	text := qlcProfileFile(cfg, 4*time.Second, "http://127.0.0.1:1234/v1", 500)
	c, err := stagework.ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("QLC refuses the file: %v\n%s", err, text)
	}
	paced, err := c.Profile(profPaced)
	if err != nil {
		t.Fatal(err)
	}
	for i, sp := range paced.Stages {
		p := c.Providers[sp.Provider]
		wantTTFT := 10 * time.Millisecond
		if i == 0 {
			wantTTFT = 4 * time.Second
		}
		if sp.MaxTokens != 150 || p.Sim.OutputTokens != 150 || p.Sim.ITL != 10*time.Millisecond || p.Sim.TTFT != wantTTFT {
			t.Errorf("paced stage %d: max_tokens %d, sim %+v", i, sp.MaxTokens, p.Sim)
		}
	}
	full, _ := c.Profile(profFull)
	for i, sp := range full.Stages {
		if p := c.Providers[sp.Provider]; p.Sim.ITL != 0 || (i > 0 && p.Sim.TTFT != 0) {
			t.Errorf("full stage %d: sim %+v", i, p.Sim)
		}
	}
	one, _ := c.Profile(profOne)
	four, _ := c.Profile(profFour)
	if one == nil || four == nil {
		t.Fatal("no TTFT profiles")
	}
	last := one.Stages[len(one.Stages)-1]
	if p := c.Providers[last.Provider]; p.Kind != stagework.KindOpenAI || p.BaseURL != "http://127.0.0.1:1234/v1" || last.MaxTokens != 500 {
		t.Errorf("peers-one's curator: %+v on %+v", last, p)
	}
	for _, sp := range four.Stages {
		if c.Providers[sp.Provider].Kind != stagework.KindOpenAI || sp.MaxTokens != 500 {
			t.Errorf("peers-four: %+v", sp)
		}
	}
	// Without a mock, no TTFT profiles and no openai provider.
	c2, err := stagework.ParseConfig([]byte(qlcProfileFile(cfg, time.Second, "", 0)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Profile(profOne); err == nil {
		t.Error("peers-one without a mock")
	}
}

// The warm-up's last seq skips the stage boundaries' events: the log is
// stage_started(1), tokens, stage_completed, stage_started, tokens, …
func TestQLCWarmSeq(t *testing.T) {
	const per = 5
	// The seq of every token of a four-stage run, built the way the log is.
	var tokenSeq []uint64
	seq := uint64(0)
	for range 4 {
		seq++ // stage_started
		for range per {
			seq++
			tokenSeq = append(tokenSeq, seq)
		}
		seq++ // stage_completed
	}
	if qlcWarmSeq(0, per) != 0 {
		t.Fatal("no warm-up: seq 0")
	}
	for w := 1; w <= len(tokenSeq); w++ {
		if got := qlcWarmSeq(w, per); got != tokenSeq[w-1] {
			t.Fatalf("warm-up %d: seq %d, want %d", w, got, tokenSeq[w-1])
		}
	}
}
