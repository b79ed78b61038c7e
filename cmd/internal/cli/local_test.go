package cli

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"

	"github.com/qlc-project/qlc/stagework/discover"
)

func TestDiscoverLocalEnabled(t *testing.T) {
	auto, on, off := &Auto{}, &Auto{set: true, on: true}, &Auto{set: true}
	for _, c := range []struct {
		setting       *Auto
		local, remote bool
		want, err     bool
	}{
		{auto, true, false, true, false},   // make run: look
		{auto, false, false, false, false}, // a server: do not probe by default
		{auto, true, true, false, false},   // runs on nodes could not reach this loopback
		{on, false, false, true, false},
		{off, true, false, false, false},
		{on, true, true, false, true},
	} {
		got, err := DiscoverLocalEnabled(c.setting, c.local, c.remote)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%v local=%v remote=%v: %v, %v", c.setting, c.local, c.remote, got, err)
		}
	}
}

func TestDiscoverLocalFlag(t *testing.T) {
	parse := func(env string, args ...string) *Auto {
		t.Helper()
		t.Setenv("QLC_DISCOVER_LOCAL", env)
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		a := AutoFlag(fs, "discover-local", "QLC_DISCOVER_LOCAL", "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "auto"}, {"false", nil, "false"}, {"1", nil, "true"}, {"auto", nil, "auto"},
		{"false", []string{"-discover-local"}, "true"}, {"true", []string{"-discover-local=false"}, "false"},
		{"", []string{"-discover-local=auto"}, "auto"},
	} {
		if got := parse(c.env, c.args...).String(); got != c.want {
			t.Errorf("env %q args %v: %s, want %s", c.env, c.args, got, c.want)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(nilWriter{})
	AutoFlag(fs, "discover-local", "QLC_DISCOVER_LOCAL", "")
	if err := fs.Parse([]string{"-discover-local=maybe"}); err == nil {
		t.Fatal("a bad value was accepted")
	}
}

type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }

// DiscoverLocal adds the servers found to the engine's config and builds
// their provider clients; it never probes the gateway's own port.
func TestDiscoverLocalAddsProvidersAndProfiles(t *testing.T) {
	vllm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"m-8b","owned_by":"vllm"},{"id":"m-3b","owned_by":"vllm"}]}`))
	}))
	defer vllm.Close()
	self := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the gateway's own port was probed: %s", r.URL)
	}))
	defer self.Close()
	port := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

	ecfg, _, err := EngineBase("", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	dcfg := discover.Config{Targets: []discover.Target{{Kind: discover.VLLM, Port: port(vllm)}, {Kind: discover.LlamaCpp, Port: port(self)}}}
	added, err := DiscoverLocal(context.Background(), &ecfg, dcfg, ":"+strconv.Itoa(port(self)), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added.Profiles, []string{"local", "local-moa", "local-council", "local-vote"}) || !slices.Equal(added.Providers, []string{"local-vllm"}) {
		t.Fatalf("added %+v", added)
	}
	if _, ok := ecfg.Providers["local-vllm"]; !ok {
		t.Fatal("no provider client for local-vllm")
	}
	if _, ok := ecfg.Providers["sim"]; !ok {
		t.Fatal("the file's providers were lost")
	}
	if p, err := ecfg.Stages.Profile("local"); err != nil || !p.Local || p.Stages[0].Model != "m-8b" {
		t.Fatalf("local: %+v %v", p, err)
	}
}
