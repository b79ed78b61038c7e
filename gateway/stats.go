package gateway

import (
	"cmp"
	"net/http"
	"slices"
	"strings"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
)

// modelStats serves GET /v1/stats/models: the cluster's live statistics
// per (endpoint, model) — TTFT and inter-token latency quantiles, tokens
// per second, error and timeout rates by kind and HTTP status, tokens and
// cost — merged from every node's telemetry window (actors.Telemetry). A
// tenant key sees the models of the profiles it may use, each listed even
// before it has run (zero attempts); an admin key sees every model. When a
// node did not answer, "complete" is false and its attempts are missing.
func (s *Server) modelStats(w http.ResponseWriter, r *http.Request) {
	who := principalOf(r)
	cfg := s.engine.Stages()
	type key struct{ endpoint, model string }
	allowed := map[key]bool{}
	var order []key
	for _, name := range cfg.ProfileNames() {
		if !who.admin && !who.allows(name) {
			continue
		}
		p, _ := cfg.Profile(name)
		for _, st := range p.Stages {
			refs := []stagework.ModelRef{{Provider: st.Provider, Model: st.Model}}
			if st.Fallback != nil {
				refs = append(refs, *st.Fallback)
			}
			for _, m := range refs {
				k := key{m.Provider, m.Model}
				if m.Model != "" && !allowed[k] {
					allowed[k] = true
					order = append(order, k)
				}
			}
		}
	}
	views, breakers, complete := s.engine.ClusterModelStats()
	seen := map[key]bool{}
	data := []actors.ModelStatsView{}
	for _, v := range views {
		k := key{v.Endpoint, v.Model}
		if !who.admin && !allowed[k] {
			continue
		}
		seen[k] = true
		data = append(data, v)
	}
	for _, k := range order {
		if seen[k] {
			continue
		}
		b := breakers[k.endpoint]
		data = append(data, actors.ModelStatsView{Endpoint: k.endpoint, Model: k.model, Errors: map[string]int64{}, HTTPStatus: map[string]int64{},
			Price: actors.PriceOf(cfg, k.model), BreakerOpenNodes: b.Open, BreakerNodes: b.Nodes})
	}
	slices.SortFunc(data, func(a, b actors.ModelStatsView) int {
		return cmp.Or(strings.Compare(a.Endpoint, b.Endpoint), strings.Compare(a.Model, b.Model))
	})
	writeJSON(w, http.StatusOK, struct {
		Object   string                  `json:"object"`
		Complete bool                    `json:"complete"`
		Data     []actors.ModelStatsView `json:"data"`
	}{"list", complete, data})
}
