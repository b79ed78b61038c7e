package stagework

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The profile file. It names provider endpoints and profiles; a profile maps
// each of the four stages to a provider, a model and its settings. The file is
// YAML or JSON (JSON is read as YAML). Unknown fields are errors, so a typo
// never silently falls back to a default. The shipped file, profiles.yaml,
// is the reference example of every field.
//
//	default_profile: balanced            # optional; else "balanced" if defined, else the first name
//	providers:                           # endpoint name -> ProviderConfig
//	  sim:    {kind: sim, sim: {ttft: 350ms, itl: 12ms, output_tokens: 800}}
//	  openai: {kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
//	profiles:                            # profile name -> profile
//	  balanced:
//	    description: Four mid-size models.
//	    provider: sim                    # optional default for the stages below
//	    stages:                          # all four, by name
//	      generator: {model: sim-medium, temperature: 0.8, max_tokens: 280, fallback: {model: sim-small}}
//	      refiner:   {...}
//	      validator: {...}
//	      curator:   {...}
//	prices:                              # optional, model -> USD per 1M tokens
//	  sim-medium: {input: 1.0, output: 4.0}
//	routing:                             # optional, tier -> profile, for profile "auto"
//	  {simple: fast, standard: balanced, complex: deep}

//go:embed profiles.yaml
var defaultProfilesYAML []byte

// ErrUnknownProfile is returned (wrapped) by Config.Profile for a name no profile has.
var ErrUnknownProfile = errors.New("stagework: unknown profile")

// ErrInvalidConfig is wrapped by every error ParseConfig, LoadConfig and
// Config.Validate return for a config that is not valid.
var ErrInvalidConfig = errors.New("stagework: invalid config")

// MaxConfigSize bounds the size of a profile file, in bytes.
const MaxConfigSize = 1 << 20

// Defaults filled in for stage settings a profile leaves out.
const (
	// DefaultTemperature is used when a stage sets no temperature: a middle
	// value that suits all four stages reasonably.
	DefaultTemperature = 0.7
	// DefaultMaxTokens is used when a stage sets no max_tokens: enough for a
	// long answer, small enough to bound the cost of a run.
	DefaultMaxTokens = 1024
	// maxMaxTokens rejects max_tokens values that can only be typos.
	maxMaxTokens = 1_000_000
)

// Provider kinds a ProviderConfig may name.
const (
	KindSim    = "sim"    // the built-in simulated model (package stagework/sim)
	KindOpenAI = "openai" // any OpenAI-compatible /v1/chat/completions endpoint
)

// Config is a parsed, validated profile file.
type Config struct {
	// Providers maps an endpoint name (referred to by stages) to its settings.
	Providers map[string]ProviderConfig
	// Profiles maps a profile name to the profile. Names are lower case
	// letters, digits, '.', '-' and '_' (they appear in model ids "qlc-<name>").
	Profiles map[string]*Profile
	// DefaultProfile is the profile used when a request names none.
	DefaultProfile string
	// Prices maps a model name to its price, for billing. Optional.
	Prices map[string]Price
	// Routing maps each complexity tier (Tiers) to the profile a run asked
	// for with profile AutoProfile ("auto", model "qlc-auto") runs when
	// its question falls in that tier (package stagework/route). Nil: the
	// file has no routing and "auto" is refused. When set, every tier is
	// mapped and every profile named exists.
	Routing map[string]string
}

// ProviderConfig is one provider endpoint.
type ProviderConfig struct {
	// Kind is "sim" (the built-in simulator) or "openai" (an OpenAI-compatible endpoint).
	Kind string `yaml:"kind"`
	// BaseURL is the endpoint's API root, e.g. "https://api.openai.com/v1"
	// (the client appends "/chat/completions"). Kind openai only; required.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the environment variable that holds the API key; the
	// key itself never appears in the file. Kind openai only; empty for
	// endpoints without auth (a local vLLM or Ollama).
	APIKeyEnv string `yaml:"api_key_env"`
	// Headers are extra HTTP headers sent with every request (e.g.
	// OpenRouter's "HTTP-Referer"). Kind openai only.
	Headers map[string]string `yaml:"headers"`
	// Sim configures the simulated model. Kind sim only.
	Sim SimConfig `yaml:"sim"`
	// Breaker is the endpoint's circuit breaker: failures (consecutive,
	// default 5; -1 disables it) and open_for (default 30s).
	Breaker BreakerConfig `yaml:"breaker"`
	// RateLimit bounds the endpoint's requests and tokens per minute
	// (token buckets; 0 = unbounded).
	RateLimit RateLimit `yaml:"rate_limit"`
}

// Profile is a named pipeline: its strategy and which provider and model
// serve each step.
type Profile struct {
	// Name is the profile's name (its key in the file).
	Name string
	// Description is one line for people (shown in model lists and the UI).
	Description string
	// Strategy is the shape of the run's graph: StrategyChain (also when
	// empty), StrategyMoA, StrategyCouncil or StrategyVote.
	Strategy string
	// CacheUnseeded lets the response cache answer a request without a seed
	// from an earlier identical run even though its steps sample (a
	// temperature above 0): the operator accepts the same answer for the
	// same question. Without it, only seeded requests, or profiles whose
	// every step has temperature 0, are cached.
	CacheUnseeded bool
	// CacheNearDuplicates (opt-in) lets the response cache answer a
	// question worded differently from a kept run's but the same question
	// (package internal/neardup: the same negations, numbers and names, and
	// an estimated similarity of their content words ≥ 0.75), everything
	// else about the request identical.
	CacheNearDuplicates bool
	// Local marks a profile generated from the model servers found on
	// this machine (package stagework/discover); a profile file cannot
	// set it.
	Local bool
	// Stages holds the run's steps, every step after the steps it reads
	// (its Inputs); the last step is the Final one. A chain's are its four
	// stages in pipeline order.
	Stages []StageSpec
}

