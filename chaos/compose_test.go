package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/qlc-project/qlc/internal/testnet"
)

// resolvedV1 is what docker-compose 1.29 prints for the repository's
// docker-compose.yml (`config`), two nodes kept.
const resolvedV1 = `networks:
  qlc: {}
services:
  gateway:
    build:
      args:
        BIN: gateway
      context: /work/main
    depends_on:
      node1:
        condition: service_healthy
    environment:
      QLC_ADDR: 0.0.0.0:8080
      QLC_CLUSTER_KEY: devkey
      QLC_DATA_DIR: /data
      QLC_SEEDS: node1:7946,node2:7946
      QLC_TENANTS: /etc/qlc/tenants.yaml
    healthcheck:
      test: [CMD, /qlc, healthcheck, "http://127.0.0.1:8080/readyz"]
    image: qlc-gateway:dev
    networks:
      qlc: null
    ports:
    - 127.0.0.1:8080:8080/tcp
    restart: unless-stopped
    volumes:
    - /work/main/deploy/tenants.dev.yaml:/etc/qlc/tenants.yaml:ro
    - gateway-data:/data:rw
  node2:
    environment:
      QLC_ADVERTISE: node2
      QLC_CLUSTER_KEY: devkey
      QLC_OPS_ADDR: 0.0.0.0:9090
      QLC_SEEDS: node1:7946,node2:7946
    image: qlc-node:dev
    restart: unless-stopped
  node1:
    environment:
      QLC_ADVERTISE: node1
      QLC_CLUSTER_KEY: devkey
      QLC_OPS_ADDR: 0.0.0.0:9191
      QLC_SEEDS: node1:7946,node2:7946
    image: qlc-node:dev
    restart: unless-stopped
version: '3.9'
volumes:
  gateway-data: {}
`

// resolvedV2 is the compose plugin's long syntax for ports and volumes.
const resolvedV2 = `name: qlcchaos
services:
  gateway:
    environment:
      QLC_ADDR: ":8080"
      QLC_TENANTS: /etc/qlc/tenants.yaml
    ports:
    - mode: ingress
      host_ip: 127.0.0.1
      target: 8080
      published: "8080"
      protocol: tcp
    volumes:
    - type: bind
      source: /repo/deploy/tenants.dev.yaml
      target: /etc/qlc/tenants.yaml
      read_only: true
  node1:
    environment:
      QLC_OPS_ADDR: 0.0.0.0:9090
`

func decodeServices(t *testing.T, b []byte) map[string]map[string]any {
	t.Helper()
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("the rewritten file does not parse: %v\n%s", err, b)
	}
	return doc.Services
}

func TestLayoutOfTheResolvedFile(t *testing.T) {
	l, err := layoutOf([]byte(resolvedV1))
	if err != nil {
		t.Fatal(err)
	}
	want := composeLayout{nodes: []string{"node1", "node2"}, gateway: "gateway", tenants: "/work/main/deploy/tenants.dev.yaml"}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("layout %+v, want %+v", l, want)
	}
	l, err = layoutOf([]byte(resolvedV2))
	if err != nil {
		t.Fatal(err)
	}
	if l.tenants != "/repo/deploy/tenants.dev.yaml" || !slices.Equal(l.nodes, []string{"node1"}) {
		t.Fatalf("long syntax: layout %+v", l)
	}
}

