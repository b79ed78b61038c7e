package discover

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/qlc-project/qlc/stagework"
)

// Names of the generated profiles. A name an existing profile has gets a
// suffix ("local-2"): a profile file's own profiles always win.
const (
	ProfileLocal   = "local"
	ProfileMoA     = "local-moa"
	ProfileCouncil = "local-council"
	ProfileVote    = "local-vote"
)

// maxMembers bounds the local models in one strategy profile: a machine
// runs them side by side, so more would mostly queue.
const maxMembers = 3

// Added names what Apply added to a config.
type Added struct {
	// Providers are the new provider endpoints, one per server.
	Providers []string
	// Profiles are the new profiles: local, and with two or more local
	// models local-moa, local-council and local-vote (or their suffixed
	// names).
	Profiles []string
}

// ref is one local model on its provider.
type ref struct {
	provider string
	server   Server
	model    Model
}

// Ranked orders the servers' models best first: known size (billions of
// parameters) largest first, then unknown sizes, each in discovery order.
// "Best" is a guess a person can override with a profile file.
func Ranked(servers []Server) []Model {
	var out []Model
	for _, r := range rank(servers, nil) {
		out = append(out, r.model)
	}
	return out
}

func rank(servers []Server, names []string) []ref {
	var refs []ref
	for i, s := range servers {
		for _, m := range s.Models {
			r := ref{server: s, model: m}
			if names != nil {
				r.provider = names[i]
			}
			refs = append(refs, r)
		}
	}
	slices.SortStableFunc(refs, func(a, b ref) int {
		if (a.model.Params > 0) != (b.model.Params > 0) {
			if a.model.Params > 0 {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.model.Params, a.model.Params)
	})
	return refs
}

// Apply adds to c one provider per server (kind openai, the server's base
// URL, no key) and the generated profiles, marked Local and described as
// "(local)":
//
//   - local: the four-stage chain on the best model (Ranked), the second
//     best as its fallback;
//   - with two or more models (on any servers): local-moa (up to three
//     proposers, the best aggregates), local-council (up to three members,
//     the best chairs) and local-vote (at least three samples over the
//     models, the best judges).
//
// Names never clash with c's: a taken name gets a suffix. The result is
// validated (Config.Validate); on any error c is left as it was. With no
// model found, Apply adds nothing.
func Apply(c *stagework.Config, servers []Server) (Added, error) {
	var added Added
	servers = slices.DeleteFunc(slices.Clone(servers), func(s Server) bool { return len(s.Models) == 0 })
	if len(servers) == 0 {
		return added, nil
	}
	taken := func(m map[string]bool, existing func(string) bool) func(string) bool {
		return func(n string) bool { return m[n] || existing(n) }
	}
	newProv, newProf := map[string]bool{}, map[string]bool{}
	provTaken := taken(newProv, func(n string) bool { _, ok := c.Providers[n]; return ok })
	profTaken := taken(newProf, func(n string) bool { _, ok := c.Profiles[n]; return ok })

	file := map[string]any{}
	providers := map[string]any{}
	names := make([]string, len(servers))
	for i, s := range servers {
		base := "local-" + string(s.Kind)
		if provTaken(base) {
			if _, port, err := net.SplitHostPort(s.Addr); err == nil {
				base += "-" + port
			}
		}
		names[i] = unique(base, provTaken)
		newProv[names[i]] = true
		providers[names[i]] = map[string]any{"kind": stagework.KindOpenAI, "base_url": s.BaseURL}
		added.Providers = append(added.Providers, names[i])
	}
	file["providers"] = providers

	refs := rank(servers, names)
	best := refs[0]
	top := refs[:min(len(refs), maxMembers)]
	step := func(r ref, temp float64, maxTokens int) map[string]any {
		st := map[string]any{"provider": r.provider, "model": r.model.ID, "temperature": temp, "max_tokens": maxTokens}
		if cw := r.model.ContextWindow; cw > maxTokens {
			st["context_window"] = cw
		}
		return st
	}
	withFallback := func(st map[string]any) map[string]any {
		if len(refs) > 1 {
			st["fallback"] = map[string]any{"provider": refs[1].provider, "model": refs[1].model.ID}
		}
		return st
	}
	models := func(rs []ref) string {
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.model.ID)
		}
		return strings.Join(ids, ", ")
	}
	profiles := map[string]any{}
	add := func(base string, p map[string]any) {
		name := unique(base, profTaken)
		newProf[name] = true
		profiles[name] = p
		added.Profiles = append(added.Profiles, name)
	}
	add(ProfileLocal, map[string]any{
		"description": fmt.Sprintf("Chain on %s, served by %s at %s (local)", best.model.ID, best.server.Kind.Title(), best.server.Addr),
		"stages": map[string]any{
			"generator": withFallback(step(best, 0.9, 512)),
			"refiner":   withFallback(step(best, 0.5, 600)),
			"validator": withFallback(step(best, 0.2, 400)),
			"curator":   withFallback(step(best, 0.4, 600)),
		},
	})
	if len(refs) >= 2 {
		var members []map[string]any
		for _, r := range top {
			members = append(members, step(r, 0.8, 400))
		}
		minOK := max(1, len(top)-1) // one slow or failing local model does not sink the run
		add(ProfileMoA, map[string]any{
			"description": fmt.Sprintf("Mixture-of-Agents — %s answer at once, %s synthesises (local)", models(top), best.model.ID),
			"strategy":    stagework.StrategyMoA, "layers": 1, "proposers": members, "min_proposers": minOK,
			"aggregator": withFallback(step(best, 0.4, 600)),
		})
		add(ProfileCouncil, map[string]any{
			"description": fmt.Sprintf("Council — %s answer and rank each other's answers anonymously, %s decides (local)", models(top), best.model.ID),
			"strategy":    stagework.StrategyCouncil, "members": members, "min_members": minOK,
			"chairman": withFallback(step(best, 0.4, 600)),
		})
		var samples []map[string]any
		for _, r := range top {
			samples = append(samples, step(r, 1.0, 300))
		}
		count := max(3, len(top))
		add(ProfileVote, map[string]any{
			"description": fmt.Sprintf("Vote — %d samples from %s, %s picks the most consistent answer (local)", count, models(top), best.model.ID),
			"strategy":    stagework.StrategyVote, "samples": samples, "count": count, "method": stagework.VoteJudge,
			"judge": withFallback(step(best, 0.1, 400)), "min_samples": max(1, count-1),
		})
	}
	file["profiles"] = profiles

	// The additions are written as a profile file (JSON is read as YAML)
	// so that ParseConfig expands the strategies exactly as it does a
	// person's file.
	data, err := json.Marshal(file)
	if err != nil {
		return Added{}, fmt.Errorf("discover: %w", err)
	}
	extra, err := stagework.ParseConfig(data)
	if err != nil {
		return Added{}, fmt.Errorf("discover: generated profiles: %w", err)
	}
	// Validate fills defaults in maps (sim providers, candidates' prices):
	// the merged config gets its own maps, so c's are never written. The
	// profiles c has are validated already: Validate writes none of them.
	merged := *c
	merged.Providers = maps.Clone(c.Providers)
	merged.Profiles = maps.Clone(c.Profiles)
	merged.Prices = maps.Clone(c.Prices)
	maps.Copy(merged.Providers, extra.Providers)
	for name, p := range extra.Profiles {
		p.Local = true
		merged.Profiles[name] = p
	}
	if err := merged.Validate(); err != nil {
		return Added{}, fmt.Errorf("discover: generated profiles: %w", err)
	}
	*c = merged
	return added, nil
}

// unique is base, or base-2, base-3, … the first that is not taken.
func unique(base string, taken func(string) bool) string {
	if !taken(base) {
		return base
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s-%d", base, i); !taken(n) {
			return n
		}
	}
}

// New are the servers of servers that no provider endpoint of c serves
// yet (none of c's openai endpoints has the server's base URL), in order.
func New(c *stagework.Config, servers []Server) []Server {
	used := map[string]bool{}
	for _, pc := range c.Providers {
		if pc.Kind == stagework.KindOpenAI {
			used[pc.BaseURL] = true
		}
	}
	return slices.DeleteFunc(slices.Clone(servers), func(s Server) bool { return used[s.BaseURL] })
}

// Extend is Apply on a copy of base for the servers no endpoint of base
// serves yet (New): base is never changed, and every provider and profile
// of base is in next, unchanged (the same *Profile), so next may replace
// base while runs read it. With nothing to add, next is base itself.
func Extend(base *stagework.Config, servers []Server) (next *stagework.Config, added Added, err error) {
	fresh := New(base, servers)
	cp := *base
	if added, err = Apply(&cp, fresh); err != nil || len(added.Providers) == 0 {
		return base, Added{}, err
	}
	return &cp, added, nil
}