// Endpoints lists the provider endpoints the profile's steps call, their
// fallbacks' included, each once, in step order.
func (p *Profile) Endpoints() []string {
	var out []string
	add := func(ep string) {
		if ep != "" && !slices.Contains(out, ep) {
			out = append(out, ep)
		}
	}
	for _, s := range p.Stages {
		if s.Stage == StageTally {
			continue // calls no model
		}
		add(s.Provider)
		if s.Fallback != nil {
			add(s.Fallback.Provider)
		}
	}
	return out
}

// IsChain reports whether the profile is the four-stage chain.
func (p *Profile) IsChain() bool { return p.Strategy == "" || p.Strategy == StrategyChain }

// Step returns the profile's step with the given id.
func (p *Profile) Step(id string) (StageSpec, bool) {
	for _, sp := range p.Stages {
		if sp.StepID() == id {
			return sp, true
		}
	}
	return StageSpec{}, false
}

// StageSpec is one step's settings within a profile (a chain's steps are
// its stages).
type StageSpec struct {
	// Stage is the step's role: a chain's stage, or a strategy's role.
	Stage Stage
	// ID is the step's id, unique within the profile: a chain stage's name
	// ("generator"); "p<layer>.<n>" and "aggregator" (moa); "m<n>",
	// "r<n>" and "chairman" (council); "s<n>", "judge" and "answer" (vote).
	// Empty means the stage's name (StepID).
	ID string
	// Inputs are the ids of the steps whose outputs this step reads, in
	// the order its prompt shows them. A chain stage reads the stage
	// before it.
	Inputs []string
	// MinInputs is how many of Inputs must finish for the step to run. A
	// step runs once every input has finished or been left out (failed,
	// or stopped past its Deadline), if at least MinInputs finished; with
	// fewer, the run fails, naming the inputs that did not finish and why.
	// 0: the step runs on whatever finished (a council's chairman without
	// rankings, a vote's tally without its judge).
	MinInputs int
	// Deadline is the step's own time limit, from its start: past it, an
	// unfinished step is stopped and left out as soon as every step that
	// reads it has MinInputs other finished inputs (until then it goes
	// on: a straggler is still wanted). 0: no deadline.
	Deadline time.Duration
	// Final marks the step whose output is the run's answer (the last).
	Final bool
	// Layer is a moa proposer's layer, from 1; 0 for other steps.
	Layer int
	// Method is a tally step's method: VoteMajority or VoteJudge.
	Method string
	// src is where the step comes from in the profile file, for errors.
	src string
	// Provider names an entry of Config.Providers. In the file it defaults to
	// the profile's "provider".
	Provider string
	// Model is the model name sent to the provider.
	Model string
	// Temperature is the sampling temperature, in [0, 2]; DefaultTemperature if unset.
	Temperature float64
	// MaxTokens caps the stage's output, > 0; DefaultMaxTokens if unset.
	MaxTokens int
	// ContextWindow is the model's context window in tokens (prompt and
	// output together); the prompt is fitted into ContextWindow - MaxTokens
	// by trimming earlier stages' outputs (never the question). 0: the
	// window of a known model (ContextWindowOf), else no fitting.
	ContextWindow int
	// Hedge (opt-in) starts the same stage on the fallback model when the
	// primary has sent no first token by its endpoint's recent p95 time to
	// first token, and keeps whichever streams first ("The Tail at Scale").
	// Needs Fallback.
	Hedge bool
	// TTFTBudget (optional, with Hedge) is the step's time-to-first-token
	// budget: when its primary model's recent p95 TTFT (live telemetry) is
	// above it, the fallback starts at once beside the primary — a
	// speculative start — instead of after that p95; the first to stream
	// wins, the other is cancelled and billed for what it used.
	TTFTBudget time.Duration
	// Fallback is the model tried when the primary fails before its first
	// token and retries are spent; nil for none. Its provider defaults to the
	// stage's provider.
	Fallback *ModelRef
	// SystemPrompt replaces the stage's default system prompt; empty keeps the
	// default. A text/template over PromptData.
	SystemPrompt string
	// UserTemplate replaces the stage's default user-message template; empty
	// keeps the default. A text/template over PromptData.
	UserTemplate string
	// Candidates are the models the cost/quality optimiser (Optimise) may
	// run the step on, each with a quality tier; nil: the step always runs
	// Model. With candidates, Provider and Model are the step's default
	// (the first candidate when the file names no model), run when a
	// request sets no budget.
	Candidates []Candidate
	// Optional marks a step the run can do without: when the run's real
	// cost crosses its max_cost_usd, optional steps not yet finished are
	// left out (StepSkipped, code cost_cap). Strategy steps only, never
	// the final one; the steps reading it need no more than its other,
	// non-optional inputs (validate checks).
	Optional bool
}

// StepID is the step's id: ID, or the stage's name when ID is empty.
func (sp StageSpec) StepID() string {
	if sp.ID != "" {
		return sp.ID
	}
	return sp.Stage.String()
}

// ModelRef names a model on a provider.
type ModelRef struct {
	// Provider names an entry of Config.Providers.
	Provider string `yaml:"provider"`
	// Model is the model name sent to the provider.
	Model string `yaml:"model"`
}

