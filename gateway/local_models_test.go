package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

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

// POST /v1/admin/discover-local looks again on demand: a server started
// after the gateway is added to the running gateway at once (its provider,
// a generated local profile whose name does not clash with the one made at
// start), listed in /v1/profiles and /v1/models as local, and runs of it
// (POST /v1/runs, /v1/chat/completions) complete with its text; what was
// there is unchanged, looking again adds nothing; only an admin key may
// ask; with discovery off it is a 404.
func TestLocalDiscoveryOnDemand(t *testing.T) {
	modelServer := func(ids string, mock *openai.Mock) *httptest.Server {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"object":"list","data":[` + ids + `]}`))
		})
		if mock != nil {
			mux.Handle("POST /v1/chat/completions", mock)
		}
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	portOf := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }
	first := modelServer(`{"id":"a-7b","owned_by":"vllm"}`, nil)
	lateMock := &openai.Mock{Tokens: 4}
	dcfg := discover.Config{Targets: []discover.Target{{Kind: discover.VLLM, Port: portOf(first)}}, Hosts: []string{"127.0.0.1"}}
	g := startDiscoveringGateway(t, &dcfg)
	before := g.Engine.Stages()
	// A server started after the gateway (the look on demand reads dcfg
	// when asked).
	second := modelServer(`{"id":"b-3b","owned_by":"organization_owner"}`, lateMock)
	dcfg.Targets = append(dcfg.Targets, discover.Target{Kind: discover.LMStudio, Port: portOf(second)})

	type discovery struct {
		Servers []struct {
			Kind, Provider string
			Models         []string
			Added          bool
		}
		Profiles        []string
		AddedProviders  []string `json:"added_providers"`
		AddedProfiles   []string `json:"added_profiles"`
		RestartRequired bool     `json:"restart_required"`
		Error           string
	}
	var out discovery
	if code, _ := call(t, "POST", g.URL+"/v1/admin/discover-local", g.Dev.AdminKey, "", &out); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if len(out.Servers) != 2 || out.Servers[0].Provider != "local-vllm" || out.Servers[0].Added ||
		out.Servers[1].Provider != "local-lmstudio" || !out.Servers[1].Added || out.Servers[1].Kind != "lmstudio" || out.Servers[1].Models[0] != "b-3b" ||
		out.RestartRequired || out.Error != "" || !slices.Equal(out.Profiles, []string{"local", "local-2"}) ||
		!slices.Equal(out.AddedProviders, []string{"local-lmstudio"}) || !slices.Equal(out.AddedProfiles, []string{"local-2"}) {
		t.Fatalf("%+v", out)
	}

	// Listed as local, next to what was there, which is unchanged.
	var profiles struct{ Data []profileView }
	call(t, "GET", g.URL+"/v1/profiles", g.Dev.TenantKey, "", &profiles)
	listed := map[string]profileView{}
	for _, p := range profiles.Data {
		listed[p.Name] = p
	}
	if p := listed["local-2"]; !p.Local || !strings.Contains(p.Description, "b-3b") || !strings.HasSuffix(p.Description, "(local)") {
		t.Errorf("/v1/profiles local-2: %+v", p)
	}
	if p := listed["local"]; !p.Local || !strings.Contains(p.Description, "a-7b") {
		t.Errorf("/v1/profiles local (found at start) changed: %+v", p)
	}
	after := g.Engine.Stages()
	for name, p := range before.Profiles {
		if after.Profiles[name] != p {
			t.Errorf("profile %s replaced", name)
		}
	}
	var models struct {
		Data []struct {
			ID    string
			Local bool
		}
	}
	call(t, "GET", g.URL+"/v1/models", g.Dev.TenantKey, "", &models)
	if !slices.ContainsFunc(models.Data, func(m struct {
		ID    string
		Local bool
	}) bool {
		return m.ID == "qlc-local-2" && m.Local
	}) {
		t.Errorf("/v1/models lacks qlc-local-2 as local: %+v", models.Data)
	}

	// A run of the new profile completes with the new server's text.
	var v runView
	if code, _ := call(t, "POST", g.URL+"/v1/runs", g.Dev.TenantKey, `{"profile":"local-2","query":"What is new here?"}`, &v); code != http.StatusAccepted && code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("POST /v1/runs local-2: HTTP %d %+v", code, v)
	}
	id := v.ID
	waitUntil(t, "the local-2 run to end", func() bool {
		call(t, "GET", g.URL+"/v1/runs/"+id, g.Dev.TenantKey, "", &v)
		return v.Status != "running" && v.Status != "queued" && v.Status != "pending"
	})
	if v.Status != "completed" || !strings.Contains(v.Answer, "t0 t1 t2 t3") {
		t.Fatalf("local-2 run: status %q, answer %q, error %+v", v.Status, v.Answer, v.Error)
	}
	var chat struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if code, _ := call(t, "POST", g.URL+"/v1/chat/completions", g.Dev.TenantKey, `{"model":"qlc-local-2","messages":[{"role":"user","content":"And now?"}]}`, &chat); code != http.StatusOK ||
		len(chat.Choices) != 1 || !strings.Contains(chat.Choices[0].Message.Content, "t0 t1 t2 t3") {
		t.Fatalf("chat completions qlc-local-2: HTTP %d %+v", code, chat)
	}
	if n := lateMock.Requests(); n != 8 {
		t.Errorf("the server found on demand answered %d requests, want 8 (two runs of four stages)", n)
	}

	// Looking again adds nothing: the server is in use now.
	out = discovery{}
	call(t, "POST", g.URL+"/v1/admin/discover-local", g.Dev.AdminKey, "", &out)
	if len(out.Servers) != 2 || out.Servers[1].Provider != "local-lmstudio" || out.Servers[1].Added || len(out.AddedProfiles) != 0 ||
		!slices.Equal(out.Profiles, []string{"local", "local-2"}) || g.Engine.Stages() != after {
		t.Fatalf("second look: %+v", out)
	}

	var e struct{ Error struct{ Code string } }
	if code, _ := call(t, "POST", g.URL+"/v1/admin/discover-local", g.Dev.TenantKey, "", &e); code != http.StatusForbidden {
		t.Fatalf("a tenant key: HTTP %d", code)
	}
	off := startTenantGatewayProfiles(t, "", nil)
	if code, _ := call(t, "POST", off.URL+"/v1/admin/discover-local", off.Dev.AdminKey, "", &e); code != http.StatusNotFound || e.Error.Code != "local_discovery_off" {
		t.Fatalf("discovery off: HTTP %d %+v", code, e)
	}
}

// The web UI's profile picker offers the local profiles, marked as on this
// machine, and a run of local-moa from the page completes on the local
// server.
func TestUILocalModelsInThePicker(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"x-8b","owned_by":"vllm"},{"id":"y-2b","owned_by":"vllm"}]}`))
	})
	mux.Handle("POST /v1/chat/completions", &openai.Mock{Tokens: 5})
	fake := httptest.NewServer(mux)
	defer fake.Close()
	res, err := discover.Discover(context.Background(), discover.Config{
		Targets: []discover.Target{{Kind: discover.VLLM, Port: fake.Listener.Addr().(*net.TCPAddr).Port}}, Hosts: []string{"127.0.0.1"}})
	if err != nil || len(res.Servers) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	f := newUIFront(t, uiFrontOptions{local: true, mutate: func(_ *Config, ec *actors.Config) {
		if _, err := discover.Apply(ec.Stages, res.Servers); err != nil {
			t.Fatal(err)
		}
		if ec.Providers, err = actors.BuildProviders(ec.Stages, ec.Logger); err != nil {
			t.Fatal(err)
		}
	}})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "local-moa", "What runs on this machine?")
	b.waitFor(t, "the run to end", uiRunEnded)
	if st := b.state(t); st.RunStatus != "completed" {
		t.Fatalf("local-moa run on the page: %q", st.RunStatus)
	}
	labels := uiEval[map[string]string](t, b, `Object.fromEntries([...document.querySelectorAll('#profile option')].map((o) => [o.value, o.textContent]))`)
	for _, name := range []string{"local", "local-moa", "local-council", "local-vote"} {
		if labels[name] != name+" · this machine" {
			t.Errorf("picker option %s reads %q", name, labels[name])
		}
	}
	if labels["quick"] != "quick" {
		t.Errorf("picker option quick reads %q", labels["quick"])
	}
	b.noProblems(t)
}

