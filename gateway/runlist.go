package gateway

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// GET /v1/runs: the caller's runs in flight, newest first, each as a short
// run resource (no outputs: GET /v1/runs/{id} has them). Ended runs are in
// the usage ledger (GET /v1/usage), with their status and cost; `qlc runs`
// shows both. With several gateways behind one address, the gateway asks
// every other one for its runs in flight (a UsageQuery with in_flight, as
// usage_cluster.go does for the ledger) and merges them with its own; one
// that does not answer in time is left out ("complete": false).
// ?scope=gateway lists only the runs this gateway admitted or follows.

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
	local := false
	switch sc := r.URL.Query().Get("scope"); sc {
	case "", "cluster":
	case "gateway":
		local = true
	default:
		writeError(w, errInvalidParam("scope", "invalid_scope", fmt.Sprintf("scope %q: must be cluster (every gateway's runs, the default) or gateway (this one's)", sc)))
		return
	}
	tenant := principalOf(r).tenantID()
	out := struct {
		Object   string     `json:"object"`
		Scope    string     `json:"scope"`
		Gateways int        `json:"gateways"`
		Complete bool       `json:"complete"`
		Data     []runBrief `json:"data"`
	}{Object: "list", Scope: "cluster", Gateways: 1, Complete: true, Data: s.runsInFlight(tenant, limit)}
	if local {
		out.Scope = "gateway"
		writeJSON(w, http.StatusOK, out)
		return
	}
	answers, asked, complete := s.peerUsage(usageQuery{tenant: tenant, limit: limit, inFlight: true})
	out.Gateways, out.Complete = 1+asked, complete
	lists := [][]runBrief{out.Data}
	for _, a := range answers {
		var l []runBrief
		if json.Unmarshal(a.Rows, &l) != nil {
			out.Complete = false
			continue
		}
		lists = append(lists, l)
	}
	out.Data = mergeRunBriefs(lists, limit)
	writeJSON(w, http.StatusOK, out)
}

// runsInFlight is this gateway's runs in flight of tenant, newest first.
func (s *Server) runsInFlight(tenant string, limit int) []runBrief {
	hubs := s.engine.RunsInFlight(tenant, limit)
	out := make([]runBrief, 0, len(hubs))
	for _, h := range hubs {
		v := s.view(h)
		out = append(out, runBrief{ID: v.ID, Object: "run", Status: v.Status, Profile: v.Profile, Strategy: v.Strategy,
			CreatedAt: v.CreatedAt, LastSeq: v.LastSeq, Usage: v.Usage})
	}
	return out
}

// mergeRunBriefs merges the gateways' lists: a run once (two gateways
// follow it when a reader came through each: the copy furthest on wins),
// newest first, at most limit.
func mergeRunBriefs(lists [][]runBrief, limit int) []runBrief {
	idx := map[string]int{}
	out := []runBrief{}
	for _, l := range lists {
		for _, r := range l {
			if i, ok := idx[r.ID]; ok {
				if r.LastSeq > out[i].LastSeq {
					out[i] = r
				}
				continue
			}
			idx[r.ID] = len(out)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b runBrief) int { return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
