package discover

import (
	"slices"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

func TestApplyOneModelGivesTheLocalChain(t *testing.T) {
	c := stagework.DefaultConfig()
	before := c.ProfileNames()
	added, err := Apply(c, []Server{{Kind: Ollama, Addr: "127.0.0.1:11434", BaseURL: "http://127.0.0.1:11434/v1", Models: []Model{{ID: "llama3.1:8b", Params: 8}}}})
	if err != nil {
		t.Fatal(err)
	}
	// The built-in file already has an "ollama" provider: no clash with "local-ollama".
	if !slices.Equal(added.Providers, []string{"local-ollama"}) || !slices.Equal(added.Profiles, []string{"local"}) {
		t.Fatalf("added %+v", added)
	}
	if pc := c.Providers["local-ollama"]; pc.Kind != stagework.KindOpenAI || pc.BaseURL != "http://127.0.0.1:11434/v1" || pc.APIKeyEnv != "" {
		t.Fatalf("provider %+v", pc)
	}
	p, err := c.Profile("local")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Local || !p.IsChain() || len(p.Stages) != 4 || !strings.HasSuffix(p.Description, "(local)") || !strings.Contains(p.Description, "llama3.1:8b") {
		t.Fatalf("local: %+v", p)
	}
	for _, st := range p.Stages {
		if st.Provider != "local-ollama" || st.Model != "llama3.1:8b" || st.Fallback != nil {
			t.Fatalf("stage %+v", st)
		}
	}
	if got := c.ProfileNames(); len(got) != len(before)+1 || c.DefaultProfile != "balanced" {
		t.Fatalf("profiles %v, default %q", got, c.DefaultProfile)
	}
	for _, name := range before {
		if p, _ := c.Profile(name); p.Local {
			t.Fatalf("%s marked local", name)
		}
	}
}

func TestApplySeveralModelsGivesTheStrategies(t *testing.T) {
	c := stagework.DefaultConfig()
	servers := []Server{
		{Kind: Ollama, Addr: "127.0.0.1:11434", BaseURL: "http://127.0.0.1:11434/v1", Models: []Model{{ID: "llama3.1:8b", Params: 8}, {ID: "phi4"}}},
		{Kind: VLLM, Addr: "[::1]:8000", BaseURL: "http://[::1]:8000/v1", Models: []Model{{ID: "Qwen/Qwen2.5-14B-Instruct", Params: 14, ContextWindow: 8192}}},
		{Kind: LMStudio, Addr: "127.0.0.1:1234", BaseURL: "http://127.0.0.1:1234/v1", Models: []Model{{ID: "gemma-3-4b", Params: 4}}},
	}
	if got := Ranked(servers); got[0].ID != "Qwen/Qwen2.5-14B-Instruct" || got[1].ID != "llama3.1:8b" || got[2].ID != "gemma-3-4b" || got[3].ID != "phi4" {
		t.Fatalf("ranked %+v", got)
	}
	added, err := Apply(c, servers)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added.Profiles, []string{"local", "local-moa", "local-council", "local-vote"}) ||
		!slices.Equal(added.Providers, []string{"local-ollama", "local-vllm", "local-lmstudio"}) {
		t.Fatalf("added %+v", added)
	}
	for _, name := range added.Profiles {
		p, _ := c.Profile(name)
		if !p.Local || !strings.HasSuffix(p.Description, "(local)") {
			t.Errorf("%s: %+v", name, p)
		}
	}
	local, _ := c.Profile("local")
	if g := local.Stages[0]; g.Provider != "local-vllm" || g.Model != "Qwen/Qwen2.5-14B-Instruct" || g.ContextWindow != 8192 ||
		g.Fallback == nil || *g.Fallback != (stagework.ModelRef{Provider: "local-ollama", Model: "llama3.1:8b"}) {
		t.Fatalf("local generator %+v", g)
	}
	moa, _ := c.Profile("local-moa")
	var proposers []string
	for _, st := range moa.Stages {
		if st.Stage == stagework.StageProposer {
			proposers = append(proposers, st.Provider+"/"+st.Model)
		}
	}
	if moa.Strategy != stagework.StrategyMoA || !slices.Equal(proposers, []string{"local-vllm/Qwen/Qwen2.5-14B-Instruct", "local-ollama/llama3.1:8b", "local-lmstudio/gemma-3-4b"}) {
		t.Fatalf("moa proposers %v", proposers)
	}
	if agg := moa.Stages[len(moa.Stages)-1]; agg.ID != "aggregator" || agg.Model != "Qwen/Qwen2.5-14B-Instruct" || agg.MinInputs != 2 {
		t.Fatalf("aggregator %+v", agg)
	}
	council, _ := c.Profile("local-council")
	if council.Strategy != stagework.StrategyCouncil || council.Stages[len(council.Stages)-1].ID != "chairman" {
		t.Fatalf("council %+v", council)
	}
	vote, _ := c.Profile("local-vote")
	if last := vote.Stages[len(vote.Stages)-1]; vote.Strategy != stagework.StrategyVote || last.Method != stagework.VoteJudge {
		t.Fatalf("vote %+v", vote)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A profile file's own names win: generated names take a suffix.
func TestApplyNamesDoNotClash(t *testing.T) {
	c, err := stagework.ParseConfig([]byte(`
providers:
  local-ollama: {kind: openai, base_url: "http://example.com/v1"}
  sim: {kind: sim}
profiles:
  local:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  local-moa:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`))
	if err != nil {
		t.Fatal(err)
	}
	servers := []Server{
		{Kind: Ollama, Addr: "127.0.0.1:11434", BaseURL: "http://127.0.0.1:11434/v1", Models: []Model{{ID: "a:7b"}, {ID: "b:3b"}}},
		{Kind: Ollama, Addr: "[::1]:11435", BaseURL: "http://[::1]:11435/v1", Models: []Model{{ID: "c:1b"}}},
	}
	added, err := Apply(c, servers)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added.Providers, []string{"local-ollama-11434", "local-ollama-11435"}) ||
		!slices.Equal(added.Profiles, []string{"local-2", "local-moa-2", "local-council", "local-vote"}) {
		t.Fatalf("added %+v", added)
	}
	if p, _ := c.Profile("local"); p.Local || p.Stages[0].Provider != "sim" {
		t.Fatalf("the file's local profile was touched: %+v", p)
	}
	if c.Providers["local-ollama"].BaseURL != "http://example.com/v1" {
		t.Fatal("the file's provider was touched")
	}
}

func TestApplyNothingFound(t *testing.T) {
	c := stagework.DefaultConfig()
	n := len(c.Profiles)
	added, err := Apply(c, []Server{{Kind: VLLM, Addr: "127.0.0.1:8000", BaseURL: "http://127.0.0.1:8000/v1"}})
	if err != nil || len(added.Profiles)+len(added.Providers) != 0 || len(c.Profiles) != n {
		t.Fatalf("%+v %v", added, err)
	}
}

// Extend adds only the servers no endpoint serves yet, on a copy: the base
// is unchanged and its profiles are shared; with two or more new models the
// strategies are generated under names that do not clash with the first
// look's; with nothing new, the base itself comes back.
func TestExtendAddsOnlyNewServers(t *testing.T) {
	base := stagework.DefaultConfig()
	first := Server{Kind: Ollama, Addr: "127.0.0.1:11434", BaseURL: "http://127.0.0.1:11434/v1", Models: []Model{{ID: "llama3.1:8b", Params: 8}}}
	if _, err := Apply(base, []Server{first}); err != nil {
		t.Fatal(err)
	}
	names, providers := base.ProfileNames(), len(base.Providers)
	later := Server{Kind: LMStudio, Addr: "127.0.0.1:1234", BaseURL: "http://127.0.0.1:1234/v1", Models: []Model{{ID: "gemma-3-4b", Params: 4}, {ID: "phi4"}}}
	if got := New(base, []Server{first, later}); len(got) != 1 || got[0].BaseURL != later.BaseURL {
		t.Fatalf("New: %+v", got)
	}
	next, added, err := Extend(base, []Server{first, later})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added.Providers, []string{"local-lmstudio"}) ||
		!slices.Equal(added.Profiles, []string{"local-2", "local-moa", "local-council", "local-vote"}) {
		t.Fatalf("added %+v", added)
	}
	if !slices.Equal(base.ProfileNames(), names) || len(base.Providers) != providers {
		t.Fatal("the base was changed")
	}
	for _, name := range names {
		if next.Profiles[name] != base.Profiles[name] {
			t.Errorf("profile %s is not the base's", name)
		}
	}
	if p, _ := next.Profile("local-2"); !p.Local || p.Stages[0].Provider != "local-lmstudio" || p.Stages[0].Model != "gemma-3-4b" {
		t.Fatalf("local-2: %+v", p)
	}
	if p, _ := next.Profile("local"); p.Stages[0].Model != "llama3.1:8b" {
		t.Fatalf("local changed: %+v", p)
	}
	again, none, err := Extend(next, []Server{first, later})
	if err != nil || again != next || len(none.Providers)+len(none.Profiles) != 0 {
		t.Fatalf("nothing new: %v %+v %v", again == next, none, err)
	}
}
