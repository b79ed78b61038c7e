package stagework

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// minimalYAML is the smallest valid config; tests edit it to break one thing.
const minimalYAML = `
providers:
  s: {kind: sim}
profiles:
  p:
    provider: s
    stages:
      generator: {model: m}
      refiner:   {model: m}
      validator: {model: m}
      curator:   {model: m}
`

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, name := range []string{"fast", "balanced", "deep", "instant"} {
		p, err := c.Profile(name)
		if err != nil {
			t.Fatalf("profile %s: %v", name, err)
		}
		if p.Name != name || p.Description == "" {
			t.Errorf("profile %s: name %q, description %q", name, p.Name, p.Description)
		}
		if len(p.Stages) != 4 {
			t.Fatalf("profile %s has %d stages", name, len(p.Stages))
		}
		for i, sp := range p.Stages {
			if sp.Stage != Stages[i] {
				t.Errorf("profile %s stage %d is %s", name, i, sp.Stage)
			}
			if c.Providers[sp.Provider].Kind != KindSim {
				t.Errorf("profile %s %s runs on %q, not the simulator", name, sp.Stage, sp.Provider)
			}
			if sp.Fallback == nil || sp.Fallback.Provider == "" || sp.Fallback.Model == "" {
				t.Errorf("profile %s %s has no complete fallback: %+v", name, sp.Stage, sp.Fallback)
			}
			if _, ok := c.Price(sp.Model); !ok {
				t.Errorf("profile %s %s: model %s has no price", name, sp.Stage, sp.Model)
			}
		}
	}
	if c.DefaultProfile != "balanced" {
		t.Errorf("DefaultProfile = %q", c.DefaultProfile)
	}
	// Each call is a fresh copy.
	c.Profiles["fast"].Stages[0].Model = "changed"
	if DefaultConfig().Profiles["fast"].Stages[0].Model == "changed" {
		t.Error("DefaultConfig returned shared state")
	}
	if !strings.Contains(string(DefaultConfigYAML()), "profiles:") {
		t.Error("DefaultConfigYAML is not the profile file")
	}
}

func TestParseConfigMinimalAndDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(minimalYAML))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Profile("")
	if err != nil || p.Name != "p" {
		t.Fatalf("default profile: %v, %v", p, err)
	}
	for _, sp := range p.Stages {
		if sp.Provider != "s" || sp.Model != "m" || sp.Temperature != DefaultTemperature || sp.MaxTokens != DefaultMaxTokens || sp.Fallback != nil {
			t.Errorf("stage %s: %+v", sp.Stage, sp)
		}
	}
	if got := c.Providers["s"].Sim.OutputTokens; got != DefaultSimOutputTokens {
		t.Errorf("sim output_tokens default not filled: %d", got)
	}

	c, err = ParseConfig([]byte(`
providers: {a: {kind: sim}, b: {kind: sim}}
profiles:
  zeta:
    provider: a
    stages:
      generator: {model: m, temperature: 0, max_tokens: 5, fallback: {model: n}}
      refiner:   {provider: b, model: m, fallback: {provider: a, model: m}}
      validator: {model: m}
      curator:   {model: m}
  alpha:
    provider: a
    stages: {generator: {model: m}, refiner: {model: m}, validator: {model: m}, curator: {model: m}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultProfile != "alpha" {
		t.Errorf("DefaultProfile = %q, want the first name, alpha", c.DefaultProfile)
	}
	if got := c.ProfileNames(); !slices.Equal(got, []string{"alpha", "zeta"}) {
		t.Errorf("ProfileNames = %v", got)
	}
	z, _ := c.Profile("zeta")
	g, _ := z.Stage(StageGenerator)
	if g.Temperature != 0 || g.MaxTokens != 5 || *g.Fallback != (ModelRef{"a", "n"}) {
		t.Errorf("generator = %+v (fallback %+v): explicit zero temperature or fallback provider lost", g, g.Fallback)
	}
	r, _ := z.Stage(StageRefiner)
	if r.Provider != "b" || *r.Fallback != (ModelRef{"a", "m"}) {
		t.Errorf("refiner = %+v", r)
	}
}

func TestParseConfigJSON(t *testing.T) {
	js := `{
	"default_profile": "p",
	"providers": {
		"s": {"kind": "sim", "sim": {"ttft": "250ms", "itl": "12ms", "output_tokens": 50}},
		"o": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "headers": {"X-Test": "1"}}
	},
	"profiles": {"p": {"description": "json", "stages": {
		"generator": {"provider": "s", "model": "m", "temperature": 1.5, "max_tokens": 10},
		"refiner": {"provider": "o", "model": "m", "fallback": {"provider": "s", "model": "m"}},
		"validator": {"provider": "s", "model": "m"},
		"curator": {"provider": "s", "model": "m"}
	}}},
	"prices": {"m": {"input": 1, "output": 2}}
}`
	c, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Providers["s"].Sim
	if s.TTFT != 250*time.Millisecond || s.ITL != 12*time.Millisecond || s.OutputTokens != 50 {
		t.Errorf("sim = %+v", s)
	}
	if o := c.Providers["o"]; o.BaseURL != "http://127.0.0.1:8000/v1" || o.Headers["X-Test"] != "1" {
		t.Errorf("openai = %+v", o)
	}
	p, _ := c.Profile("p")
	if p.Description != "json" || p.Stages[0].Temperature != 1.5 || p.Stages[1].Provider != "o" {
		t.Errorf("profile = %+v", p)
	}
	if pr, _ := c.Price("m"); pr.Cost(Usage{PromptTokens: 1_000_000, CompletionTokens: 500_000}) != 2 {
		t.Errorf("cost = %v, want 2", pr.Cost(Usage{PromptTokens: 1_000_000, CompletionTokens: 500_000}))
	}
}

func TestRouting(t *testing.T) {
	c := DefaultConfig()
	for tier, want := range map[string]string{TierSimple: "fast", TierStandard: "balanced", TierComplex: "deep"} {
		if got, ok := c.RoutedProfile(tier); !ok || got != want {
			t.Errorf("RoutedProfile(%s) = %q, %v; want %q", tier, got, ok, want)
		}
	}
	if _, ok := c.RoutedProfile("hard"); ok {
		t.Error("RoutedProfile(hard) found a profile")
	}
	c, err := ParseConfig([]byte(minimalYAML))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.RoutedProfile(TierSimple); ok || c.Routing != nil {
		t.Errorf("a file without routing routes: %v", c.Routing)
	}
}

func TestParseConfigErrors(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(minimalYAML, old) {
			panic("edit: " + old)
		}
		return strings.Replace(minimalYAML, old, new, 1)
	}
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error
	}{
		{"empty", "", []string{"empty"}},
		{"only a comment", "# nothing\n", []string{"empty"}},
		{"syntax", "profiles: [", []string{"line"}},
		{"not a mapping", "- a\n- b\n", []string{"cannot unmarshal", "the top level"}},
		{"unknown top field", minimalYAML + "profile: x\n", []string{`unknown field "profile" in the top level`, "profiles"}},
		{"unknown stage field", edit("generator: {model: m}", "generator: {model: m, temprature: 1}"), []string{`unknown field "temprature" in a stage`, "temperature"}},
		{"unknown provider field", edit("{kind: sim}", "{kind: sim, url: x}"), []string{`unknown field "url" in a provider`, "base_url"}},
		{"unknown sim field", edit("{kind: sim}", "{kind: sim, sim: {ttfb: 1s}}"), []string{`unknown field "ttfb" in a sim block`, "ttft"}},
		{"unknown profile field", edit("provider: s", "provider: s\n    model: x"), []string{`unknown field "model" in a profile`}},
		{"duplicate key", edit("validator: {model: m}", "validator: {model: m}\n      validator: {model: m}"), []string{`"validator" already defined`}},
		{"duration as number", edit("{kind: sim}", "{kind: sim, sim: {ttft: 250}}"), []string{"cannot unmarshal", "time.Duration"}},
		{"temperature not a number", edit("generator: {model: m}", "generator: {model: m, temperature: hot}"), []string{"cannot unmarshal", "hot"}},
		{"missing stage", edit("      curator:   {model: m}\n", ""), []string{"profiles.p.stages.curator: missing"}},
		{"unknown stage", edit("generator: {model: m}", "generater: {model: m}"), []string{`unknown stage "generater"`, "profiles.p.stages.generator: missing"}},
		{"empty stage", edit("curator:   {model: m}", "curator:"), []string{"profiles.p.stages.curator: empty"}},
		{"empty profile", minimalYAML + "  q:\n", []string{"profiles.q: empty"}},
		{"no profiles", "providers: {s: {kind: sim}}\n", []string{"profiles: none defined"}},
		{"no providers", strings.Replace(minimalYAML, "providers:\n  s: {kind: sim}\n", "", 1), []string{"providers: none defined", `"s" is not a provider`}},
		{"unknown provider", edit("provider: s", "provider: nope"), []string{`profiles.p.stages.generator.provider: "nope" is not a provider (known: s)`}},
		{"no provider", edit("    provider: s\n", ""), []string{"profiles.p.stages.generator.provider: missing"}},
		{"no model", edit("refiner:   {model: m}", "refiner:   {max_tokens: 3}"), []string{"profiles.p.stages.refiner.model: missing"}},
		{"temperature too high", edit("generator: {model: m}", "generator: {model: m, temperature: 2.5}"), []string{"generator.temperature: 2.5 is outside [0, 2]"}},
		{"temperature negative", edit("generator: {model: m}", "generator: {model: m, temperature: -0.1}"), []string{"temperature: -0.1 is outside"}},
		{"temperature NaN", edit("generator: {model: m}", "generator: {model: m, temperature: .nan}"), []string{"temperature: NaN is outside"}},
		{"max_tokens zero", edit("generator: {model: m}", "generator: {model: m, max_tokens: 0}"), []string{"generator.max_tokens: 0 is not in [1,"}},
		{"max_tokens huge", edit("generator: {model: m}", "generator: {model: m, max_tokens: 99999999}"), []string{"max_tokens: 99999999 is not in"}},
		{"fallback unknown provider", edit("generator: {model: m}", "generator: {model: m, fallback: {provider: x, model: n}}"), []string{`generator.fallback.provider: "x" is not a provider`}},
		{"fallback no model", edit("generator: {model: m}", "generator: {model: m, fallback: {provider: s}}"), []string{"generator.fallback.model: missing"}},
		{"fallback is primary", edit("generator: {model: m}", "generator: {model: m, fallback: {model: m}}"), []string{"generator.fallback: is the primary model itself"}},
		{"kind missing", edit("{kind: sim}", "{sim: {}}"), []string{"providers.s.kind: missing"}},
		{"kind unknown", edit("{kind: sim}", "{kind: grpc}"), []string{`providers.s.kind: unknown kind "grpc"`}},
		{"sim with base_url", edit("{kind: sim}", "{kind: sim, base_url: 'http://x'}"), []string{"providers.s: base_url, api_key_env and headers apply only to kind openai"}},
		{"openai with sim", edit("{kind: sim}", "{kind: openai, base_url: 'http://x', sim: {itl: 1ms}}"), []string{"providers.s.sim: applies only to kind sim"}},
		{"openai no base_url", edit("{kind: sim}", "{kind: openai}"), []string{"providers.s.base_url: missing"}},
		{"openai bad base_url", edit("{kind: sim}", "{kind: openai, base_url: 'ftp://x'}"), []string{`providers.s.base_url: "ftp://x" is not an http(s) URL`}},
		{"openai relative base_url", edit("{kind: sim}", "{kind: openai, base_url: '/v1'}"), []string{"is not an http(s) URL"}},
		{"openai bad env name", edit("{kind: sim}", "{kind: openai, base_url: 'http://x', api_key_env: 'OPENAI KEY'}"), []string{`api_key_env: "OPENAI KEY" is not an environment variable name`}},
		{"openai bad header name", edit("{kind: sim}", "{kind: openai, base_url: 'http://x', headers: {'Bad Header': v}}"), []string{`"Bad Header" is not a valid header name`}},
		{"openai header injection", edit("{kind: sim}", "{kind: openai, base_url: 'http://x', headers: {X-A: \"v\\r\\nX-B: w\"}}"), []string{"providers.s.headers.X-A: value contains a line break"}},
		{"sim negative ttft", edit("{kind: sim}", "{kind: sim, sim: {ttft: -1s}}"), []string{"providers.s.sim.ttft: -1s is negative"}},
		{"sim ttft too long", edit("{kind: sim}", "{kind: sim, sim: {ttft_jitter: 100000h}}"), []string{"providers.s.sim.ttft_jitter: 100000h0m0s is more than 24h0m0s"}},
		{"sim rate above 1", edit("{kind: sim}", "{kind: sim, sim: {error_rate: 1.5}}"), []string{"providers.s.sim.error_rate: 1.5 is not in [0, 1]"}},
		{"sim rates sum", edit("{kind: sim}", "{kind: sim, sim: {error_rate: 0.6, hang_rate: 0.6}}"), []string{"providers.s.sim.rates:", "more than 1"}},
		{"sim bad error kind", edit("{kind: sim}", "{kind: sim, sim: {error_rate: 1, error_kind: boom}}"), []string{`providers.s.sim.error_kind: unknown kind "boom"`}},
		{"sim cut_after without rate", edit("{kind: sim}", "{kind: sim, sim: {cut_after: 5}}"), []string{"providers.s.sim.cut_after: set but cut_rate is 0"}},
		{"sim negative output", edit("{kind: sim}", "{kind: sim, sim: {output_tokens: -5}}"), []string{"providers.s.sim.output_tokens: -5 is not in"}},
		{"sim jitter too big", edit("{kind: sim}", "{kind: sim, sim: {output_tokens: 10, output_tokens_jitter: 10}}"), []string{"output_tokens_jitter: 10 is not in [0, output_tokens)"}},
		{"bad profile name", strings.Replace(minimalYAML, "  p:\n", "  Fast Profile:\n", 1), []string{"profiles.Fast Profile: bad name"}},
		{"bad provider name", strings.Replace(minimalYAML, "  s: {kind: sim}", "  's p': {kind: sim}", 1), []string{"providers.s p: bad name"}},
		{"unknown default profile", minimalYAML + "default_profile: nope\n", []string{`default_profile: "nope" is not a profile (known: p)`}},
		{"routing unknown tier", minimalYAML + "routing: {simple: p, standard: p, complex: p, hard: p}\n", []string{"routing.hard: unknown tier (tiers: simple, standard, complex)"}},
		{"routing unknown profile", minimalYAML + "routing: {simple: p, standard: nope, complex: p}\n", []string{`routing.standard: "nope" is not a profile (known: p)`}},
		{"routing missing tier", minimalYAML + "routing: {simple: p, standard: p}\n", []string{"routing.complex: missing: routing maps every tier"}},
		{"routing empty profile", minimalYAML + "routing: {simple: p, standard: p, complex: ''}\n", []string{"routing.complex: missing profile"}},
		{"profile named auto", strings.Replace(minimalYAML, "  p:\n", "  auto:\n", 1), []string{`profiles.auto: the name "auto" is reserved`}},
		{"negative price", minimalYAML + "prices: {m: {input: -1, output: 1}}\n", []string{"prices.m: input and output must be finite and >= 0"}},
		{"bad user template", edit("curator:   {model: m}", "curator:   {model: m, user_template: '{{.Query'}"), []string{"profiles.p.stages.curator.user_template: bad template: template: prompt:1: unclosed action"}},
		{"bad template field", edit("curator:   {model: m}", "curator:   {model: m, system_prompt: '{{.Answer}}'}"), []string{"curator.system_prompt:", "Answer"}},
		{"too large", minimalYAML + "#" + strings.Repeat("x", MaxConfigSize), []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.input))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "stagework: invalid config: ") {
				t.Errorf("error lacks the package prefix: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n  %s\ndoes not contain\n  %s", strings.ReplaceAll(msg, "\n", "\n  "), w)
				}
			}
			if strings.Contains(msg, "stagework.raw") {
				t.Errorf("error leaks an internal type name: %q", msg)
			}
		})
	}
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	input := strings.NewReplacer(
		"generator: {model: m}", "generator: {model: m, temperature: 3}",
		"curator:   {model: m}", "curator:   {model: m, max_tokens: -1}",
	).Replace(minimalYAML)
	_, err := ParseConfig([]byte(input))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"generator.temperature", "curator.max_tokens"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not report %s:\n%v", w, err)
		}
	}
}

func TestConfigValidateInCode(t *testing.T) {
	c := DefaultConfig()
	c.Profiles["fast"].Stages[1].Temperature = 7
	c.Profiles["fast"].Stages[2].Provider = "missing"
	err := c.Validate()
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "profiles.fast.stages.refiner.temperature") ||
		!strings.Contains(err.Error(), "profiles.fast.stages.validator.provider") {
		t.Errorf("Validate = %v", err)
	}

	c = DefaultConfig()
	c.Profiles["x"] = &Profile{Stages: slices.Clone(c.Profiles["fast"].Stages[:3])}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "profiles.x.stages: has 3 stages") {
		t.Errorf("three stages: %v", err)
	}
	c.Profiles["x"].Stages = slices.Clone(c.Profiles["fast"].Stages)
	c.Profiles["x"].Stages[0], c.Profiles["x"].Stages[1] = c.Profiles["x"].Stages[1], c.Profiles["x"].Stages[0]
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "pipeline order") {
		t.Errorf("stages out of order: %v", err)
	}
	c.Profiles["x"].Stages = slices.Clone(c.Profiles["fast"].Stages)
	if err := c.Validate(); err != nil {
		t.Errorf("repaired config: %v", err)
	}
	if c.Profiles["x"].Name != "x" {
		t.Errorf("Validate did not fill Name: %q", c.Profiles["x"].Name)
	}
}

func TestConfigProfileLookup(t *testing.T) {
	c := DefaultConfig()
	p, err := c.Profile("fast")
	if err != nil || p.Name != "fast" {
		t.Fatalf("fast: %v %v", p, err)
	}
	if p, err := c.Profile(""); err != nil || p.Name != c.DefaultProfile {
		t.Errorf(`Profile("") = %v, %v; want the default`, p, err)
	}
	_, err = c.Profile("turbo")
	if !errors.Is(err, ErrUnknownProfile) {
		t.Fatalf("turbo: %v", err)
	}
	if !strings.Contains(err.Error(), `"turbo"`) || !strings.Contains(err.Error(), "balanced, council, deep, fast") {
		t.Errorf("error should name the profile and list the known ones: %v", err)
	}
	names := c.ProfileNames()
	if !slices.IsSorted(names) || !slices.Contains(names, "deep") {
		t.Errorf("ProfileNames = %v", names)
	}
	if _, ok := p.Stage(Stage(0)); ok {
		t.Error("Stage(0) found")
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(good, []byte(minimalYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(good)
	if err != nil || c.DefaultProfile != "p" {
		t.Fatalf("LoadConfig = %v, %v", c, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("profiles: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(bad); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v (want ErrInvalidConfig naming the path)", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(minimalYAML+"#"+strings.Repeat("x", MaxConfigSize+10)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
}

// FuzzParseConfig checks that no input panics, every error is a clean
// ErrInvalidConfig, and every accepted config is complete and stays valid.
func FuzzParseConfig(f *testing.F) {
	f.Add(defaultProfilesYAML)
	f.Add([]byte(minimalYAML))
	f.Add([]byte(`{"providers": {"s": {"kind": "sim"}}, "profiles": {"p": {"provider": "s", "stages": {"generator": {"model": "m"}, "refiner": {"model": "m"}, "validator": {"model": "m"}, "curator": {"model": "m"}}}}}`))
	f.Add([]byte("providers: &a {s: {kind: sim}}\nprofiles: *a\n"))
	f.Add([]byte("profiles: {p: {stages: {generator: {temperature: .inf}}}}"))
	f.Add([]byte("providers: {s: {kind: sim, sim: {ttft: 1h, error_rate: 0.5, cut_rate: 0.5, cut_after: 3}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "stagework: invalid config") {
				t.Fatalf("unclean error: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate again: %v", err)
		}
		if _, err := c.Profile(""); err != nil {
			t.Fatalf("no default profile: %v", err)
		}
		for _, p := range c.Profiles {
			if !p.IsChain() {
				// A strategy's graph: every step's inputs come before it,
				// and a fresh graph can start something.
				seen := map[string]bool{}
				for _, sp := range p.Stages {
					for _, in := range sp.Inputs {
						if !seen[in] {
							t.Fatalf("profile %s: step %s reads %q, not an earlier step", p.Name, sp.StepID(), in)
						}
					}
					seen[sp.StepID()] = true
					if _, ok := c.Providers[sp.Provider]; !ok && sp.Stage != StageTally {
						t.Fatalf("step %s refers to missing provider %q", sp.StepID(), sp.Provider)
					}
				}
				if start, _, err := NewGraph(p).Next(time.Now()); err != nil || len(start) == 0 {
					t.Fatalf("profile %s: a fresh graph starts %v, %v", p.Name, start, err)
				}
				continue
			}
			if len(p.Stages) != 4 {
				t.Fatalf("profile %s has %d stages", p.Name, len(p.Stages))
			}
			for _, sp := range p.Stages {
				if _, ok := c.Providers[sp.Provider]; !ok {
					t.Fatalf("stage %s refers to missing provider %q", sp.Stage, sp.Provider)
				}
				if _, err := BuildPrompt(sp, PromptInput{Query: "q", Outputs: map[Stage]string{StageGenerator: "", StageRefiner: "", StageValidator: ""}}); err != nil {
					t.Fatalf("accepted config cannot build a prompt: %v", err)
				}
			}
		}
		for name, pc := range c.Providers {
			if pc.Kind == KindSim {
				if err := pc.Sim.Validate(); err != nil { // as sim.New checks it again
					t.Fatalf("accepted sim config %s rejected on a second look: %v", name, err)
				}
			}
		}
	})
}

func TestParseConfigRejectsSecondDocument(t *testing.T) {
	_, err := ParseConfig([]byte(minimalYAML + "---\nprofiles: {}\n"))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Errorf("two documents: %v", err)
	}
}
