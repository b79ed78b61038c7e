package stagework

import (
	"errors"
	"strings"
	"testing"
)

func TestParseProfileChainAndStrategy(t *testing.T) {
	c := DefaultConfig()
	p, err := c.ParseProfile("mine", []byte(`{"description": "Mine.", "provider": "sim-fast",
		"stages": {"generator": {"model": "m1", "max_tokens": 50}, "refiner": {"model": "m2"},
		           "validator": {"model": "m3", "temperature": 0}, "curator": {"model": "m4", "fallback": {"model": "m5"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "mine" || !p.IsChain() || len(p.Stages) != 4 || p.Stages[0].MaxTokens != 50 || p.Stages[1].MaxTokens != DefaultMaxTokens ||
		p.Stages[3].Fallback.Provider != "sim-fast" || !p.Stages[3].Final {
		t.Fatalf("profile: %+v", p)
	}
	if _, ok := c.Profiles["mine"]; ok {
		t.Fatal("ParseProfile added the profile to the config")
	}
	v, err := c.ParseProfile("v", []byte("strategy: vote\nprovider: sim\nsamples: [{model: a}, {model: b}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Strategy != StrategyVote || len(v.Stages) != 3 {
		t.Fatalf("vote: %+v", v.Stages)
	}
}

func TestParseProfileErrorsNameTheField(t *testing.T) {
	c := DefaultConfig()
	for _, tc := range []struct{ name, def, want string }{
		{"a", `{"provider": "sim", "stages": {"generator": {"model": "x"}, "refiner": {}, "validator": {"model": "x"}, "curator": {"model": "x"}}}`,
			"stages.refiner.model: missing"},
		{"a", `{"provider": "elsewhere", "stages": {"generator": {"model": "x"}, "refiner": {"model": "x"}, "validator": {"model": "x"}, "curator": {"model": "x"}}}`,
			`stages.generator.provider: "elsewhere" is not a provider`},
		{"a", `{"provider": "sim", "base_url": "http://evil"}`, `unknown field "base_url" in a profile`},
		{"a", `{"strategy": "moa", "provider": "sim", "proposers": [{"model": "a"}, {"model": "b", "system_prompt": "hi"}], "aggregator": {"model": "c"}}`,
			"proposers[1]: system_prompt and user_template are for the operator's profile file only"},
		{"Bad Name", `{"provider": "sim", "stages": {}}`, "profile: bad name"},
		{"a", ``, "the profile is empty"},
		{"a", `{"strategy": "nope"}`, `strategy: unknown strategy "nope"`},
	} {
		_, err := c.ParseProfile(tc.name, []byte(tc.def))
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", tc.def, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "profile.") {
			t.Errorf("%s: error %v keeps the internal root path", tc.def, err)
		}
	}
	if _, err := c.ParseProfile(AutoProfile, []byte(`{"provider": "sim"}`)); !errors.Is(err, ErrReservedProfile) {
		t.Errorf("name auto: error %v, want ErrReservedProfile", err)
	}
}
