package stagework

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// ids lists a profile's step ids in order.
func stepIDs(p *Profile) []string {
	var out []string
	for _, sp := range p.Stages {
		out = append(out, sp.StepID())
	}
	return out
}

func TestBuiltInStrategyProfiles(t *testing.T) {
	c := DefaultConfig()
	for _, tt := range []struct {
		name  string
		steps []string
		final StageSpec
	}{
		{"moa", []string{"p1.1", "p1.2", "p1.3", "aggregator"},
			StageSpec{Stage: StageAggregator, Inputs: []string{"p1.1", "p1.2", "p1.3"}, MinInputs: 2}},
		{"council", []string{"m1", "m2", "m3", "r1", "r2", "r3", "chairman"},
			StageSpec{Stage: StageChairman, Inputs: []string{"r1", "r2", "r3"}, MinInputs: 0}},
		{"vote", []string{"s1", "s2", "s3", "answer"},
			StageSpec{Stage: StageTally, Inputs: []string{"s1", "s2", "s3"}, MinInputs: 2}},
	} {
		p, err := c.Profile(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if p.IsChain() || p.Strategy != tt.name {
			t.Errorf("%s: strategy %q", tt.name, p.Strategy)
		}
		if got := stepIDs(p); !slices.Equal(got, tt.steps) {
			t.Errorf("%s: steps %v, want %v", tt.name, got, tt.steps)
		}
		last := p.Stages[len(p.Stages)-1]
		if !last.Final || last.Stage != tt.final.Stage || !slices.Equal(last.Inputs, tt.final.Inputs) || last.MinInputs != tt.final.MinInputs {
			t.Errorf("%s: final step %+v, want %+v", tt.name, last, tt.final)
		}
		for _, sp := range p.Stages[:len(p.Stages)-1] {
			if sp.Final {
				t.Errorf("%s: %s is final but not last", tt.name, sp.StepID())
			}
		}
	}
	// Three proposers on three different models; the vote's samples
	// take the listed models in turn.
	moa, _ := c.Profile("moa")
	models := map[string]bool{}
	for _, sp := range moa.Stages[:3] {
		models[sp.Provider+"/"+sp.Model] = true
		if sp.Deadline != 20*time.Second || sp.Layer != 1 {
			t.Errorf("proposer %s: deadline %v layer %d", sp.StepID(), sp.Deadline, sp.Layer)
		}
	}
	if len(models) != 3 {
		t.Errorf("moa proposers use %d models, want 3", len(models))
	}
	vote, _ := c.Profile("vote")
	if vote.Stages[0].Model != vote.Stages[2].Model || vote.Stages[0].Model == vote.Stages[1].Model {
		t.Errorf("vote samples do not take the listed models in turn: %s %s %s", vote.Stages[0].Model, vote.Stages[1].Model, vote.Stages[2].Model)
	}
	council, _ := c.Profile("council")
	for i, sp := range council.Stages[3:6] {
		member := council.Stages[i]
		if sp.Stage != StageRanker || sp.Model != member.Model || sp.Provider != member.Provider || sp.MinInputs != 2 {
			t.Errorf("ranker %s: %+v (member %+v)", sp.StepID(), sp, member)
		}
	}
}

func TestMoALayersAndVoteJudge(t *testing.T) {
	c, err := ParseConfig([]byte(`
providers: {s: {kind: sim}}
profiles:
  deep-moa:
    strategy: moa
    provider: s
    layers: 3
    proposers: [{model: a}, {model: b}]
    aggregator: {model: c}
  judged:
    strategy: vote
    provider: s
    samples: [{model: a}]
    count: 4
    method: judge
    judge: {model: j}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Profile("deep-moa")
	if got := stepIDs(p); !slices.Equal(got, []string{"p1.1", "p1.2", "p2.1", "p2.2", "p3.1", "p3.2", "aggregator"}) {
		t.Fatalf("steps %v", got)
	}
	if in := p.Stages[2].Inputs; !slices.Equal(in, []string{"p1.1", "p1.2"}) || p.Stages[2].Layer != 2 || p.Stages[2].MinInputs != 2 {
		t.Errorf("layer 2 proposer: %+v", p.Stages[2])
	}
	if in := p.Stages[6].Inputs; !slices.Equal(in, []string{"p3.1", "p3.2"}) {
		t.Errorf("aggregator reads %v, want the last layer", in)
	}
	v, _ := c.Profile("judged")
	if got := stepIDs(v); !slices.Equal(got, []string{"s1", "s2", "s3", "s4", "judge", "answer"}) {
		t.Fatalf("steps %v", got)
	}
	tally := v.Stages[5]
	if tally.Method != VoteJudge || !slices.Equal(tally.Inputs, []string{"judge"}) || tally.MinInputs != 0 || tally.Provider != "" {
		t.Errorf("tally %+v", tally)
	}
}

func TestStrategyProfileErrorsNamePaths(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{`strategy: moa
    proposers: [{model: a}]`, "profiles.x.aggregator: missing"},
		{`strategy: moa
    proposers: [{model: a}, {}]
    aggregator: {model: c}`, "profiles.x.proposers[1].model: missing"},
		{`strategy: moa
    proposers: [{model: a}, {model: b, provider: nope}]
    aggregator: {model: c}`, `profiles.x.proposers[1].provider: "nope" is not a provider`},
		{`strategy: moa
    proposers: [{model: a}, {model: b}]
    aggregator: {model: c}
    min_proposers: 3`, "profiles.x.min_proposers: 3 is not in [1, 2]"},
		{`strategy: moa
    layers: 9
    proposers: [{model: a}]
    aggregator: {model: c}`, "profiles.x.layers: 9 is not in [1, 4]"},
		{`strategy: moa
    proposers: [{model: a}]
    aggregator: {model: c}
    chairman: {model: c}`, "profiles.x.chairman: applies only to strategy council"},
		{`strategy: council
    members: [{model: a}, {model: b}]`, "profiles.x.chairman: missing"},
		{`strategy: vote
    samples: [{model: a}]
    method: best`, `profiles.x.method: unknown method "best"`},
		{`strategy: vote
    samples: [{model: a}]
    method: judge`, "profiles.x.judge: missing"},
		{`strategy: vote
    samples: [{model: a}]
    count: 40`, "profiles.x.count: 40 is not in [1, 16]"},
		{`strategy: vote
    samples: [{model: a, temperature: 3}]`, "profiles.x.samples[0].temperature: 3 is outside [0, 2]"},
		{`strategy: swarm
    samples: [{model: a}]`, `profiles.x.strategy: unknown strategy "swarm"`},
		{`strategy: moa
    proposers: [{model: a}]
    aggregator: {model: c}
    stages: {generator: {model: a}}`, "profiles.x.stages: applies only to strategy chain"},
		{`stages: {generator: {model: a}, refiner: {model: a}, validator: {model: a}, curator: {model: a}}
    members: [{model: a}]`, "apply only to strategies moa, council and vote"},
		{`stages: {generator: {model: a}, refiner: {model: a}, validator: {model: a}, curator: {model: a}, proposer: {model: a}}`, `unknown stage "proposer"`},
		{`strategy: moa
    proposers: [{model: a}]
    aggregator: {model: c}
    step_deadline: -1s`, "profiles.x.step_deadline: -1s is negative"},
	} {
		_, err := ParseConfig([]byte("providers: {s: {kind: sim}}\nprofiles:\n  x:\n    provider: s\n    " + tt.yaml + "\n"))
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s\n  error %v\n  want it to contain %q", tt.yaml, err, tt.want)
		}
	}
}

func TestValidateStrategyGraphBuiltInCode(t *testing.T) {
	c := DefaultConfig()
	p, _ := c.Profile("moa")
	bad := *p
	bad.Stages = slices.Clone(p.Stages)
	bad.Stages[3].Inputs = []string{"p1.1", "ghost"}
	c.Profiles["bad"] = &bad
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `input "ghost" is not an earlier step`) {
		t.Errorf("unknown input: %v", err)
	}
	bad.Stages[3].Inputs = p.Stages[3].Inputs
	bad.Stages[2].Final = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "only it, is the final one") {
		t.Errorf("two final steps: %v", err)
	}
}

// graphOf builds a Graph for a profile given as YAML.
func graphOf(t *testing.T, profile string) *Graph {
	t.Helper()
	c, err := ParseConfig([]byte("providers: {s: {kind: sim}}\nprofiles:\n  x:\n    provider: s\n" + profile))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Profile("x")
	return NewGraph(p)
}

func TestGraphRunsParallelStepsThenTheAggregator(t *testing.T) {
	g := graphOf(t, `    strategy: moa
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
`)
	now := time.Now()
	start, cut, err := g.Next(now)
	if err != nil || len(cut) != 0 || !slices.Equal(start, []string{"p1.1", "p1.2", "p1.3"}) {
		t.Fatalf("first: start %v cut %v err %v; want the three proposers at once", start, cut, err)
	}
	for _, id := range start {
		g.Start(id, now)
	}
	g.Finish("p1.2", "b", "two")
	if start, _, _ := g.Next(now); len(start) != 0 {
		t.Fatalf("aggregator started with two proposers still running: %v", start)
	}
	g.Finish("p1.1", "a", "one")
	g.Finish("p1.3", "c", "three")
	start, _, err = g.Next(now)
	if err != nil || !slices.Equal(start, []string{"aggregator"}) {
		t.Fatalf("after all proposers: %v, %v", start, err)
	}
	in := g.PromptInput("aggregator", "q", nil, nil)
	if len(in.Inputs) != 3 || in.Inputs[0].Text != "one" || in.Inputs[2].Model != "c" || len(in.Left) != 0 {
		t.Errorf("aggregator's prompt input %+v", in)
	}
	g.Start("aggregator", now)
	g.Finish("aggregator", "d", "the answer")
	if !g.Done() || g.Answer() != "the answer" {
		t.Errorf("Done %v Answer %q", g.Done(), g.Answer())
	}
}

func TestGraphDeadlineCutsAStragglerOnlyWhenEnoughFinished(t *testing.T) {
	g := graphOf(t, `    strategy: moa
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
    min_proposers: 2
    step_deadline: 10s
`)
	t0 := time.Now()
	for _, id := range []string{"p1.1", "p1.2", "p1.3"} {
		g.Start(id, t0)
	}
	if d := g.NextDeadline(); !d.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("NextDeadline %v, want start + 10s", d)
	}
	g.Finish("p1.1", "a", "one")
	// Past the deadline with one answer: both stragglers are still wanted.
	if _, cut, _ := g.Next(t0.Add(11 * time.Second)); len(cut) != 0 {
		t.Fatalf("cut %v with only 1 of the 2 needed answers", cut)
	}
	g.Finish("p1.2", "b", "two")
	if _, cut, _ := g.Next(t0.Add(5 * time.Second)); len(cut) != 0 {
		t.Fatalf("cut %v before the deadline", cut)
	}
	start, cut, err := g.Next(t0.Add(11 * time.Second))
	if err != nil || !slices.Equal(cut, []string{"p1.3"}) || len(start) != 0 {
		t.Fatalf("past the deadline with 2 of 3: start %v cut %v err %v; want p1.3 cut", start, cut, err)
	}
	g.LeaveOut("p1.3", "did not finish within 10s")
	start, _, err = g.Next(t0.Add(11 * time.Second))
	if err != nil || !slices.Equal(start, []string{"aggregator"}) {
		t.Fatalf("after the cut: %v %v", start, err)
	}
	in := g.PromptInput("aggregator", "q", nil, nil)
	if len(in.Inputs) != 2 || len(in.Left) != 1 || in.Left[0].ID != "p1.3" || in.Left[0].Reason != "did not finish within 10s" {
		t.Errorf("aggregator input %+v", in)
	}
	if !g.NextDeadline().IsZero() {
		t.Error("a deadline is left with no running step")
	}
}

func TestGraphFailsWhenTooFewInputsCanFinish(t *testing.T) {
	g := graphOf(t, `    strategy: moa
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
    min_proposers: 2
`)
	t0 := time.Now()
	for _, id := range []string{"p1.1", "p1.2", "p1.3"} {
		g.Start(id, t0)
	}
	g.LeaveOut("p1.1", "auth: invalid key")
	if _, _, err := g.Next(t0); err != nil {
		t.Fatalf("one failure of three with min 2: %v", err)
	}
	g.Finish("p1.2", "b", "two")
	g.LeaveOut("p1.3", "server: 503")
	_, _, err := g.Next(t0)
	if err == nil {
		t.Fatal("aggregator can run with 1 of the 2 answers it needs")
	}
	for _, want := range []string{"aggregator needs at least 2 of its 3 inputs, and 1 finished", "p1.1 (a): auth: invalid key", "p1.3 (c): server: 503"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestGraphChairmanRunsWithoutRankingsAndShowsTheMembers(t *testing.T) {
	g := graphOf(t, `    strategy: council
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {model: d}
    min_members: 2
`)
	t0 := time.Now()
	for _, id := range []string{"m1", "m2", "m3"} {
		g.Start(id, t0)
	}
	g.Finish("m1", "a", "A's answer")
	g.LeaveOut("m2", "timeout")
	g.Finish("m3", "c", "C's answer")
	start, _, err := g.Next(t0)
	if err != nil || !slices.Equal(start, []string{"r1", "r2", "r3"}) {
		t.Fatalf("rankers: %v %v", start, err)
	}
	shown, left := g.Shown("r2")
	if len(shown) != 2 || shown[0].Label != "A" || shown[1].Label != "B" || shown[1].ID != "m3" || len(left) != 1 {
		t.Fatalf("a ranker is shown %+v, left %+v; want m1 as A, m3 as B", shown, left)
	}
	for _, id := range start {
		g.Start(id, t0)
		g.LeaveOut(id, "failed")
	}
	start, _, err = g.Next(t0)
	if err != nil || !slices.Equal(start, []string{"chairman"}) {
		t.Fatalf("chairman without rankings: %v %v", start, err)
	}
	in := g.PromptInput("chairman", "q", nil, []RankEntry{{ID: "m3", Label: "B", AverageRank: 1, Votes: 2}})
	if len(in.Inputs) != 2 || in.Inputs[1].Text != "C's answer" || len(in.Left) != 1 || in.Left[0].ID != "m2" || len(in.Ranking) != 1 {
		t.Errorf("chairman input %+v", in)
	}
}

func TestGraphChainIsSequential(t *testing.T) {
	p, _ := DefaultConfig().Profile("fast")
	g := NewGraph(p)
	t0 := time.Now()
	for i, s := range Stages {
		start, _, err := g.Next(t0)
		if err != nil || !slices.Equal(start, []string{s.String()}) {
			t.Fatalf("step %d: start %v err %v", i, start, err)
		}
		g.Start(s.String(), t0)
		in := g.PromptInput(s.String(), "q", nil, nil)
		if len(in.Outputs) != i {
			t.Errorf("%s sees %d earlier outputs, want %d", s, len(in.Outputs), i)
		}
		g.Finish(s.String(), "m", s.String()+" output")
	}
	if !g.Done() || g.Answer() != "curator output" {
		t.Errorf("Done %v Answer %q", g.Done(), g.Answer())
	}
	// A chain stage that fails cannot be done without.
	g = NewGraph(p)
	g.Start("generator", t0)
	g.LeaveOut("generator", "failed")
	if _, _, err := g.Next(t0); err == nil {
		t.Error("refiner runs without the generator")
	}
}

// The documented example for real models parses, and uses every strategy.
func TestRealModelsExampleProfiles(t *testing.T) {
	c, err := LoadConfig("../deploy/profiles.real-models.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, name := range c.ProfileNames() {
		p, _ := c.Profile(name)
		s := p.Strategy
		if s == "" {
			s = StrategyChain
		}
		seen[s] = true
		for _, sp := range p.Stages {
			if sp.Stage != StageTally && c.Providers[sp.Provider].Kind != KindOpenAI {
				t.Errorf("%s: step %s is on %q, not a real endpoint", name, sp.StepID(), sp.Provider)
			}
		}
	}
	for _, s := range []string{StrategyChain, StrategyMoA, StrategyCouncil, StrategyVote} {
		if !seen[s] {
			t.Errorf("no example profile uses strategy %s", s)
		}
	}
}
