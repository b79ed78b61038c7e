package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework/discover"
	"github.com/qlc-project/qlc/stagework/openai"
)

// A model server on this machine is found, its generated profiles are
// listed as local, and runs of local and local-moa complete with its text.
// The fake server speaks vLLM's model list and OpenAI's streamed chat
// completions (openai.Mock: " t0 t1 t2 t3").
func TestLocalModelsDiscoveredListedAndRun(t *testing.T) {
	mock := &openai.Mock{Tokens: 4}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"local-8b","object":"model","owned_by":"vllm","max_model_len":8192},{"id":"local-3b","object":"model","owned_by":"vllm"}]}`))
	})
	mux.Handle("POST /v1/chat/completions", mock)
	fake := httptest.NewServer(mux)
	defer fake.Close()
	port := fake.Listener.Addr().(*net.TCPAddr).Port

	res, err := discover.Discover(context.Background(), discover.Config{Targets: []discover.Target{{Kind: discover.VLLM, Port: port}}})
	if err != nil || len(res.Servers) != 1 {
		t.Fatalf("discover: %+v %v", res, err)
	}
	g := startGateway(t, "", func(_ *Config, ec *actors.Config) {
		if _, err := discover.Apply(ec.Stages, res.Servers); err != nil {
			t.Fatal(err)
		}
		if ec.Providers, err = actors.BuildProviders(ec.Stages, ec.Logger); err != nil {
			t.Fatal(err)
		}
	})

	var profiles struct{ Data []profileView }
	if code := do(t, "GET", g.URL+"/v1/profiles", "", &profiles); code != http.StatusOK {
		t.Fatal(code)
	}
	local := map[string]profileView{}
	for _, p := range profiles.Data {
		if p.Local {
			local[p.Name] = p
		} else if strings.Contains(p.Description, "(local)") {
			t.Errorf("%s: described local but not marked", p.Name)
		}
	}
	for _, name := range []string{"local", "local-moa", "local-council", "local-vote"} {
		if p, ok := local[name]; !ok || !strings.HasSuffix(p.Description, "(local)") {
			t.Errorf("/v1/profiles: %s missing or not labelled local: %+v", name, p)
		}
	}
	if len(local) != 4 {
		t.Errorf("local profiles: %v", local)
	}
	var models struct {
		Data []struct {
			ID    string
			Local bool
		}
	}
	do(t, "GET", g.URL+"/v1/models", "", &models)
	marked := map[string]bool{}
	for _, m := range models.Data {
		marked[m.ID] = m.Local
	}
	if !marked["qlc-local"] || !marked["qlc-local-moa"] || marked["qlc-instant"] {
		t.Errorf("/v1/models local marks: %v", marked)
	}

	for _, profile := range []string{"local", "local-moa"} {
		id := createRun(t, g.URL, profile, "What is a local model?")
		var v runView
		waitUntil(t, profile+" run to end", func() bool {
			do(t, "GET", g.URL+"/v1/runs/"+id, "", &v)
			return v.Status != "running" && v.Status != "queued" && v.Status != "pending"
		})
		if v.Status != "completed" || !strings.Contains(v.Answer, "t0 t1 t2 t3") {
			t.Fatalf("%s run: status %q, answer %q, error %+v", profile, v.Status, v.Answer, v.Error)
		}
	}
	// local: four stages; local-moa: two proposers and the aggregator.
	if n := mock.Requests(); n != 4+3 {
		t.Errorf("the fake server answered %d requests, want 7", n)
	}

	// The gateway says it is QLC: discovery on its port skips it.
	u, _ := url.Parse(g.URL)
	p, _ := strconv.Atoi(u.Port())
	res, err = discover.Discover(context.Background(), discover.Config{Targets: []discover.Target{{Kind: discover.LlamaCpp, Port: p}}, Hosts: []string{"127.0.0.1"}})
	if err != nil || len(res.Servers) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != "QLC itself" {
		t.Fatalf("discovery on QLC's port: %+v %v", res, err)
	}
}
