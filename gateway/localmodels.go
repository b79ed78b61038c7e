package gateway

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/discover"
)

// Local model servers (stagework/discover). The gateway command adds the
// servers found at start to the profiles before the engine starts; POST
// /v1/admin/discover-local looks again and adds the servers found since
// (not served by a provider endpoint yet) to the running engine: their
// providers and the generated local profiles (discover.Extend), usable by
// the next run at once (actors.Engine.AddProfiles). Only additions: a
// profile or provider in use is never replaced, a clashing name gets a
// suffix ("local-2"). A new model on a server already in use is not
// added to the local profiles generated before (they never change).

// discoverLocalTimeout bounds one look on demand.
const discoverLocalTimeout = 5 * time.Second

type localServerView struct {
	Kind    string   `json:"kind"`
	Title   string   `json:"title"`
	BaseURL string   `json:"base_url"`
	Models  []string `json:"models"`
	// Provider is the endpoint that serves from it now ("" only when it
	// could not be added: see restart_required).
	Provider string `json:"provider"`
	// Added: the server was found now and added by this look.
	Added bool `json:"added"`
}

type localSkipView struct {
	Addr   string `json:"addr"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

// adminDiscoverLocal looks for local model servers now, adds the new ones
// to the running engine, and reports them: the provider serving each, which
// were added, and the local profiles offered now.
func (s *Server) adminDiscoverLocal(w http.ResponseWriter, r *http.Request) {
	if s.cfg.DiscoverLocal == nil {
		writeError(w, errNotFound("local_discovery_off", "looking for local model servers is off (-discover-local)"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), discoverLocalTimeout)
	defer cancel()
	res, err := s.cfg.DiscoverLocal(ctx)
	if err != nil {
		writeError(w, errServer(http.StatusInternalServerError, "local_discovery_failed", err.Error()))
		return
	}
	added, addErr := s.addLocal(res.Servers)
	stages := s.engine.Stages()
	byURL := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(stages.Providers)) {
		if pc := stages.Providers[name]; pc.Kind == stagework.KindOpenAI {
			if _, ok := byURL[pc.BaseURL]; !ok {
				byURL[pc.BaseURL] = name
			}
		}
	}
	out := struct {
		Object   string            `json:"object"`
		Servers  []localServerView `json:"servers"`
		Skipped  []localSkipView   `json:"skipped"`
		Profiles []string          `json:"profiles"`
		// Added names the providers and profiles this look added.
		AddedProviders []string `json:"added_providers"`
		AddedProfiles  []string `json:"added_profiles"`
		// RestartRequired: a server found could not be added while
		// running (Error says why); a restart may add it.
		RestartRequired bool   `json:"restart_required"`
		Error           string `json:"error,omitempty"`
	}{Object: "local_discovery", Servers: []localServerView{}, Skipped: []localSkipView{}, Profiles: []string{},
		AddedProviders: append([]string{}, added.Providers...), AddedProfiles: append([]string{}, added.Profiles...)}
	if addErr != nil {
		out.Error = addErr.Error()
	}
	for _, sv := range res.Servers {
		v := localServerView{Kind: string(sv.Kind), Title: sv.Kind.Title(), BaseURL: sv.BaseURL, Models: []string{}, Provider: byURL[sv.BaseURL]}
		v.Added = v.Provider != "" && slices.Contains(added.Providers, v.Provider)
		for _, m := range sv.Models {
			v.Models = append(v.Models, m.ID)
		}
		out.RestartRequired = out.RestartRequired || (v.Provider == "" && len(v.Models) > 0)
		out.Servers = append(out.Servers, v)
	}
	for _, sk := range res.Skipped {
		out.Skipped = append(out.Skipped, localSkipView{Addr: sk.Addr, Kind: string(sk.Kind), Reason: sk.Reason})
	}
	for _, name := range stages.ProfileNames() {
		if p, _ := stages.Profile(name); p.Local {
			out.Profiles = append(out.Profiles, name)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// addLocal adds the servers no provider serves yet to the running engine:
// a provider endpoint each and the generated local profiles, with their
// clients. One look adds at a time (localMu); the engine refuses a base
// that changed meanwhile, which then cannot happen from here.
func (s *Server) addLocal(servers []discover.Server) (discover.Added, error) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	base := s.engine.Stages()
	next, added, err := discover.Extend(base, servers)
	if err != nil || len(added.Providers) == 0 {
		return discover.Added{}, err
	}
	only := &stagework.Config{Providers: map[string]stagework.ProviderConfig{}}
	for _, name := range added.Providers {
		only.Providers[name] = next.Providers[name]
	}
	clients, err := actors.BuildProviders(only, s.logger)
	if err != nil {
		return discover.Added{}, err
	}
	if err := s.engine.AddProfiles(base, next, clients); err != nil {
		return discover.Added{}, err
	}
	s.logger.Info("local model servers added", "providers", added.Providers, "profiles", added.Profiles)
	return added, nil
}