func TestLayoutRejects(t *testing.T) {
	for name, in := range map[string]string{
		"no gateway":           "services:\n  node1:\n    environment: {QLC_OPS_ADDR: 0.0.0.0:9090}\n",
		"no nodes":             "services:\n  gateway:\n    environment: {QLC_TENANTS: /t}\n    volumes: [\"/h/t.yaml:/t:ro\"]\n",
		"node without ops":     "services:\n  gateway:\n    environment: {QLC_TENANTS: /t}\n    volumes: [\"/h/t.yaml:/t:ro\"]\n  node1:\n    environment: {QLC_BIND: 0.0.0.0:8090}\n",
		"gateway without file": "services:\n  gateway:\n    environment: {QLC_TENANTS: /t}\n  node1:\n    environment: {QLC_OPS_ADDR: 0.0.0.0:9090}\n",
		"no services":          "version: '3.9'\n",
		"not yaml":             "services: [\n",
		"ops address, no port": "services:\n  gateway:\n    environment: {QLC_TENANTS: /t}\n    volumes: [\"/h/t.yaml:/t:ro\"]\n  node1:\n    environment: {QLC_OPS_ADDR: localhost}\n",
	} {
		if _, err := layoutOf([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The rewritten file publishes exactly the planned ports (the repository's
// 127.0.0.1:8080 is gone), mounts the profile file everywhere, sets the
// cluster key and the suite's log settings, and keeps the rest.
func TestRewriteCompose(t *testing.T) {
	plan := composePlan{key: "chaoskey", adminKey: "qlc_chaosadmin", profiles: "/tmp/x/profiles.yaml", ports: map[string]int{"gateway": 41000, "node1": 41001, "node2": 41002}}
	out, err := rewriteCompose([]byte(resolvedV1), plan)
	if err != nil {
		t.Fatal(err)
	}
	svcs := decodeServices(t, out)
	wantPorts := map[string]string{"gateway": "127.0.0.1:41000:8080", "node1": "127.0.0.1:41001:9191", "node2": "127.0.0.1:41002:9090"}
	profileMount := map[string]any{"type": "bind", "source": "/tmp/x/profiles.yaml", "target": profilesTarget, "read_only": true}
	for name, port := range wantPorts {
		svc := svcs[name]
		if got := svc["ports"]; !reflect.DeepEqual(got, []any{port}) {
			t.Errorf("%s: ports %v, want [%s]", name, got, port)
		}
		env := svc["environment"].(map[string]any)
		if env["QLC_CLUSTER_KEY"] != "chaoskey" || env["QLC_PROFILES"] != profilesTarget || env["QLC_LOG_FORMAT"] != "json" {
			t.Errorf("%s: environment %v", name, env)
		}
		if env["QLC_SEEDS"] != "node1:7946,node2:7946" || svc["restart"] != "unless-stopped" {
			t.Errorf("%s: the repository's settings were not kept: %v", name, svc)
		}
		vols := svc["volumes"].([]any)
		if !reflect.DeepEqual(vols[len(vols)-1], profileMount) {
			t.Errorf("%s: volumes %v, want the profile file mounted last", name, vols)
		}
	}
	gw := svcs["gateway"]
	if env := gw["environment"].(map[string]any); env["QLC_LOG_LEVEL"] != "warn" || env["QLC_DRAIN_TIMEOUT"] != nil || env["QLC_ADMIN_KEY"] != "qlc_chaosadmin" {
		t.Errorf("gateway environment %v", env)
	}
	if env := svcs["node1"]["environment"].(map[string]any); env["QLC_LOG_LEVEL"] != "info" || env["QLC_DRAIN_TIMEOUT"] != "60s" || env["QLC_ADMIN_KEY"] != nil {
		t.Errorf("node environment %v", env)
	}
	if vols := gw["volumes"].([]any); len(vols) != 3 || vols[1] != "gateway-data:/data:rw" {
		t.Errorf("gateway volumes %v: its store's volume must stay", vols)
	}
	if gw["healthcheck"] == nil || gw["depends_on"] == nil {
		t.Errorf("gateway lost its healthcheck or depends_on: %v", gw)
	}
	if _, err := layoutOf(out); err != nil {
		t.Errorf("the rewritten file has no layout any more: %v", err)
	}

	// The plugin's long port syntax is replaced the same way.
	out, err = rewriteCompose([]byte(resolvedV2), composePlan{key: "k", profiles: "/p", ports: map[string]int{"gateway": 1, "node1": 2}})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeServices(t, out)["gateway"]["ports"]; !reflect.DeepEqual(got, []any{"127.0.0.1:1:8080"}) {
		t.Errorf("long syntax: gateway ports %v", got)
	}
}

// The observability profile's services (docker-compose 1.29's `config`
// lists them with their profiles) are neither nodes nor rewritten: the
// suite does not start them, and the rewritten file leaves them out.
func TestRewriteComposeLeavesProfileServicesOut(t *testing.T) {
	withProfiles := strings.Replace(resolvedV1, "services:\n", "services:\n"+
		"  prometheus:\n    image: prom/prometheus:v2.53.2\n    profiles: [observability]\n"+
		"  node9:\n    image: qlc-node:dev\n    profiles: [observability]\n", 1)
	l, err := layoutOf([]byte(withProfiles))
	if err != nil || !slices.Equal(l.nodes, []string{"node1", "node2"}) {
		t.Fatalf("layout %+v, %v: want the profile's services left out", l, err)
	}
	out, err := rewriteCompose([]byte(withProfiles), composePlan{key: "k", profiles: "/p", ports: map[string]int{"gateway": 1, "node1": 2, "node2": 3}})
	if err != nil {
		t.Fatal(err)
	}
	svcs := decodeServices(t, out)
	if _, ok := svcs["prometheus"]; ok || len(svcs) != 3 {
		t.Fatalf("rewritten services %v: want gateway, node1, node2 only", slices.Sorted(maps.Keys(svcs)))
	}
}

// docker-compose.yml's second gateway stays a member of the cluster (it
// probes and confirms suspicions like any member; the scenarios send it
// nothing) with the scenario's keys and profiles and a port of its own;
// the balancer in front of both gateways is left out: the scenarios drive
// the gateway named "gateway" directly.
func TestRewriteComposeKeepsOtherGatewaysAsMembers(t *testing.T) {
	more := strings.Replace(resolvedV1, "services:\n", "services:\n"+
		"  balancer:\n    image: qlc-gateway:dev\n    command: [balance]\n"+
		"  gateway2:\n    image: qlc-gateway:dev\n    environment: {QLC_ADDR: 0.0.0.0:8080, QLC_OPS_ADDR: 0.0.0.0:9080}\n", 1)
	l, err := layoutOf([]byte(more))
	if err != nil || l.gateway != "gateway" || !slices.Equal(l.nodes, []string{"node1", "node2"}) || !slices.Equal(l.bystanders, []string{"gateway2"}) {
		t.Fatalf("layout %+v, %v", l, err)
	}
	if _, err := rewriteCompose([]byte(more), composePlan{key: "k", profiles: "/p", ports: map[string]int{"gateway": 1, "node1": 2, "node2": 3}}); err == nil || !strings.Contains(err.Error(), "gateway2") {
		t.Fatalf("err %v, want one naming gateway2 (no port planned)", err)
	}
	out, err := rewriteCompose([]byte(more), composePlan{key: "k", adminKey: "a", profiles: "/p", ports: map[string]int{"gateway": 1, "node1": 2, "node2": 3, "gateway2": 4}})
	if err != nil {
		t.Fatal(err)
	}
	svcs := decodeServices(t, out)
	if len(svcs) != 4 || svcs["gateway"] == nil || svcs["gateway2"] == nil {
		t.Fatalf("rewritten services %v: want gateway, gateway2, node1, node2", slices.Sorted(maps.Keys(svcs)))
	}
	g2 := svcs["gateway2"]
	env := serviceEnv(g2)
	if env["QLC_CLUSTER_KEY"] != "k" || env["QLC_ADMIN_KEY"] != "a" || env["QLC_PROFILES"] != profilesTarget {
		t.Fatalf("gateway2's environment %v: want the scenario's cluster key, admin key and profiles", env)
	}
	if ports := fmt.Sprint(g2["ports"]); !strings.Contains(ports, "127.0.0.1:4:8080") {
		t.Fatalf("gateway2's ports %s, want its API on 127.0.0.1:4", ports)
	}
}

func TestRewriteComposeWantsAPortForEveryService(t *testing.T) {
	_, err := rewriteCompose([]byte(resolvedV1), composePlan{key: "k", profiles: "/p", ports: map[string]int{"gateway": 1, "node1": 2}})
	if err == nil || !strings.Contains(err.Error(), "node2") {
		t.Fatalf("err %v, want one naming node2", err)
	}
}

func TestTenantOf(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "tenants.yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	id, k, err := tenantOf(write("tenants:\n  - {id: acme, keys: [qlc_acme]}\n  - {id: dev, keys: [\"sha256:ab\", qlc_dev]}\n"))
	if err != nil || id != "dev" || k != "qlc_dev" {
		t.Fatalf("%q %q, %v; want the dev tenant's plain key", id, k, err)
	}
	id, k, err = tenantOf(write("tenants:\n  - {id: acme, keys: [qlc_acme]}\n"))
	if err != nil || id != "acme" || k != "qlc_acme" {
		t.Fatalf("%q %q, %v; want the first tenant's", id, k, err)
	}
	id, k, err = tenantOf(write("tenants:\n  - {id: dev, keys: [\"sha256:ab\"]}\n"))
	if err != nil || id != "dev" || k != "" {
		t.Fatalf("digest only: %q %q, %v; want the tenant dev and no key (one is minted)", id, k, err)
	}
	if _, _, err := tenantOf(filepath.Join(dir, "none.yaml")); err == nil {
		t.Fatal("a missing file gave a tenant")
	}
	// The file the compose gateway mounts: the tenant dev, and no usable key
	// (keys are generated: make compose-up, or the suite's admin key).
	id, k, err = tenantOf("../deploy/tenants.dev.yaml")
	if err != nil || id != "dev" || k != "" {
		t.Fatalf("deploy/tenants.dev.yaml: %q %q, %v; want the tenant dev without a key in clear", id, k, err)
	}
}

// The suite mints its tenant key with the admin key it gave the gateway.
func TestMintTenantKey(t *testing.T) {
	admin, err := randomAdminKey()
	if err != nil || !strings.HasPrefix(admin, "qlc_") || len(admin) != 44 {
		t.Fatalf("admin key %q, %v", admin, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+admin {
			w.WriteHeader(401)
			return
		}
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/admin/tenants/dev/keys":
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"key":"qlc_minted","key_id":"key_1"}`))
		case r.Method == "POST" && r.URL.Path == "/v1/admin/tenants":
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"id":"chaos","key":"qlc_newtenant"}`))
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	if k, err := mintTenantKey(srv.URL, admin, "dev"); err != nil || k != "qlc_minted" {
		t.Fatalf("dev: %q, %v", k, err)
	}
	if k, err := mintTenantKey(srv.URL, admin, ""); err != nil || k != "qlc_newtenant" {
		t.Fatalf("no tenant: %q, %v", k, err)
	}
	if _, err := mintTenantKey(srv.URL, "qlc_wrong", "dev"); err == nil {
		t.Fatal("a refused admin key gave a tenant key")
	}
}

func TestComposeCommandFromEnvironment(t *testing.T) {
	t.Setenv("COMPOSE", "docker-compose --ansi never")
	if got := composeCommand(); !slices.Equal(got, []string{"docker-compose", "--ansi", "never"}) {
		t.Fatalf("compose command %q", got)
	}
}

func TestDockerTimeAndLogNames(t *testing.T) {
	if got := dockerTime(time.Unix(1700000000, 1234)); got != "1700000000.000001234" {
		t.Errorf("dockerTime %q", got)
	}
	if got := logFileName("node1#2"); got != "node1-2.log" {
		t.Errorf("logFileName %q", got)
	}
}

// A fault marked after it happened (a docker command returns late) counts
// the events that arrived since: the redo and the first token after it.
func TestRunStateFaultMarkedLate(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	s := &runState{id: "r"}
	for _, e := range []event{
		{Type: evStageStarted, at: at(0)},
		{Type: evTokenDelta, at: at(10)},
		{Type: evTokenDelta, at: at(100)}, // the old coordinator's last token, after the fault
		{Type: evStageRestarted, at: at(140)},
		{Type: evTokenDelta, at: at(190)},
		{Type: evTokenDelta, at: at(200)},
	} {
		s.observe(e)
	}
	if !s.fault(at(90)) {
		t.Fatal("fault not marked")
	}
	if !slices.Equal(s.resumes, []time.Duration{50 * time.Millisecond}) || !slices.Equal(s.recovered, []time.Duration{100 * time.Millisecond}) {
		t.Fatalf("resumes %v, recovered %v; want [50ms], [100ms]", s.resumes, s.recovered)
	}
	if !s.faultAt.IsZero() {
		t.Fatal("the fault is still pending after its recovery")
	}
	// Marked on time, the same events give the same figures.
	s2 := &runState{id: "r2"}
	s2.observe(event{Type: evTokenDelta, at: at(10)})
	s2.fault(at(90))
	for _, e := range []event{{Type: evTokenDelta, at: at(100)}, {Type: evStageRestarted, at: at(140)}, {Type: evTokenDelta, at: at(190)}} {
		s2.observe(e)
	}
	if !slices.Equal(s2.resumes, s.resumes) || !slices.Equal(s2.recovered, s.recovered) {
		t.Fatalf("on time: resumes %v, recovered %v", s2.resumes, s2.recovered)
	}
}

func TestRunStateFaultAfterTheEnd(t *testing.T) {
	t0 := time.Now()
	s := &runState{id: "r"}
	s.observe(event{Type: evTokenDelta, at: t0})
	s.observe(event{Type: evRunCompleted, at: t0.Add(time.Millisecond)})
	if s.fault(t0.Add(2 * time.Millisecond)) {
		t.Fatal("a run that ended before the fault was marked")
	}
	// Ended after the fault without a new token: counted as such.
	s = &runState{id: "r"}
	s.observe(event{Type: evTokenDelta, at: t0})
	s.observe(event{Type: evRunFailed, at: t0.Add(5 * time.Millisecond)})
	if !s.fault(t0.Add(time.Millisecond)) || s.lostFault != 1 || len(s.recovered) != 0 {
		t.Fatalf("lostFault %d, recovered %v", s.lostFault, s.recovered)
	}
	// A reader fault ends at the first token received after it.
	s = &runState{id: "r"}
	s.observe(event{Type: evTokenDelta, at: t0})
	s.observe(event{Type: evTokenDelta, at: t0.Add(30 * time.Millisecond)})
	if !s.faultReader(t0.Add(10*time.Millisecond)) || !slices.Equal(s.recovered, []time.Duration{20 * time.Millisecond}) {
		t.Fatalf("reader fault: recovered %v", s.recovered)
	}
	if !s.fault(t0.Add(40*time.Millisecond)) || len(s.recovered) != 1 || s.faultAt.IsZero() {
		t.Fatalf("a second fault with no event since: recovered %v, pending %v", s.recovered, !s.faultAt.IsZero())
	}
}

// The log sink finds each run's coordinator in JSON lines split anywhere
// across writes (docker logs and pipes cut where they like); the highest
// epoch wins.
func TestLogSinkPlacements(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "n.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pl := &placements{runs: map[string]placement{}}
	lines := `{"level":"INFO","msg":"run started","run_id":"run_a","epoch":1}
{"level":"INFO","msg":"cluster topology","epoch":9}
{"level":"INFO","msg":"run started","run_id":"run_b","epoch":2}
`
	a := &logSink{f: f, node: "node1", pl: pl}
	for i := 0; i < len(lines); i += 7 {
		if _, err := a.Write([]byte(lines[i:min(i+7, len(lines))])); err != nil {
			t.Fatal(err)
		}
	}
	b := &logSink{f: f, node: "node2#2", pl: pl}
	if _, err := b.Write([]byte(`{"msg":"run started","run_id":"run_a","epoch":2}` + "\n" + `{"msg":"run started","run_id":"run_b","epoch":1}` + "\n")); err != nil {
		t.Fatal(err)
	}
	for run, want := range map[string]placement{"run_a": {"node2#2", 2}, "run_b": {"node1", 2}} {
		if got, ok := pl.of(run); !ok || got != want {
			t.Errorf("%s: placement %+v, want %+v", run, got, want)
		}
	}
	if _, ok := pl.of("run_c"); ok {
		t.Error("a run never started has a placement")
	}
}

// Behind docker's published port, a gateway that is down looks like a
// connection accepted and closed before any answer: the reads retry it, as
// they retry a refused connection; a bad answer is not retried.
func TestUnreachableBehindAProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and hangs up, as docker-proxy does with no container behind it
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = httpClient.Get("http://" + ln.Addr().String() + "/v1/runs/x")
	if err == nil || !unreachable(err) {
		t.Fatalf("closed before an answer: err %v, unreachable %v", err, err != nil && unreachable(err))
	}
	closed := testnet.RefusedAddr(t)
	if _, err := httpClient.Get("http://" + closed + "/"); err == nil || !unreachable(err) {
		t.Fatalf("refused: err %v", err)
	}
	var v struct{}
	if err := json.NewDecoder(strings.NewReader("")).Decode(&v); unreachable(err) {
		t.Fatalf("an empty answer (%v) was taken for an unreachable gateway", err)
	}
	if unreachable(errors.New("chaos: GET run: HTTP 404")) {
		t.Fatal("a 404 was taken for an unreachable gateway")
	}
}

// The engine API client sends SIGKILL as docker kill does, and says why it
// failed (the suite then falls back to the CLI).
func TestEngineKill(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		if strings.Contains(r.URL.Path, "gone") {
			http.Error(w, `{"message":"No such container: gone"}`, http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	e := localEngine()
	if e == nil {
		t.Fatal("no engine on a listening unix socket")
	}
	if err := e.kill("abc123"); err != nil {
		t.Fatal(err)
	}
	if err := e.kill("gone"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "No such container") {
		t.Fatalf("err %v, want the engine's 404 and message", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"POST /containers/abc123/kill?signal=KILL", "POST /containers/gone/kill?signal=KILL"}; !slices.Equal(got, want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
	if localEngine() != nil {
		t.Fatal("a tcp DOCKER_HOST gave a local engine")
	}
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if localEngine() != nil {
		t.Fatal("a missing socket gave a local engine")
	}
}

// The published ports are distinct, free, and below the ephemeral range.
func TestFreeAddrsAreDistinct(t *testing.T) {
	addrs, err := freeAddrs(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		_, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		if seen[a] || port < freePortMin || port >= freePortMax {
			t.Fatalf("address %s: repeated or outside %d–%d", a, freePortMin, freePortMax)
		}
		seen[a] = true
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free once handed out: %v", a, err)
		}
		l.Close()
	}
}
