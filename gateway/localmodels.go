package gateway

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// Local model servers (stagework/discover). The gateway command adds the
// servers found at start to the profiles before the engine starts; the
// engine's profiles and provider clients are fixed for its lifetime, so
// POST /v1/admin/discover-local looks again and reports what it finds
// (and whether a restart would add something), without changing them.

// discoverLocalTimeout bounds one look on demand.
const discoverLocalTimeout = 5 * time.Second

type localServerView struct {
	Kind    string   `json:"kind"`
	Title   string   `json:"title"`
	BaseURL string   `json:"base_url"`
	Models  []string `json:"models"`
	// Provider is the endpoint that serves from it now; "" for a server
	// found after the start (a restart adds it).
	Provider string `json:"provider"`
}

type localSkipView struct {
	Addr   string `json:"addr"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

// adminDiscoverLocal looks for local model servers now and reports them:
// which serve a provider in use, which are new, and the local profiles.
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
		Object          string            `json:"object"`
		Servers         []localServerView `json:"servers"`
		Skipped         []localSkipView   `json:"skipped"`
		Profiles        []string          `json:"profiles"`
		RestartRequired bool              `json:"restart_required"`
	}{Object: "local_discovery", Servers: []localServerView{}, Skipped: []localSkipView{}, Profiles: []string{}}
	for _, sv := range res.Servers {
		v := localServerView{Kind: string(sv.Kind), Title: sv.Kind.Title(), BaseURL: sv.BaseURL, Models: []string{}, Provider: byURL[sv.BaseURL]}
		for _, m := range sv.Models {
			v.Models = append(v.Models, m.ID)
		}
		out.RestartRequired = out.RestartRequired || v.Provider == ""
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