// Price is a model's price in US dollars per million tokens.
type Price struct {
	// Input is the price of a million prompt tokens.
	Input float64 `yaml:"input"`
	// Output is the price of a million completion tokens.
	Output float64 `yaml:"output"`
}

// Cost is the price of u in US dollars.
func (p Price) Cost(u Usage) float64 {
	return (float64(u.PromptTokens)*p.Input + float64(u.CompletionTokens)*p.Output) / 1e6
}

// DefaultConfig returns a fresh copy of the built-in profile file
// (profiles.yaml): the profiles fast, balanced, deep and instant, all on the
// simulated provider, plus an unused "openai" endpoint as an example. It
// panics only if the embedded file is broken, which a test rules out.
func DefaultConfig() *Config {
	c, err := ParseConfig(defaultProfilesYAML)
	if err != nil {
		panic("stagework: embedded profiles.yaml is invalid: " + err.Error())
	}
	return c
}

// DefaultConfigYAML returns the text of the built-in profile file, as a
// starting point for a custom one.
func DefaultConfigYAML() []byte { return bytes.Clone(defaultProfilesYAML) }

// LoadConfig reads and parses the profile file at path (YAML or JSON).
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stagework: load config: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxConfigSize+1)); err != nil {
		return nil, fmt.Errorf("stagework: load config %s: %w", path, err)
	}
	c, err := ParseConfig(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates a profile file, YAML or JSON. Every error
// wraps ErrInvalidConfig and names the offending field (by line for syntax
// and unknown fields, by path such as profiles.fast.stages.generator.model
// otherwise); several problems are reported together.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%w: %d bytes, larger than %d", ErrInvalidConfig, len(data), MaxConfigSize)
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) || strings.TrimSpace(string(data)) == "" {
			return nil, fmt.Errorf("%w: the file is empty", ErrInvalidConfig)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, explainYAMLError(err))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document (one profile file per config)", ErrInvalidConfig)
	}
	c, broken, errs := raw.convert()
	errs = append(errs, c.validate(broken)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Validate checks a Config built or changed in code (ParseConfig has already
// called it) and fills in what may be left out: Profile.Name, DefaultProfile
// and a fallback's provider. Temperature and MaxTokens are defaulted only when
// a file is parsed, since zero temperature is a valid choice; here a zero
// MaxTokens is an error. Every error wraps ErrInvalidConfig.
func (c *Config) Validate() error {
	return errors.Join(c.validate(nil)...)
}

// Profile returns the named profile; the empty name means DefaultProfile.
// An unknown name gives an error wrapping ErrUnknownProfile.
func (c *Config) Profile(name string) (*Profile, error) {
	if name == "" {
		name = c.DefaultProfile
	}
	if p, ok := c.Profiles[name]; ok && p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownProfile, name, strings.Join(c.ProfileNames(), ", "))
}

// ProfileNames lists the profiles' names, sorted.
func (c *Config) ProfileNames() []string {
	return sortedKeys(c.Profiles)
}

// Price returns the price of model, if the file gives one.
func (c *Config) Price(model string) (Price, bool) {
	p, ok := c.Prices[model]
	return p, ok
}

// Stage returns the profile's settings for stage s.
func (p *Profile) Stage(s Stage) (StageSpec, bool) {
	for _, sp := range p.Stages {
		if sp.Stage == s {
			return sp, true
		}
	}
	return StageSpec{}, false
}

// --- parsing ---

// rawConfig and friends mirror the file; convert turns them into Config.
type rawConfig struct {
	Providers      map[string]*ProviderConfig `yaml:"providers"`
	Profiles       map[string]*rawProfile     `yaml:"profiles"`
	DefaultProfile string                     `yaml:"default_profile"`
	Prices         map[string]Price           `yaml:"prices"`
	Routing        map[string]string          `yaml:"routing"`
}

type rawProfile struct {
	Description string               `yaml:"description"`
	Provider    string               `yaml:"provider"`
	Strategy    string               `yaml:"strategy"`
	Stages      map[string]*rawStage `yaml:"stages"`
	// CacheUnseeded lets the response cache serve runs of this profile
	// that carry no seed (see Profile.CacheUnseeded).
	CacheUnseeded bool `yaml:"cache_unseeded"`
	// CacheNearDuplicates lets the response cache answer a question that
	// is a near-duplicate of a kept one (see Profile.CacheNearDuplicates).
	CacheNearDuplicates bool `yaml:"cache_near_duplicates"`
	// The parallel strategies' shapes (strategy.go says what each means).
	Layers       int           `yaml:"layers"`
	Proposers    []*rawStage   `yaml:"proposers"`
	Aggregator   *rawStage     `yaml:"aggregator"`
	MinProposers *int          `yaml:"min_proposers"`
	Members      []*rawStage   `yaml:"members"`
	Chairman     *rawStage     `yaml:"chairman"`
	MinMembers   *int          `yaml:"min_members"`
	Samples      []*rawStage   `yaml:"samples"`
	Count        int           `yaml:"count"`
	Method       string        `yaml:"method"`
	Judge        *rawStage     `yaml:"judge"`
	MinSamples   *int          `yaml:"min_samples"`
	StepDeadline time.Duration `yaml:"step_deadline"`
}

type rawStage struct {
	Provider     string        `yaml:"provider"`
	Model        string        `yaml:"model"`
	Temperature  *float64      `yaml:"temperature"`
	MaxTokens    *int          `yaml:"max_tokens"`
	Context      *int          `yaml:"context_window"`
	Hedge        bool          `yaml:"hedge"`
	TTFTBudget   time.Duration `yaml:"ttft_budget"`
	Fallback     *ModelRef     `yaml:"fallback"`
	SystemPrompt string        `yaml:"system_prompt"`
	UserTemplate string        `yaml:"user_template"`

	// The cost/quality engine's (candidates.go).
	Candidates []*rawCandidate `yaml:"candidates"`
	Optional   bool            `yaml:"optional"`
}

// convert builds the Config. It reports structural problems (unknown or
// missing stages, empty entries) and the names of the profiles they affect,
// which validate then does not count stages of again.
func (r *rawConfig) convert() (c *Config, broken map[string]bool, errs []error) {
	broken = map[string]bool{}
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	c = &Config{
		Providers:      make(map[string]ProviderConfig, len(r.Providers)),
		Profiles:       make(map[string]*Profile, len(r.Profiles)),
		DefaultProfile: r.DefaultProfile,
		Prices:         r.Prices,
		Routing:        r.Routing,
	}
	for _, name := range sortedKeys(r.Providers) {
		p := r.Providers[name]
		if p == nil {
			bad("providers."+name, "empty (needs at least kind)")
			continue
		}
		c.Providers[name] = *p
	}
	for _, name := range sortedKeys(r.Profiles) {
		p, isBroken, perrs := convertProfile(name, "profiles."+name, r.Profiles[name])
		errs = append(errs, perrs...)
		if isBroken {
			broken[name] = true
		}
		c.Profiles[name] = p
	}
	return c, broken, errs
}

// convertProfile builds one profile from its entry rp (the file's
// profiles.<name>, or a tenant's own profile), naming fields under path.
// broken: the profile is incomplete (validate does not count its stages
// again).
func convertProfile(name, path string, rp *rawProfile) (p *Profile, broken bool, errs []error) {
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	if rp == nil {
		bad(path, "empty (needs stages)")
		return &Profile{Name: name}, true, errs
	}
	p = &Profile{Name: name, Description: rp.Description, Strategy: rp.Strategy, CacheUnseeded: rp.CacheUnseeded,
		CacheNearDuplicates: rp.CacheNearDuplicates}
	if !p.IsChain() {
		if rp.Stages != nil {
			bad(path+".stages", "applies only to strategy chain (strategy %s has its own shape)", rp.Strategy)
		}
		steps, errs2 := rp.expand(path)
		errs = append(errs, errs2...)
		p.Stages = steps
		return p, len(errs2) > 0, errs
	}
	if rp.usesStrategyFields() {
		bad(path, "proposers, aggregator, members, chairman, samples, judge, layers, count, method, min_* and step_deadline apply only to strategies moa, council and vote")
		broken = true
	}
	for stageName := range rp.Stages {
		if st, err := ParseStage(stageName); err != nil || !st.Chain() || stageName != strings.ToLower(stageName) {
			bad(path+".stages", "unknown stage %q (the stages are generator, refiner, validator, curator)", stageName)
			broken = true
		}
	}
	for _, s := range Stages {
		rs, ok := rp.Stages[s.String()]
		spath := path + ".stages." + s.String()
		if !ok {
			bad(spath, "missing (every profile sets all four stages)")
			broken = true
			continue
		}
		if rs == nil {
			bad(spath, "empty (needs at least model)")
			broken = true
			continue
		}
		sp := rs.spec(s, rp.Provider)
		if prev := len(p.Stages); prev > 0 {
			sp.Inputs, sp.MinInputs = []string{p.Stages[prev-1].StepID()}, 1
		}
		sp.Final = s == StageCurator
		p.Stages = append(p.Stages, sp)
	}
	return p, broken, errs
}

// spec turns a step's settings into a StageSpec with defaults filled in.
func (rs *rawStage) spec(role Stage, profileProvider string) StageSpec {
	sp := StageSpec{
		Stage:        role,
		Provider:     rs.Provider,
		Model:        rs.Model,
		Temperature:  DefaultTemperature,
		MaxTokens:    DefaultMaxTokens,
		SystemPrompt: rs.SystemPrompt,
		UserTemplate: rs.UserTemplate,
		Hedge:        rs.Hedge,
		TTFTBudget:   rs.TTFTBudget,
		Optional:     rs.Optional,
	}
	if sp.Provider == "" {
		sp.Provider = profileProvider
	}
	sp.Candidates = rs.candidates(sp.Provider)
	if sp.Model == "" && len(sp.Candidates) > 0 {
		// The default is the first candidate, on its own provider.
		sp.Provider, sp.Model = sp.Candidates[0].Provider, sp.Candidates[0].Model
	}
	if rs.Temperature != nil {
		sp.Temperature = *rs.Temperature
	}
	if rs.MaxTokens != nil {
		sp.MaxTokens = *rs.MaxTokens
	}
	if rs.Context != nil {
		sp.ContextWindow = *rs.Context
	}
	if rs.Fallback != nil {
		fb := *rs.Fallback
		sp.Fallback = &fb
	}
	return sp
}

func (rp *rawProfile) usesStrategyFields() bool {
	return rp.Layers != 0 || rp.Proposers != nil || rp.Aggregator != nil || rp.MinProposers != nil ||
		rp.Members != nil || rp.Chairman != nil || rp.MinMembers != nil || rp.Samples != nil ||
		rp.Count != 0 || rp.Method != "" || rp.Judge != nil || rp.MinSamples != nil || rp.StepDeadline != 0
}

// expand builds a strategy profile's steps from its shape. Problems of
// the shape are reported with the path of the field; each step's own
// settings are checked later by validate, under its id.
func (rp *rawProfile) expand(path string) (steps []StageSpec, errs []error) {
	bad := func(p, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, p, fmt.Sprintf(format, args...)))
	}
	// only names fields that another strategy uses and this one does not.
	only := func(field string, set bool, strategies string) {
		if set {
			bad(path+"."+field, "applies only to strategy %s", strategies)
		}
	}
	list := func(field string, raw []*rawStage, role Stage) []StageSpec {
		switch {
		case len(raw) == 0:
			bad(path+"."+field, "missing (a list of at least two steps, each at least {model: …})")
			return nil
		case len(raw) > MaxParallel:
			bad(path+"."+field, "%d steps; at most %d", len(raw), MaxParallel)
			return nil
		}
		out := make([]StageSpec, 0, len(raw))
		for i, rs := range raw {
			if rs == nil {
				bad(fmt.Sprintf("%s.%s[%d]", path, field, i), "empty (needs at least model)")
				continue
			}
			sp := rs.spec(role, rp.Provider)
			sp.src = fmt.Sprintf("%s.%s[%d]", path, field, i)
			out = append(out, sp)
		}
		return out
	}
	one := func(field string, rs *rawStage, role Stage) (StageSpec, bool) {
		if rs == nil {
			bad(path+"."+field, "missing (needs at least model)")
			return StageSpec{}, false
		}
		sp := rs.spec(role, rp.Provider)
		sp.src = path + "." + field
		return sp, true
	}
	minOf := func(field string, v *int, n int) int {
		if v == nil {
			return n
		}
		if *v < 1 || *v > n {
			bad(path+"."+field, "%d is not in [1, %d] (the number of steps it counts)", *v, n)
			return n
		}
		return *v
	}
	ids := func(ss []StageSpec) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = s.ID
		}
		return out
	}
	if rp.StepDeadline < 0 {
		bad(path+".step_deadline", "%v is negative", rp.StepDeadline)
	}
	switch rp.Strategy {
	case StrategyMoA:
		only("members", rp.Members != nil, StrategyCouncil)
		only("chairman", rp.Chairman != nil, StrategyCouncil)
		only("min_members", rp.MinMembers != nil, StrategyCouncil)
		only("samples", rp.Samples != nil, StrategyVote)
		only("count", rp.Count != 0, StrategyVote)
		only("method", rp.Method != "", StrategyVote)
		only("judge", rp.Judge != nil, StrategyVote)
		only("min_samples", rp.MinSamples != nil, StrategyVote)
		layers := rp.Layers
		if layers == 0 {
			layers = 1
		}
		if layers < 1 || layers > MaxLayers {
			bad(path+".layers", "%d is not in [1, %d]", rp.Layers, MaxLayers)
			layers = 1
		}
		proposers := list("proposers", rp.Proposers, StageProposer)
		min := minOf("min_proposers", rp.MinProposers, len(proposers))
		var prev []string
		for l := 1; l <= layers; l++ {
			var layer []StageSpec
			for i, sp := range proposers {
				sp.ID = fmt.Sprintf("p%d.%d", l, i+1)
				sp.Layer, sp.Deadline = l, rp.StepDeadline
				if l > 1 {
					sp.Inputs, sp.MinInputs = prev, min
				}
				layer = append(layer, sp)
			}
			steps = append(steps, layer...)
			prev = ids(layer)
		}
		if agg, ok := one("aggregator", rp.Aggregator, StageAggregator); ok {
			agg.ID, agg.Inputs, agg.MinInputs, agg.Final = "aggregator", prev, min, true
			steps = append(steps, agg)
		}
	case StrategyCouncil:
		only("layers", rp.Layers != 0, StrategyMoA)
		only("proposers", rp.Proposers != nil, StrategyMoA)
		only("aggregator", rp.Aggregator != nil, StrategyMoA)
		only("min_proposers", rp.MinProposers != nil, StrategyMoA)
		only("samples", rp.Samples != nil, StrategyVote)
		only("count", rp.Count != 0, StrategyVote)
		only("method", rp.Method != "", StrategyVote)
		only("judge", rp.Judge != nil, StrategyVote)
		only("min_samples", rp.MinSamples != nil, StrategyVote)
		members := list("members", rp.Members, StageMember)
		min := minOf("min_members", rp.MinMembers, len(members))
		for i := range members {
			members[i].ID, members[i].Deadline = fmt.Sprintf("m%d", i+1), rp.StepDeadline
		}
		steps = append(steps, members...)
		// Each member ranks the answers, on its own model: one ranker
		// per member, reading every member's answer.
		var rankers []StageSpec
		for i, m := range members {
			r := m
			r.Stage, r.ID, r.Inputs, r.MinInputs, r.Deadline = StageRanker, fmt.Sprintf("r%d", i+1), ids(members), min, rp.StepDeadline
			r.SystemPrompt, r.UserTemplate = "", ""
			r.Temperature = 0
			rankers = append(rankers, r)
		}
		steps = append(steps, rankers...)
		if ch, ok := one("chairman", rp.Chairman, StageChairman); ok {
			// The chairman follows the rankings and reads the answers they
			// ranked (StepPromptInputs); with no ranking it still writes
			// the answer from the members' answers.
			ch.ID, ch.Inputs, ch.MinInputs, ch.Final = "chairman", ids(rankers), 0, true
			steps = append(steps, ch)
		}
	case StrategyVote:
		only("layers", rp.Layers != 0, StrategyMoA)
		only("proposers", rp.Proposers != nil, StrategyMoA)
		only("aggregator", rp.Aggregator != nil, StrategyMoA)
		only("min_proposers", rp.MinProposers != nil, StrategyMoA)
		only("members", rp.Members != nil, StrategyCouncil)
		only("chairman", rp.Chairman != nil, StrategyCouncil)
		only("min_members", rp.MinMembers != nil, StrategyCouncil)
		models := list("samples", rp.Samples, StageSample)
		count := rp.Count
		if count == 0 {
			count = len(models)
		}
		if count < 1 || count > MaxParallel {
			bad(path+".count", "%d is not in [1, %d]", rp.Count, MaxParallel)
			count = len(models)
		}
		var samples []StageSpec
		for i := 0; i < count && len(models) > 0; i++ {
			sp := models[i%len(models)]
			sp.ID, sp.Deadline = fmt.Sprintf("s%d", i+1), rp.StepDeadline
			samples = append(samples, sp)
		}
		min := minOf("min_samples", rp.MinSamples, len(samples))
		steps = append(steps, samples...)
		method := rp.Method
		if method == "" {
			method = VoteMajority
			if rp.Judge != nil {
				method = VoteJudge
			}
		}
		tally := StageSpec{Stage: StageTally, ID: "answer", Inputs: ids(samples), MinInputs: min,
			Final: true, Method: method, Model: method, MaxTokens: 1}
		switch method {
		case VoteMajority:
			if rp.Judge != nil {
				bad(path+".judge", "applies only to method judge")
			}
		case VoteJudge:
			if j, ok := one("judge", rp.Judge, StageJudge); ok {
				j.ID, j.Inputs, j.MinInputs = "judge", ids(samples), min
				steps = append(steps, j)
				// The tally follows the judge's pick, or takes the
				// majority of the samples if the judge fails.
				tally.Inputs, tally.MinInputs = []string{"judge"}, 0
			}
		default:
			bad(path+".method", "unknown method %q (majority or judge)", rp.Method)
		}
		steps = append(steps, tally)
	case "":
	default:
		bad(path+".strategy", "unknown strategy %q (chain, moa, council or vote)", rp.Strategy)
	}
	return steps, errs
}

