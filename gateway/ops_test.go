package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/actors"
)

// Config.Ops serves the ops handler's other paths (cmd/gateway: pprof),
// never the public handler's; /healthz, /readyz and /metrics stay the
// gateway's own.
func TestConfigOpsOnTheOpsHandlerOnly(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "extra "+r.URL.Path) })
	g := startGateway(t, "", func(c *Config, _ *actors.Config) { c.Ops = extra })
	for _, c := range []struct {
		url  string
		want int
		body string
	}{
		{g.OpsURL + "/debug/pprof/", 200, "extra /debug/pprof/"},
		{g.OpsURL + "/metrics", 200, "qlc_active_runs"},
		{g.OpsURL + "/healthz", 200, "ok"},
		{g.URL + "/debug/pprof/", 404, ""},
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.body != "" && !strings.Contains(string(b), c.body)) {
			t.Errorf("GET %s: %d %.80q; want %d with %q", c.url, resp.StatusCode, b, c.want, c.body)
		}
	}
}
