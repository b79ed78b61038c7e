package scale

import (
	"context"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/qlc-project/qlc/loadgen"
)

// cluster is a fake cluster of capacity runs/s: below it TTFT p99 is
// 1 s, above it the queue grows and p99 with it.
func cluster(capacity float64, probed *[]float64) Probe {
	return func(_ context.Context, rate float64) (Step, error) {
		*probed = append(*probed, rate)
		st := Step{Sent: int(rate * 15), OK: int(rate * 15), Goodput: rate, TTFTP99: time.Second}
		if rate > capacity {
			st.Goodput = capacity
			st.TTFTP99 = time.Duration(float64(time.Second) * (1 + 5*(rate-capacity)))
		}
		return st, nil
	}
}

var slo = SLO{TTFTP99: 2 * time.Second}

func TestSearchDoublesThenBisects(t *testing.T) {
	var probed []float64
	out, err := Search(context.Background(), SearchConfig{Start: 2}, slo, cluster(10, &probed))
	if err != nil {
		t.Fatal(err)
	}
	// 2, 4, 8 pass; 16 fails; then 12 (fail), 10 (pass), 11 (fail).
	if want := []float64{2, 4, 8, 16, 12, 10, 11}; !reflect.DeepEqual(probed, want) {
		t.Fatalf("probed %v, want %v", probed, want)
	}
	if !out.Found || out.Best.Rate != 10 || out.AtMax || len(out.Steps) != 7 {
		t.Fatalf("outcome: found %v best %v atMax %v steps %d", out.Found, out.Best.Rate, out.AtMax, len(out.Steps))
	}
	for _, s := range out.Steps {
		if s.Pass != (s.Rate <= 10) {
			t.Errorf("step %.1f: pass %v (%s)", s.Rate, s.Pass, s.Why)
		}
		if !s.Pass && !strings.Contains(s.Why, "ttft p99") {
			t.Errorf("step %.1f fails for %q, want the ttft", s.Rate, s.Why)
		}
	}
}

func TestSearchHalvesWhenTheStartFails(t *testing.T) {
	var probed []float64
	out, err := Search(context.Background(), SearchConfig{Start: 40, Bisections: 2}, slo, cluster(7, &probed))
	if err != nil {
		t.Fatal(err)
	}
	// 40, 20, 10 fail; 5 passes; bisect 7.5 (fail: 7.5 > 7 by 0.5 → p99 3.5 s), 6.25 (pass).
	if want := []float64{40, 20, 10, 5, 7.5, 6.25}; !reflect.DeepEqual(probed, want) {
		t.Fatalf("probed %v, want %v", probed, want)
	}
	if out.Best.Rate != 6.25 {
		t.Fatalf("best %v", out.Best.Rate)
	}
}

func TestSearchNothingPassesOrEverything(t *testing.T) {
	var probed []float64
	out, err := Search(context.Background(), SearchConfig{Start: 4, Min: 1}, slo, cluster(0.5, &probed))
	if err != nil {
		t.Fatal(err)
	}
	if out.Found || !reflect.DeepEqual(probed, []float64{4, 2, 1}) {
		t.Fatalf("found %v after %v, want none after 4, 2, 1", out.Found, probed)
	}
	probed = nil
	out, err = Search(context.Background(), SearchConfig{Start: 4, Max: 16}, slo, cluster(100, &probed))
	if err != nil {
		t.Fatal(err)
	}
	if !out.AtMax || out.Best.Rate != 16 || !reflect.DeepEqual(probed, []float64{4, 8, 16}) {
		t.Fatalf("atMax %v best %v probed %v", out.AtMax, out.Best.Rate, probed)
	}
	probed = nil
	out, _ = Search(context.Background(), SearchConfig{Start: 1, MaxSteps: 3}, slo, cluster(100, &probed))
	if len(probed) != 3 || out.Best.Rate != 4 {
		t.Fatalf("MaxSteps 3: probed %v best %v", probed, out.Best.Rate)
	}
}

func TestSearchNoisyPassAboveAFailKeepsTheHighestPass(t *testing.T) {
	// 8 fails by noise, 12 passes: the answer is a rate that passed.
	probe := func(_ context.Context, rate float64) (Step, error) {
		st := Step{Sent: 100, OK: 100, Goodput: rate, TTFTP99: time.Second}
		if rate == 8 || rate > 12 {
			st.TTFTP99 = 3 * time.Second
		}
		return st, nil
	}
	out, err := Search(context.Background(), SearchConfig{Start: 4}, slo, probe)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Found || out.Best.Rate != 6.5 && out.Best.Rate != 7.5 && out.Best.Rate != 7 {
		var rates []float64
		for _, s := range out.Steps {
			rates = append(rates, s.Rate)
		}
		t.Fatalf("best %v after %v", out.Best.Rate, rates)
	}
}

func TestSearchErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := Search(context.Background(), SearchConfig{Start: 1}, slo, func(context.Context, float64) (Step, error) { return Step{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("probe error: %v", err)
	}
	for _, c := range []SearchConfig{{}, {Start: -1}, {Start: 2, Min: 4}, {Start: 2, Max: 1}, {Start: 1, Bisections: -1}} {
		if _, err := Search(context.Background(), c, slo, nil); !errors.Is(err, ErrBadSearch) {
			t.Errorf("%+v: %v, want ErrBadSearch", c, err)
		}
	}
}

func TestJudge(t *testing.T) {
	ok := Step{Rate: 10, Sent: 150, OK: 150, Goodput: 10, TTFTP99: time.Second}
	if pass, why := slo.Judge(ok); !pass {
		t.Fatalf("a good step fails: %s", why)
	}
	cases := map[string]func(*Step){
		"failed":       func(s *Step) { s.Errors = map[string]int{"503 cluster_saturated": 2, "connection": 1}; s.OK = 147 },
		"goodput":      func(s *Step) { s.Goodput = 8.4 },
		"sent":         func(s *Step) { s.Offered = 12; s.Goodput = 10 },
		"ttft p99":     func(s *Step) { s.TTFTP99 = 2*time.Second + time.Millisecond },
		"no run":       func(s *Step) { s.OK = 0 },
		"nothing sent": func(s *Step) { s.Sent = 0 },
	}
	for want, f := range cases {
		s := ok
		f(&s)
		pass, why := slo.Judge(s)
		if pass || !strings.Contains(why, want) {
			t.Errorf("%s: pass %v, why %q", want, pass, why)
		}
	}
	s := ok
	s.Errors = map[string]int{"connection": 1} // 1 of 150 is within 1 %
	if pass, why := slo.Judge(s); !pass {
		t.Errorf("one error in 150 fails: %s", why)
	}
	s.Errors = map[string]int{"503 cluster_saturated": 2, "connection": 1}
	if _, why := slo.Judge(s); !strings.Contains(why, "503 cluster_saturated ×2, connection ×1") {
		t.Errorf("errors not listed by count: %q", why)
	}
}

func TestOverrideYAML(t *testing.T) {
	y, err := Override{Nodes: 4, BaseNodes: 3, NodeCPUs: 0.2, GatewayCPU: 1, NodeEnv: map[string]string{"QLC_RUN_SLOTS": "32"}}.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			CPUs        float64           `yaml:"cpus"`
			Image       string            `yaml:"image"`
			Hostname    string            `yaml:"hostname"`
			Environment map[string]string `yaml:"environment"`
			Networks    []string          `yaml:"networks"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(y), &doc); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if len(doc.Services) != 5 {
		t.Fatalf("services %v", doc.Services)
	}
	for _, n := range []string{"node1", "node2", "node3", "node4"} {
		s := doc.Services[n]
		if s.CPUs != 0.2 || s.Environment["QLC_SEEDS"] != "node1:7946" || s.Environment["QLC_RUN_SLOTS"] != "32" {
			t.Errorf("%s: %+v", n, s)
		}
	}
	n4 := doc.Services["node4"]
	if n4.Image != "qlc-node:dev" || n4.Hostname != "node4" || n4.Environment["QLC_ADVERTISE"] != "node4" ||
		n4.Environment["QLC_GOSSIP_ADVERTISE"] != "node4:7946" || n4.Environment["QLC_CLUSTER_KEY"] != "${QLC_CLUSTER_KEY}" ||
		!reflect.DeepEqual(n4.Networks, []string{"qlc"}) {
		t.Errorf("node4 is not a whole node: %+v", n4)
	}
	if doc.Services["node1"].Image != "" {
		t.Errorf("node1 redefined: %+v", doc.Services["node1"])
	}
	if g := doc.Services["gateway"]; g.CPUs != 1 || g.Environment["QLC_SEEDS"] != "node1:7946" {
		t.Errorf("gateway %+v", g)
	}
	if _, err := (Override{Nodes: 0, BaseNodes: 3, NodeCPUs: 1, GatewayCPU: 1}).YAML(); err == nil {
		t.Error("0 nodes accepted")
	}
	if _, err := (Override{Nodes: 2, BaseNodes: 3, GatewayCPU: 1}).YAML(); err == nil {
		t.Error("no node quota accepted")
	}
}

func rowsFixture() []Row {
	step := func(rate float64) Step {
		return Step{Rate: rate, Sent: int(rate * 15), OK: int(rate * 15), Goodput: rate * 0.98, TokensPerSecond: rate * 256,
			TTFTP50: 1700 * time.Millisecond, TTFTP99: 2100 * time.Millisecond, TTFTAnyP99: 300 * time.Millisecond,
			CPU: map[string]float64{"gateway": 0.3, "node1": 0.2, "node2": 0.19, "node10": 0.1}, Pass: true}
	}
	return []Row{
		{Nodes: 1, Outcome: Outcome{Found: true, Best: step(8), Steps: []Step{step(8), {Rate: 16, Sent: 240, Why: "ttft p99 5s > 4s"}}}},
		{Nodes: 3, Outcome: Outcome{Found: true, Best: step(20)}},
		{Nodes: 4, Outcome: Outcome{}},
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	WriteTable(&b, rowsFixture())
	got := b.String()
	for _, want := range []string{"| 1 | 8.00 | 1.00× |", "| 3 | 20.00 | 2.50× | 19.60 | 5120 | 1700 / 2100 | 300 | 0 | 0.20, 0.19, 0.10 | 0.30 |", "| 4 | none passed |"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	b.Reset()
	WriteSteps(&b, rowsFixture())
	if !strings.Contains(b.String(), "fail: ttft p99 5s > 4s") || !strings.Contains(b.String(), "gateway 0.30") {
		t.Errorf("steps:\n%s", b.String())
	}
}

func TestWriteSVGIsXML(t *testing.T) {
	var b strings.Builder
	if err := WriteSVG(&b, "runs <at> SLO & more", rowsFixture()); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(b.String()))
	circles := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not XML: %v\n%s", err, b.String())
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "circle" {
			circles++
		}
	}
	if circles != 3 { // two measured points and the goal
		t.Errorf("%d circles, want 3:\n%s", circles, b.String())
	}
	if !strings.Contains(b.String(), "goal 2.5×") || !strings.Contains(b.String(), "linear from 1 node(s)") {
		t.Errorf("plot lacks the goal or the linear line")
	}
}

func TestTicks(t *testing.T) {
	if got := ticks(23, 5); !reflect.DeepEqual(got, []float64{0, 5, 10, 15, 20}) {
		t.Errorf("ticks(23) = %v", got)
	}
	if got := ticks(0.9, 5); len(got) < 4 || got[1] != 0.2 {
		t.Errorf("ticks(0.9) = %v", got)
	}
}

func TestSteady(t *testing.T) {
	tl := []loadgen.Second{{T: 0, Done: 0}, {T: 1, Sent: 4, Done: 5, Tokens: 100}, {T: 2, Sent: 8, Done: 7, Tokens: 300}, {T: 3, Done: 100}}
	if sent, r, tok := steady(tl, 1, 3); sent != 6 || r != 6 || tok != 200 {
		t.Errorf("steady = %v, %v, %v", sent, r, tok)
	}
	if _, r, _ := steady(tl, 10, 20); r != 0 {
		t.Errorf("empty window = %v", r)
	}
}

func TestCgroupCPU(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "cpuacct", "docker", "v1id", "cpuacct.usage"), "2500000000\n")
	write(filepath.Join(root, "cpu", "docker", "v1id", "cpu.stat"), "nr_periods 10\nnr_throttled 7\nthrottled_time 5\n")
	write(filepath.Join(root, "system.slice", "docker-v2id.scope", "cpu.stat"), "usage_usec 1500000\nuser_usec 1\nnr_throttled 3\n")
	g := CgroupCPU{Root: root}
	if s, err := g.Read("v1id"); err != nil || s.CPU != 2500*time.Millisecond || s.Throttled != 7 {
		t.Errorf("v1: %+v %v", s, err)
	}
	if s, err := g.Read("v2id"); err != nil || s.CPU != 1500*time.Millisecond || s.Throttled != 3 {
		t.Errorf("v2: %+v %v", s, err)
	}
	if _, err := g.Read("none"); err == nil {
		t.Error("a missing container read as a sample")
	}
	write(filepath.Join(root, "cpuacct", "docker", "bad", "cpuacct.usage"), "x\n")
	if _, err := g.Read("bad"); err == nil {
		t.Error("a garbled cpuacct.usage read as a sample")
	}
}

func TestParseBurnAndBurn(t *testing.T) {
	if v, err := ParseBurn("noise\ncores 0.201\n"); err != nil || v != 0.201 {
		t.Errorf("ParseBurn = %v, %v", v, err)
	}
	for _, bad := range []string{"", "cores x", "cores -1"} {
		if _, err := ParseBurn(bad); err == nil {
			t.Errorf("ParseBurn(%q) accepted", bad)
		}
	}
	// How much it gets depends on the machine's load: only that it burned.
	if got := Burn(50 * time.Millisecond); !(got > 0) {
		t.Errorf("Burn got %.2f cores", got)
	}
}

func TestReadEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(p, []byte("# c\nQLC_ADMIN_KEY=qlc_ab=c\n\nX=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := readEnv(p)
	if err != nil || m["QLC_ADMIN_KEY"] != "qlc_ab=c" || m["X"] != "1" || len(m) != 2 {
		t.Errorf("readEnv = %v, %v", m, err)
	}
	if _, err := readEnv(p + ".missing"); err == nil {
		t.Error("a missing file read")
	}
}

func TestSetSharesPutsTheOldValueBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpu.shares")
	if err := os.WriteFile(p, []byte("1024\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	restore, old, err := setShares(p, 8192)
	if err != nil || old != 1024 {
		t.Fatalf("setShares: %v, old %d", err, old)
	}
	if b, _ := os.ReadFile(p); string(b) != "8192" {
		t.Fatalf("shares now %q", b)
	}
	restore()
	if b, _ := os.ReadFile(p); string(b) != "1024" {
		t.Fatalf("shares after restore %q", b)
	}
	if _, _, err := setShares(p+".missing", 2); err == nil {
		t.Error("a missing cgroup accepted")
	}
}