var (
	profileNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	endpointRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	stepIDRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerNameRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// validate checks c and fills defaults, returning every problem found, in a
// stable order. Profiles named in broken were already reported as incomplete.
func (c *Config) validate(broken map[string]bool) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		if format == "" { // path already says what is wrong
			errs = append(errs, fmt.Errorf("%w: %s", ErrInvalidConfig, path))
			return
		}
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}

	if len(c.Providers) == 0 {
		bad("providers", "none defined")
	}
	for _, name := range sortedKeys(c.Providers) {
		p := c.Providers[name]
		path := "providers." + name
		if !endpointRE.MatchString(name) {
			bad(path, "bad name (letters, digits, '.', '-', '_'; at most 64)")
		}
		if p.Breaker.Failures < -1 || p.Breaker.OpenFor < 0 {
			bad(path+".breaker", "failures must be -1 (off), 0 (default 5) or more, open_for not negative")
		}
		if p.RateLimit.RequestsPerMinute < 0 || p.RateLimit.TokensPerMinute < 0 {
			bad(path+".rate_limit", "limits must not be negative")
		}
		switch p.Kind {
		case KindSim:
			if p.BaseURL != "" || p.APIKeyEnv != "" || len(p.Headers) > 0 {
				bad(path, "base_url, api_key_env and headers apply only to kind openai")
			}
			for _, msg := range p.Sim.problems() {
				bad(path+".sim."+msg, "")
			}
			c.Providers[name] = p // with the sim's defaults filled in
		case KindOpenAI:
			if p.Sim != (SimConfig{}) {
				bad(path+".sim", "applies only to kind sim")
			}
			if p.BaseURL == "" {
				bad(path+".base_url", "missing (e.g. https://api.openai.com/v1)")
			} else if u, err := url.Parse(p.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(path+".base_url", "%q is not an http(s) URL", p.BaseURL)
			}
			if p.APIKeyEnv != "" && !envNameRE.MatchString(p.APIKeyEnv) {
				bad(path+".api_key_env", "%q is not an environment variable name", p.APIKeyEnv)
			}
			for _, h := range sortedKeys(p.Headers) {
				if !headerNameRE.MatchString(h) {
					bad(path+".headers", "%q is not a valid header name", h)
				}
				if strings.ContainsAny(p.Headers[h], "\r\n\x00") {
					bad(path+".headers."+h, "value contains a line break or NUL")
				}
			}
		case "":
			bad(path+".kind", "missing (sim or openai)")
		default:
			bad(path+".kind", "unknown kind %q (sim or openai)", p.Kind)
		}
	}

	if len(c.Profiles) == 0 {
		bad("profiles", "none defined")
	}
	for _, name := range sortedKeys(c.Profiles) {
		c.validateProfile(&errs, name, "profiles."+name, c.Profiles[name], broken[name])
	}

	if c.DefaultProfile == "" {
		if _, ok := c.Profiles["balanced"]; ok {
			c.DefaultProfile = "balanced"
		} else if names := c.ProfileNames(); len(names) > 0 {
			c.DefaultProfile = names[0]
		}
	} else if _, ok := c.Profiles[c.DefaultProfile]; !ok {
		bad("default_profile", "%q is not a profile (known: %s)", c.DefaultProfile, strings.Join(c.ProfileNames(), ", "))
	}

	if _, ok := c.Profiles[AutoProfile]; ok {
		bad("profiles."+AutoProfile, "the name %q is reserved: it asks for the profile routing picks", AutoProfile)
	}
	if c.Routing != nil {
		for _, tier := range sortedKeys(c.Routing) {
			if !slices.Contains(Tiers, tier) {
				bad("routing."+tier, "unknown tier (tiers: %s)", strings.Join(Tiers, ", "))
				continue
			}
			if name := c.Routing[tier]; name == "" {
				bad("routing."+tier, "missing profile")
			} else if _, ok := c.Profiles[name]; !ok {
				bad("routing."+tier, "%q is not a profile (known: %s)", name, strings.Join(c.ProfileNames(), ", "))
			}
		}
		for _, tier := range Tiers {
			if _, ok := c.Routing[tier]; !ok {
				bad("routing."+tier, "missing: routing maps every tier (%s) to a profile", strings.Join(Tiers, ", "))
			}
		}
	}

	for _, model := range sortedKeys(c.Prices) {
		pr := c.Prices[model]
		if model == "" {
			bad("prices", "empty model name")
		}
		if !(pr.Input >= 0 && pr.Output >= 0) || math.IsInf(pr.Input, 0) || math.IsInf(pr.Output, 0) {
			bad("prices."+model, "input and output must be finite and >= 0")
		}
	}
	return errs
}