// The admin console looks for local model servers on demand: "Look now"
// lists the server found at start (with the provider that serves from it)
// and one started since, added by the look at once (no restart), and the
// local profiles offered now, the added ones among them; on a gateway that
// does not look, it says so.
func TestAdminConsoleLocalModels(t *testing.T) {
	listModels := func(ids string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"object":"list","data":[` + ids + `]}`))
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	portOf := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }
	first := listModels(`{"id":"a-7b","owned_by":"vllm"}`)
	dcfg := discover.Config{Targets: []discover.Target{{Kind: discover.VLLM, Port: portOf(first)}}, Hosts: []string{"127.0.0.1"}}
	g := startDiscoveringGateway(t, &dcfg)
	off := startTenantGatewayProfiles(t, "", nil)
	// Started after the gateway (the look on demand reads dcfg when asked).
	second := listModels(`{"id":"b-3b","owned_by":"organization_owner"},{"id":"c-1b","owned_by":"organization_owner"}`)
	dcfg.Targets = append(dcfg.Targets, discover.Target{Kind: discover.LMStudio, Port: portOf(second)})

	b := newUIBrowser(t)
	signIn := func(base, admin string) {
		t.Helper()
		b.do(t, "open the console", chromedp.Navigate(base+"/admin"), chromedp.WaitVisible(chromedp.ID("admin-key")))
		b.do(t, "sign in", chromedp.SendKeys(chromedp.ID("admin-key"), admin), chromedp.Click(chromedp.ID("login-btn")))
		b.waitFor(t, "the console", `!document.getElementById('console').hidden`)
	}
	signIn(g.URL, g.Dev.AdminKey)
	if rows := uiEval[int](t, b, `document.querySelectorAll('#l-table tbody tr').length`); rows != 0 {
		t.Fatalf("%d local servers shown before looking", rows) // looking is on demand, never at sign-in
	}
	// The button is pressed through the DOM: a mouse click at its
	// coordinates is lost when the usage charts loading above it shift the
	// page between measuring and clicking (1 run in ~12 lost it on main).
	b.do(t, "look for local models", chromedp.Evaluate[chromedp.Void](`document.getElementById('l-look').click()`))
	b.waitFor(t, "the look to end", `!document.getElementById('l-look').disabled && !document.getElementById('l-note').textContent.startsWith('Looking')`)
	if n := uiEval[int](t, b, `document.querySelectorAll('#l-table tbody tr').length`); n != 2 {
		t.Fatalf("%d servers shown, want 2; note %q", n, uiEval[string](t, b, `document.getElementById('l-note').textContent`))
	}
	rows := uiEval[[][]string](t, b, `[...document.querySelectorAll('#l-table tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent))`)
	if rows[0][0] != "vLLM" || rows[0][1] != first.URL+"/v1" || rows[0][2] != "a-7b" || rows[0][3] != "local-vllm" {
		t.Errorf("the server found at start reads %q", rows[0])
	}
	if rows[1][0] != "LM Studio" || rows[1][1] != second.URL+"/v1" || rows[1][2] != "b-3b, c-1b" || rows[1][3] != "local-lmstudio \u2014 added now" {
		t.Errorf("the server found since reads %q", rows[1])
	}
	added := "local-2, local-council, local-moa, local-vote"
	if got := uiEval[string](t, b, `document.getElementById('l-profiles').textContent`); got != "Local profiles offered now: local, "+added+"." {
		t.Errorf("profiles line %q", got)
	}
	if got := uiEval[string](t, b, `document.getElementById('l-note').textContent`); !strings.Contains(got, "2 servers found.") ||
		!strings.Contains(got, "Added now, usable at once: local-2, local-moa, local-council, local-vote.") || strings.Contains(got, "restart") {
		t.Errorf("note %q", got)
	}
	// The API agrees: the added profiles are listed as local.
	var profiles struct{ Data []profileView }
	call(t, "GET", g.URL+"/v1/profiles", g.Dev.TenantKey, "", &profiles)
	local := 0
	for _, p := range profiles.Data {
		if p.Local {
			local++
		}
	}
	if local != 5 {
		t.Errorf("/v1/profiles lists %d local profiles, want 5", local)
	}
	b.noProblems(t)

	b.do(t, "sign out", chromedp.Click(chromedp.ID("signout")))
	signIn(off.URL, off.Dev.AdminKey)
	b.do(t, "look (discovery off)", chromedp.Evaluate[chromedp.Void](`document.getElementById('l-look').click()`))
	b.waitFor(t, "the off note", `document.getElementById('l-note').classList.contains('bad')`)
	if got := uiEval[string](t, b, `document.getElementById('l-note').textContent`); !strings.Contains(got, "off on this gateway") {
		t.Errorf("discovery off: note %q", got)
	}
	if uiEval[bool](t, b, `!document.getElementById('l-table').hidden`) {
		t.Error("discovery off: a server table is shown")
	}
	b.noProblems(t, "status of 404")
}

// startDiscoveringGateway starts a tenant gateway whose profiles include the
// one local server *dcfg finds now, and which looks again with *dcfg as it
// is then on demand (a test may add targets later).
func startDiscoveringGateway(t *testing.T, dcfg *discover.Config) *tenantGateway {
	t.Helper()
	res, err := discover.Discover(context.Background(), *dcfg)
	if err != nil || len(res.Servers) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	return startTenantGatewayProfiles(t, "", func(c *Config, ec *actors.Config) {
		if _, err := discover.Apply(ec.Stages, res.Servers); err != nil {
			t.Fatal(err)
		}
		if ec.Providers, err = actors.BuildProviders(ec.Stages, ec.Logger); err != nil {
			t.Fatal(err)
		}
		c.DiscoverLocal = func(ctx context.Context) (discover.Result, error) { return discover.Discover(ctx, *dcfg) }
	})
}
