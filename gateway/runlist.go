package gateway

import (
	"net/http"
	"strconv"
	"time"
)

// GET /v1/runs: the caller's runs in flight that were started through this
// gateway, newest first, each as a short run resource (no outputs: GET
// /v1/runs/{id} has them). Ended runs are in the usage ledger (GET
// /v1/usage), with their status and cost; `qlc runs` shows both. With
// several gateways behind one address, each lists the runs admitted
// through it ("scope": "gateway").

// runListMax bounds one answer; runListDefault is its size unless ?limit=.
const (
	runListMax     = 100
	runListDefault = 20
)

// runBrief is one run of GET /v1/runs.
type runBrief struct {
	ID        string     `json:"id"`
	Object    string     `json:"object"`
	Status    string     `json:"status"`
	Profile   string     `json:"profile"`
	Strategy  string     `json:"strategy"`
	CreatedAt time.Time  `json:"created_at"`
	LastSeq   uint64     `json:"last_seq"`
	Usage     *usageView `json:"usage,omitempty"` // the tokens so far
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) {
	limit := runListDefault
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > runListMax {
			writeError(w, errInvalidParam("limit", "invalid_limit", "limit must be between 1 and "+strconv.Itoa(runListMax)))
			return
		}
		limit = n
	}
	hubs := s.engine.RunsInFlight(principalOf(r).tenantID(), limit)
	out := struct {
		Object string     `json:"object"`
		Scope  string     `json:"scope"`
		Data   []runBrief `json:"data"`
	}{Object: "list", Scope: "gateway", Data: make([]runBrief, 0, len(hubs))}
	for _, h := range hubs {
		v := s.view(h)
		out.Data = append(out.Data, runBrief{ID: v.ID, Object: "run", Status: v.Status, Profile: v.Profile, Strategy: v.Strategy,
			CreatedAt: v.CreatedAt, LastSeq: v.LastSeq, Usage: v.Usage})
	}
	writeJSON(w, http.StatusOK, out)
}