// validateProfile checks one profile p, named name, whose fields are
// named under path; broken: convertProfile already reported it incomplete.
func (c *Config) validateProfile(errs *[]error, name, path string, p *Profile, broken bool) {
	bad := func(path, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	if p == nil {
		*errs = append(*errs, fmt.Errorf("%w: %s: empty", ErrInvalidConfig, path))
		return
	}
	if !profileNameRE.MatchString(name) {
		bad(path, "bad name (lower-case letters, digits, '.', '-', '_'; at most 64)")
	}
	if p.Name == "" {
		p.Name = name
	} else if p.Name != name {
		bad(path, "Name %q differs from its key", p.Name)
	}
	if !p.IsChain() {
		if !broken {
			c.validateSteps(errs, path, p)
		}
		return
	}
	if len(p.Stages) != len(Stages) {
		if !broken {
			bad(path+".stages", "has %d stages, needs all four (generator, refiner, validator, curator)", len(p.Stages))
		}
		return
	}
	for i := range p.Stages {
		sp := &p.Stages[i]
		spath := path + ".stages." + Stages[i].String()
		if sp.Stage != Stages[i] {
			bad(path+".stages", "stage %d is %s, want %s (pipeline order)", i, sp.Stage, Stages[i])
			continue
		}
		if sp.Optional {
			bad(spath+".optional", "applies only to steps of strategies moa, council and vote (each chain stage's prompt reads the stage before it)")
		}
		c.checkStep(errs, spath, sp)
	}
}

// checkStep checks one step's own settings (provider, model, sampling,
// fallback, templates) and fills its fallback's provider.
func (c *Config) checkStep(errs *[]error, spath string, sp *StageSpec) {
	bad := func(path, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	c.checkRef(errs, spath, "provider", sp.Provider)
	if sp.Model == "" {
		bad(spath+".model", "missing")
	}
	if math.IsNaN(sp.Temperature) || sp.Temperature < 0 || sp.Temperature > 2 {
		bad(spath+".temperature", "%v is outside [0, 2]", sp.Temperature)
	}
	if sp.MaxTokens <= 0 || sp.MaxTokens > maxMaxTokens {
		bad(spath+".max_tokens", "%d is not in [1, %d]", sp.MaxTokens, maxMaxTokens)
	}
	if sp.Hedge && sp.Fallback == nil {
		bad(spath+".hedge", "needs a fallback model to hedge with")
	}
	if sp.TTFTBudget < 0 || (sp.TTFTBudget > 0 && !sp.Hedge) {
		bad(spath+".ttft_budget", "%v needs hedge: true (and a fallback) and must not be negative", sp.TTFTBudget)
	}
	if sp.ContextWindow < 0 || (sp.ContextWindow > 0 && sp.ContextWindow <= sp.MaxTokens) {
		bad(spath+".context_window", "%d must be 0 (unknown) or larger than max_tokens (%d)", sp.ContextWindow, sp.MaxTokens)
	}
	if fb := sp.Fallback; fb != nil {
		if fb.Provider == "" {
			fb.Provider = sp.Provider
		}
		c.checkRef(errs, spath+".fallback", "provider", fb.Provider)
		if fb.Model == "" {
			bad(spath+".fallback.model", "missing")
		} else if fb.Provider == sp.Provider && fb.Model == sp.Model {
			bad(spath+".fallback", "is the primary model itself (%s on %s)", fb.Model, fb.Provider)
		}
	}
	c.checkCandidates(errs, spath, sp)
	if sp.SystemPrompt != "" {
		if err := checkTemplate(sp.Stage, sp.SystemPrompt); err != nil {
			bad(spath+".system_prompt", "bad template: %v", err)
		}
	}
	if sp.UserTemplate != "" {
		if err := checkTemplate(sp.Stage, sp.UserTemplate); err != nil {
			bad(spath+".user_template", "bad template: %v", err)
		}
	}
}

// validateSteps checks a strategy profile's graph: step ids unique, every
// input an earlier step, minimums within the inputs, one final step and
// it last; and each step's own settings.
func (c *Config) validateSteps(errs *[]error, path string, p *Profile) {
	bad := func(path, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	switch p.Strategy {
	case StrategyMoA, StrategyCouncil, StrategyVote:
	default:
		bad(path+".strategy", "unknown strategy %q (chain, moa, council or vote)", p.Strategy)
		return
	}
	if len(p.Stages) < 2 {
		bad(path, "strategy %s needs at least two steps, has %d", p.Strategy, len(p.Stages))
		return
	}
	seen := map[string]bool{}
	for i := range p.Stages {
		sp := &p.Stages[i]
		id := sp.StepID()
		spath := sp.src
		if spath == "" {
			spath = path + ".steps." + id
		}
		if sp.ID == "" || !stepIDRE.MatchString(sp.ID) {
			bad(spath, "step id %q must be letters, digits, '.', '-', '_' (at most 32)", sp.ID)
		} else if seen[id] {
			bad(spath, "step id %q is used twice", id)
		}
		if !sp.Stage.Valid() {
			bad(spath, "unknown role %d", int(sp.Stage))
			continue
		}
		for _, in := range sp.Inputs {
			if !seen[in] {
				bad(spath, "input %q is not an earlier step", in)
			}
		}
		if sp.MinInputs < 0 || sp.MinInputs > len(sp.Inputs) {
			bad(spath, "needs %d of its %d inputs", sp.MinInputs, len(sp.Inputs))
		}
		if sp.Deadline < 0 {
			bad(spath+".step_deadline", "%v is negative", sp.Deadline)
		}
		if sp.Final != (i == len(p.Stages)-1) {
			bad(spath, "the last step, and only it, is the final one (its output is the answer)")
		}
		seen[id] = true
		if sp.Stage == StageTally {
			if sp.Method != VoteMajority && sp.Method != VoteJudge {
				bad(spath+".method", "unknown method %q (majority or judge)", sp.Method)
			}
			if sp.Provider != "" || sp.Fallback != nil {
				bad(spath, "a tally calls no model (no provider or fallback)")
			}
			continue
		}
		c.checkStep(errs, spath, sp)
	}
	checkOptional(errs, path, p)
}

func (c *Config) checkRef(errs *[]error, path, field, provider string) {
	switch {
	case provider == "":
		*errs = append(*errs, fmt.Errorf("%w: %s.%s: missing (set it on the stage or the profile)", ErrInvalidConfig, path, field))
	default:
		if _, ok := c.Providers[provider]; !ok {
			*errs = append(*errs, fmt.Errorf("%w: %s.%s: %q is not a provider (known: %s)", ErrInvalidConfig, path, field, provider, strings.Join(sortedKeys(c.Providers), ", ")))
		}
	}
}

// --- YAML error messages ---

// rawTypes names the file's sections for error messages and lists their fields.
var rawTypes = map[string]struct {
	what string
	typ  reflect.Type
}{
	"stagework.rawConfig":      {"the top level", reflect.TypeOf(rawConfig{})},
	"stagework.rawProfile":     {"a profile", reflect.TypeOf(rawProfile{})},
	"stagework.rawStage":       {"a stage", reflect.TypeOf(rawStage{})},
	"stagework.ProviderConfig": {"a provider", reflect.TypeOf(ProviderConfig{})},
	"stagework.SimConfig":      {"a sim block", reflect.TypeOf(SimConfig{})},
	"stagework.ModelRef":       {"a fallback", reflect.TypeOf(ModelRef{})},
	"stagework.Price":          {"a price", reflect.TypeOf(Price{})},
	"stagework.rawCandidate":   {"a candidate", reflect.TypeOf(rawCandidate{})},
}

var unknownFieldRE = regexp.MustCompile(`field (.+) not found in type (\S+)`)
var intoTypeRE = regexp.MustCompile(`into (\*?)(stagework\.\w+)`)

// explainYAMLError rewrites yaml's messages about our internal types into
// words a person editing the file understands.
func explainYAMLError(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	lines := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		e = unknownFieldRE.ReplaceAllStringFunc(e, func(m string) string {
			sub := unknownFieldRE.FindStringSubmatch(m)
			t, ok := rawTypes[sub[2]]
			if !ok {
				return m
			}
			return fmt.Sprintf("unknown field %q in %s (known: %s)", sub[1], t.what, strings.Join(yamlFields(t.typ), ", "))
		})
		e = intoTypeRE.ReplaceAllStringFunc(e, func(m string) string {
			sub := intoTypeRE.FindStringSubmatch(m)
			if t, ok := rawTypes[sub[2]]; ok {
				return "into " + t.what
			}
			return m
		})
		lines = append(lines, e)
	}
	return strings.Join(lines, "; ")
}

func yamlFields(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The tiers a question is put in by its complexity (package
// stagework/route), cheapest first. Config.Routing maps each to a
// profile.
const (
	TierSimple   = "simple"
	TierStandard = "standard"
	TierComplex  = "complex"
)

// Tiers lists the tiers, cheapest first.
var Tiers = []string{TierSimple, TierStandard, TierComplex}

// RoutedProfile returns the profile Routing maps tier to; false when the
// file has no routing or the tier is unknown.
func (c *Config) RoutedProfile(tier string) (string, bool) {
	name, ok := c.Routing[tier]
	return name, ok && name != ""
}

// AutoProfile is the profile name (and "qlc-auto" the model) that asks
// for the profile routing picks for the question (Config.Routing).
const AutoProfile = "auto"
