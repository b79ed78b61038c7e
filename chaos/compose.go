package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// The compose backend runs each scenario on the repository's
// docker-compose.yml (three nodes and a gateway from the FROM-scratch
// images), as a compose project of its own. The suite does not edit that
// file: it asks the compose CLI for the resolved configuration, changes
// what a scenario needs (composePlan) and writes the result into the
// scenario's folder. An override file cannot do it: compose merges `ports`
// lists, so the gateway's 127.0.0.1:8080 could not be taken off, and 8080
// may be in use (make run, make integ). Faults are docker commands: see
// composeCluster's methods and chaos/README.md.

// composeProject names the suite's containers, network and volume, apart
// from make integ's (qlcinteg) and a developer's compose-up.
const composeProject = "qlcchaos"

// profilesTarget is where the scenario's profile file is mounted in every
// container (read-only; QLC_PROFILES points at it).
const profilesTarget = "/etc/qlc/chaos-profiles.yaml"

// composeCommand is the compose CLI as the Makefile picks it: $COMPOSE,
// else `docker compose` where that plugin answers, else docker-compose.
func composeCommand() []string {
	if f := strings.Fields(os.Getenv("COMPOSE")); len(f) > 0 {
		return f
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	return []string{"docker-compose"}
}

// buildImages does what `make images` does: static linux binaries in
// bin/linux/, then the FROM-scratch images docker-compose.yml names
// (qlc-node:dev, qlc-gateway:dev) from the Dockerfile's prebuilt target.
func buildImages() error {
	root, err := moduleDir()
	if err != nil {
		return err
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "bin/linux/", "./cmd/node", "./cmd/gateway")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := gobuild.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: go build (linux, static): %w\n%s", err, b)
	}
	// The Dockerfile's prebuilt target, as make images builds it: nothing
	// is pulled (compose's default target builds from source in a golang
	// image, which needs a registry).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, bin := range []string{"node", "gateway"} {
		build := exec.CommandContext(ctx, "docker", "build", "-q", "--target", "prebuilt", "--build-arg", "BIN="+bin, "-t", "qlc-"+bin+":dev", ".")
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("chaos: docker build (%s image): %w\n%s", bin, err, b)
		}
	}
	return nil
}

// composeLayout is what the suite reads from the resolved compose file.
type composeLayout struct {
	nodes   []string // node services (node*), sorted
	gateway string   // the gateway service
	// bystanders are the other gateway services (gateway2): members the
	// scenarios send nothing to, sorted.
	bystanders []string
	// tenants is the host path of the gateway's tenants file (mounted where
	// its QLC_TENANTS points).
	tenants string
}

// composePlan is what the suite changes in the resolved compose file.
type composePlan struct {
	// key is every service's QLC_CLUSTER_KEY (fresh per scenario).
	key string
	// adminKey is the gateway's QLC_ADMIN_KEY (fresh per scenario): it
	// mints the suite's tenant key when the tenants file has none.
	adminKey string
	// profiles is the host path of the scenario's profile file, mounted
	// read-only at profilesTarget in every service.
	profiles string
	// ports maps a service to the port on 127.0.0.1 that publishes its
	// node ops port (QLC_OPS_ADDR) or gateway API port (QLC_ADDR). It
	// replaces the service's own ports.
	ports map[string]int
}

// composeEnv is what a service's environment gains, besides QLC_PROFILES
// and QLC_CLUSTER_KEY: the local backend's settings.
var composeEnv = map[string]map[string]string{
	"node":    {"QLC_LOG_FORMAT": "json", "QLC_LOG_LEVEL": "info", "QLC_DRAIN_TIMEOUT": "60s"},
	"gateway": {"QLC_LOG_FORMAT": "json", "QLC_LOG_LEVEL": "warn"},
}

// readCompose parses a resolved compose file (the compose CLI's `config`).
// Services of a compose profile (Prometheus, Grafana and Jaeger of the
// profile "observability") are left out: the suite starts the default
// services only, and docker-compose 1.29's `config` lists every profile's.
func readCompose(resolved []byte) (map[string]any, map[string]any, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(resolved, &doc); err != nil {
		return nil, nil, fmt.Errorf("chaos: compose config: %w", err)
	}
	services, _ := doc["services"].(map[string]any)
	for name, s := range services {
		if svc, ok := s.(map[string]any); ok && svc["profiles"] != nil {
			delete(services, name)
		}
	}
	if len(services) == 0 {
		return nil, nil, errors.New("chaos: compose config: no services")
	}
	return doc, services, nil
}

func serviceEnv(svc map[string]any) map[string]any {
	env, _ := svc["environment"].(map[string]any)
	return env
}

// envPort is the port of the listen address in env[name] (":8080",
// "0.0.0.0:9090").
func envPort(env map[string]any, name string) (int, error) {
	v, ok := env[name]
	if !ok || v == nil {
		return 0, fmt.Errorf("no %s", name)
	}
	_, port, err := net.SplitHostPort(fmt.Sprint(v))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: bad port %q", name, port)
	}
	return n, nil
}

// scenarioService reports whether a compose service takes part in the
// scenarios: the nodes, the gateway named "gateway" that the scenarios
// drive, and the other gateways (gateway2), which stay members of the
// cluster as the repository's file has them — nothing is sent to them, but
// they probe, gossip and confirm suspicions like any member (a split puts
// them on the driven gateway's side).
func scenarioService(name string) bool {
	return strings.HasPrefix(name, "gateway") || strings.HasPrefix(name, "node")
}

// layoutOf finds the node services, the gateway and its tenants file.
func layoutOf(resolved []byte) (composeLayout, error) {
	_, services, err := readCompose(resolved)
	if err != nil {
		return composeLayout{}, err
	}
	var l composeLayout
	for name, s := range services {
		svc, _ := s.(map[string]any)
		switch {
		case name == "gateway":
			l.gateway = name
			target := fmt.Sprint(serviceEnv(svc)["QLC_TENANTS"])
			l.tenants = mountSource(svc, target)
			if l.tenants == "" {
				return l, fmt.Errorf("chaos: compose config: the gateway mounts no tenants file at QLC_TENANTS (%s)", target)
			}
		case strings.HasPrefix(name, "node"):
			if _, err := envPort(serviceEnv(svc), "QLC_OPS_ADDR"); err != nil {
				return l, fmt.Errorf("chaos: compose config: service %s: %w", name, err)
			}
			l.nodes = append(l.nodes, name)
		case strings.HasPrefix(name, "gateway"):
			l.bystanders = append(l.bystanders, name)
		}
	}
	slices.Sort(l.bystanders)
	if l.gateway == "" || len(l.nodes) == 0 {
		return l, fmt.Errorf("chaos: compose config: want a gateway service and node services, have %d nodes and gateway %q", len(l.nodes), l.gateway)
	}
	slices.Sort(l.nodes)
	return l, nil
}

// mountSource is the host path mounted at target in svc ("" if none); it
// reads both the short ("src:dst:ro") and the long volume syntax.
func mountSource(svc map[string]any, target string) string {
	vols, _ := svc["volumes"].([]any)
	for _, v := range vols {
		switch m := v.(type) {
		case string:
			parts := strings.Split(m, ":")
			if len(parts) >= 2 && parts[1] == target {
				return parts[0]
			}
		case map[string]any:
			if fmt.Sprint(m["target"]) == target {
				if s, ok := m["source"].(string); ok {
					return s
				}
			}
		}
	}
	return ""
}

// rewriteCompose applies plan to a resolved compose file: each service's
// ports become plan's one port on 127.0.0.1, its environment gains the
// cluster key (the gateway's also the admin key), QLC_PROFILES and composeEnv, and the profile file is mounted.
// Everything else (images, healthchecks, restart policy, network, the
// gateway's volume) stays as the repository has it.
func rewriteCompose(resolved []byte, plan composePlan) ([]byte, error) {
	doc, services, err := readCompose(resolved)
	if err != nil {
		return nil, err
	}
	for name, s := range services {
		if !scenarioService(name) {
			// The scenarios drive one gateway directly (its address,
			// its process): the second gateway and the balancer in
			// front of both are left out.
			delete(services, name)
			continue
		}
		svc, ok := s.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("chaos: compose config: service %s is not a mapping", name)
		}
		env := serviceEnv(svc)
		if env == nil {
			return nil, fmt.Errorf("chaos: compose config: service %s has no environment mapping", name)
		}
		kind, listen := "node", "QLC_OPS_ADDR"
		if strings.HasPrefix(name, "gateway") {
			kind, listen = "gateway", "QLC_ADDR"
		}
		inner, err := envPort(env, listen)
		if err != nil {
			return nil, fmt.Errorf("chaos: compose config: service %s: %w", name, err)
		}
		host, ok := plan.ports[name]
		if !ok {
			return nil, fmt.Errorf("chaos: compose: no host port planned for service %s", name)
		}
		svc["ports"] = []any{fmt.Sprintf("127.0.0.1:%d:%d", host, inner)}
		for k, v := range composeEnv[kind] {
			env[k] = v
		}
		env["QLC_PROFILES"] = profilesTarget
		env["QLC_CLUSTER_KEY"] = plan.key
		if kind == "gateway" && plan.adminKey != "" {
			env["QLC_ADMIN_KEY"] = plan.adminKey
		}
		vols, _ := svc["volumes"].([]any)
		svc["volumes"] = append(vols, map[string]any{"type": "bind", "source": plan.profiles, "target": profilesTarget, "read_only": true})
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("chaos: compose file: %w", err)
	}
	return out, nil
}

// tenantOf is the tenant the suite's requests run as, from a tenants file:
// "dev", else the first one listed (id "" if none), and its first key in
// clear if the file has one ("" otherwise: the repository's file ships no
// key, and the suite mints one with the admin key, mintTenantKey).
func tenantOf(path string) (id, key string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("chaos: tenants file: %w", err)
	}
	var f struct {
		Tenants []struct {
			ID   string   `yaml:"id"`
			Keys []string `yaml:"keys"`
		} `yaml:"tenants"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return "", "", fmt.Errorf("chaos: tenants file %s: %w", path, err)
	}
	for _, dev := range []bool{true, false} { // the tenant "dev" first
		for _, t := range f.Tenants {
			if (t.ID == "dev") != dev {
				continue
			}
			for _, k := range t.Keys {
				if !strings.HasPrefix(k, "sha256:") {
					return t.ID, k, nil
				}
			}
			if id == "" {
				id = t.ID
			}
		}
	}
	return id, "", nil
}

// randomAdminKey is a fresh admin key for the gateway: qlc_ and 40 hex digits.
func randomAdminKey() (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("chaos: admin key: %w", err)
	}
	return "qlc_" + hex.EncodeToString(b), nil
}

// mintTenantKey makes a key of tenant (or, if tenant is "", of a new tenant
// "chaos") through the gateway's admin API at base, with adminKey.
func mintTenantKey(base, adminKey, tenant string) (string, error) {
	target, body := base+"/v1/admin/tenants/"+url.PathEscape(tenant)+"/keys", ""
	if tenant == "" {
		target, body = base+"/v1/admin/tenants", `{"name":"chaos","id":"chaos"}`
	}
	req, err := http.NewRequest("POST", target, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("chaos: mint a tenant key: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusCreated || v.Key == "" {
		return "", fmt.Errorf("chaos: mint a tenant key: HTTP %d (%v)", resp.StatusCode, err)
	}
	return v.Key, nil
}

// dockerTime is t as `docker logs --since` reads it.
func dockerTime(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// logFileName is the log file of an incarnation ("node1#2" → "node1-2.log").
func logFileName(name string) string {
	return strings.ReplaceAll(name, "#", "-") + ".log"
}

// composeCluster is the compose backend. Each container start is a new
// incarnation (a *proc named node1, node1#2, …): its log is followed with
// `docker logs -f --since` into a logSink (placements), its exit seen with
// `docker wait`. Faults are docker commands on the containers; a node is
// replaced by starting its own container again.
type composeCluster struct {
	dir, profiles string
	cc            []string // the compose CLI
	progress      func(format string, args ...any)

	file     string            // the scenario's compose file, once written
	network  string            // the compose network the cluster talks on
	ops      map[string]string // service → its published 127.0.0.1 address (node: ops port; gateway: API)
	innerOps map[string]string // node service → its ops port inside the container (QLC_OPS_ADDR's)
	upped    bool              // `up` was run: shutdown takes the project down

	roster                           // its mu guards the fields below too; nodes: live incarnations, oldest first
	incarnations map[string]int      // service → incarnations started
	paused       map[*proc]bool      // paused now
	cutIP        map[*proc]string    // cut off now: its address before
	ipChanged    int                 // nodes back on the network with another address
	cutCmd       []time.Duration     // partition: disconnect command's start → its return
	cutBite      []time.Duration     // partition: command's start → the probe's last answer (cutProbe)
	cutUnseen    int                 // partition: cuts the probe did not see
	followers    map[*proc]*exec.Cmd // docker logs -f, per incarnation
	waiters      map[*proc]*exec.Cmd // docker wait, per incarnation
	selfStarted  map[string]int      // service → starts by docker's restart policy seen by replace

	stops sync.WaitGroup // docker stop commands running aside (terminate)

	engine *engineAPI // the engine's API on its local socket, or nil: the CLI

	others []*proc // the bystander gateways (composeLayout.bystanders); guarded by mu

	env []string // the scenario's secrets, for the compose CLI (the repository's file requires them)
}

var _ fleet = (*composeCluster)(nil)

// newComposeCluster prepares a compose cluster whose files and logs go in dir.
func newComposeCluster(dir, profiles string, progress func(string, ...any)) (*composeCluster, error) {
	pf := filepath.Join(dir, "profiles.yaml")
	// Read inside the containers by an unprivileged user.
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if err := os.Chmod(pf, 0o644); err != nil { // whatever the umask
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return &composeCluster{dir: dir, profiles: pf, cc: composeCommand(), engine: localEngine(), roster: newRoster(),
		progress: progress, ops: map[string]string{}, incarnations: map[string]int{}, paused: map[*proc]bool{},
		cutIP: map[*proc]string{}, followers: map[*proc]*exec.Cmd{}, waiters: map[*proc]*exec.Cmd{}, selfStarted: map[string]int{}}, nil
}

// docker runs a docker command bounded by timeout and returns its output.
func docker(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("chaos: docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// compose runs the compose CLI on the suite's project and file.
func (c *composeCluster) compose(timeout time.Duration, file string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append(append(slices.Clone(c.cc[1:]), "-p", composeProject, "-f", file), args...)
	cmd := exec.CommandContext(ctx, c.cc[0], full...)
	cmd.Dir = filepath.Dir(file)
	cmd.Env = append(os.Environ(), c.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("chaos: %s %s: %w: %s", strings.Join(c.cc, " "), strings.Join(args, " "), err, lastLines(out.String(), 15))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// removeLeftovers removes whatever of the suite's project is still there:
// containers, networks and volumes labelled with it (an interrupted run's,
// or what a failed `down` left).
func removeLeftovers() {
	label := "label=com.docker.compose.project=" + composeProject
	if ids, err := docker(30*time.Second, "ps", "-aq", "--filter", label); err == nil && ids != "" {
		_, _ = docker(60*time.Second, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	if ids, err := docker(30*time.Second, "network", "ls", "-q", "--filter", label); err == nil && ids != "" {
		_, _ = docker(30*time.Second, append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	if ids, err := docker(30*time.Second, "volume", "ls", "-q", "--filter", label); err == nil && ids != "" {
		_, _ = docker(30*time.Second, append([]string{"volume", "rm", "-f"}, strings.Fields(ids)...)...)
	}
}

func (c *composeCluster) start(_ context.Context, scenario string, nodes int) (skip, err error) {
	if contains(groupScenarios, scenario) {
		if err := groupComposeSupport(); err != nil {
			return err, nil
		}
	}
	root, err := moduleDir()
	if err != nil {
		return nil, err
	}
	// The repository's compose file ships no secret and refuses to resolve
	// without them: fresh ones per scenario.
	key, err := randomKey()
	if err != nil {
		return nil, err
	}
	adminKey, err := randomAdminKey()
	if err != nil {
		return nil, err
	}
	c.env = []string{"QLC_CLUSTER_KEY=" + key, "QLC_ADMIN_KEY=" + adminKey}
	metricsKey.Store(adminKey) // the gateway's /metrics on its API port asks for it
	resolved, err := c.compose(time.Minute, filepath.Join(root, "docker-compose.yml"), "config")
	if err != nil {
		return nil, err
	}
	layout, err := layoutOf([]byte(resolved))
	if err != nil {
		return nil, err
	}
	if len(layout.nodes) != nodes {
		return nil, fmt.Errorf("chaos: docker-compose.yml has %d node services; -nodes must be %d with -backend compose", len(layout.nodes), len(layout.nodes))
	}
	if _, services, err := readCompose([]byte(resolved)); err == nil {
		c.innerOps = map[string]string{}
		for _, n := range layout.nodes {
			if svc, ok := services[n].(map[string]any); ok {
				if port, err := envPort(serviceEnv(svc), "QLC_OPS_ADDR"); err == nil {
					c.innerOps[n] = strconv.Itoa(port)
				}
			}
		}
	}
	plan := composePlan{key: key, adminKey: adminKey, profiles: c.profiles, ports: map[string]int{}}
	services := append(append(slices.Clone(layout.nodes), layout.gateway), layout.bystanders...)
	addrs, err := freeAddrs(len(services))
	if err != nil {
		return nil, err
	}
	for i, s := range services {
		_, p, _ := net.SplitHostPort(addrs[i])
		plan.ports[s], _ = strconv.Atoi(p)
		c.ops[s] = addrs[i]
	}
	out, err := rewriteCompose([]byte(resolved), plan)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(c.dir, "compose.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil { // it holds the scenario's keys
		return nil, fmt.Errorf("chaos: %w", err)
	}
	tenant, tk, err := tenantOf(layout.tenants)
	if err != nil {
		return nil, err
	}
	removeLeftovers()
	c.file, c.upped = file, true
	since := time.Now()
	if _, err := c.compose(3*time.Minute, file, "up", "-d", "--no-build"); err != nil {
		return nil, err
	}
	c.progress("compose up -d: %v", time.Since(since).Round(100*time.Millisecond))
	for _, s := range layout.nodes {
		id, err := c.containerOf(s)
		if err != nil {
			return nil, err
		}
		p, err := c.attach(s, id, since, c.pl)
		if err != nil {
			return nil, err
		}
		if err := waitHTTP("http://"+p.ops+"/readyz", 30*time.Second, p.done); err != nil {
			return nil, fmt.Errorf("chaos: %s: %w (log %s)", p.name, err, p.logPath)
		}
		c.mu.Lock()
		c.nodes = append(c.nodes, p)
		c.mu.Unlock()
	}
	id, err := c.containerOf(layout.gateway)
	if err != nil {
		return nil, err
	}
	gw, err := c.attach(layout.gateway, id, since, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.gw, c.gwURL = gw, "http://"+c.ops[layout.gateway]
	c.mu.Unlock()
	if err := waitHTTP(c.gwURL+"/readyz", 30*time.Second, gw.done); err != nil {
		return nil, fmt.Errorf("chaos: gateway: %w (log %s)", err, gw.logPath)
	}
	for _, s := range layout.bystanders {
		id, err := c.containerOf(s)
		if err != nil {
			return nil, err
		}
		p, err := c.attach(s, id, since, nil)
		if err != nil {
			return nil, err
		}
		if err := waitHTTP("http://"+c.ops[s]+"/readyz", 30*time.Second, p.done); err != nil {
			return nil, fmt.Errorf("chaos: %s: %w (log %s)", s, err, p.logPath)
		}
		c.mu.Lock()
		c.others = append(c.others, p)
		c.mu.Unlock()
	}
	nets, err := docker(20*time.Second, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", gw.container)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(nets); len(f) == 1 {
		c.network = f[0]
	} else {
		return nil, fmt.Errorf("chaos: the gateway's container is on %d networks (%s); want one", len(f), nets)
	}
	if tk == "" {
		if tk, err = mintTenantKey(c.gwURL, adminKey, tenant); err != nil {
			return nil, err
		}
	}
	apiKey.Store(tk)
	return nil, nil
}

// containerOf is the id of service's container.
func (c *composeCluster) containerOf(service string) (string, error) {
	id, err := c.compose(30*time.Second, c.file, "ps", "-q", service)
	if err != nil {
		return "", err
	}
	id = strings.TrimSpace(id)
	if id == "" || strings.ContainsAny(id, " \n") {
		return "", fmt.Errorf("chaos: compose: service %s: want one container, have %q", service, id)
	}
	return id, nil
}

// attach makes the running container id of service a new incarnation: it
// follows its log from since and waits for its exit.
func (c *composeCluster) attach(service, id string, since time.Time, pl *placements) (*proc, error) {
	c.mu.Lock()
	c.incarnations[service]++
	name := service
	if k := c.incarnations[service]; k > 1 {
		name = fmt.Sprintf("%s#%d", service, k)
	}
	c.mu.Unlock()
	p := &proc{name: name, service: service, container: id, logPath: filepath.Join(c.dir, logFileName(name)),
		started: time.Now(), done: make(chan struct{})}
	if strings.HasPrefix(service, "node") {
		p.ops = c.ops[service]
	}
	f, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	p.sink = &logSink{f: f, node: name, pl: pl}
	logs := exec.Command("docker", "logs", "-f", "--since", dockerTime(since), id)
	logs.Stdout, logs.Stderr = p.sink, p.sink
	logs.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var code bytes.Buffer
	wait := exec.Command("docker", "wait", id)
	wait.Stdout = &code
	wait.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := logs.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: docker logs %s: %w", name, err)
	}
	if err := wait.Start(); err != nil {
		_ = logs.Process.Kill()
		_ = logs.Wait()
		f.Close()
		return nil, fmt.Errorf("chaos: docker wait %s: %w", name, err)
	}
	c.mu.Lock()
	c.all = append(c.all, p)
	c.followers[p], c.waiters[p] = logs, wait
	c.mu.Unlock()
	logsDone := make(chan struct{})
	go func() { // owned by the incarnation: docker logs -f ends with the container
		_ = logs.Wait()
		close(logsDone)
	}()
	go func() { // owned by the incarnation: ends when its container stops
		werr := wait.Wait()
		p.exitedAt = time.Now()
		switch s := strings.TrimSpace(code.String()); {
		case werr != nil:
			p.exitErr = fmt.Errorf("docker wait: %w", werr)
		case s != "0":
			p.exitErr = fmt.Errorf("exit status %s", s)
		}
		select { // the last lines, then the file is complete
		case <-logsDone:
		case <-time.After(5 * time.Second):
			_ = logs.Process.Kill()
			<-logsDone
		}
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// kill is `docker kill -s KILL`: docker counts it as a stop by hand, so the
// restart policy (unless-stopped) leaves the container down.
func (c *composeCluster) kill(p *proc) (time.Time, error) {
	at, err := c.sigkill(p.container)
	if err != nil {
		return at, err
	}
	p.killed = true
	c.removeNode(p)
	return at, nil
}

// sigkill sends SIGKILL to a container and returns the time just before it
// asked. Through the engine's API (POST /containers/{id}/kill) the process
// dies within about 10 ms of that time; the docker CLI takes 30–60 ms
// more to start and ask (and returns 0.1–0.2 s after), while a moved run
// resumes elsewhere within tens of ms: so the CLI is only the fallback,
// where the engine is not on a local socket.
func (c *composeCluster) sigkill(id string) (time.Time, error) {
	if c.engine != nil {
		at := time.Now()
		err := c.engine.kill(id)
		if err == nil {
			return at, nil
		}
		c.progress("%v; using the docker CLI", err)
	}
	at := time.Now()
	_, err := docker(20*time.Second, "kill", "-s", "KILL", id)
	return at, err
}

// terminate is `docker stop -t 90`: SIGTERM (the node drains, at most its
// 60 s drain timeout, then shuts down), SIGKILL after 90 s, as the local
// backend waits. docker stop returns once the container has stopped, so it
// runs aside (shutdown waits for it) and the scenario waits on p.done.
func (c *composeCluster) terminate(p *proc) error {
	p.terminated = true
	c.removeNode(p)
	c.stops.Add(1)
	go func() { // owned by shutdown, which waits for it; ends within 100 s
		defer c.stops.Done()
		if _, err := docker(100*time.Second, "stop", "-t", "90", p.container); err != nil {
			c.progress("%s: %v", p.name, err)
		}
	}()
	return nil
}

func (c *composeCluster) inPlace() bool { return true }

// replace starts old's container again (once old has exited) and waits
// until the new incarnation is ready. Were docker's restart policy to have
// started it already, it is taken as it is, and counted.
func (c *composeCluster) replace(old *proc) (*proc, error) {
	if old == nil {
		return nil, errors.New("chaos: compose: replace needs the node to restart")
	}
	select {
	case <-old.done:
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("chaos: %s has not exited", old.name)
	}
	if err := c.restart(old); err != nil {
		return nil, err
	}
	p, err := c.attach(old.service, old.container, old.exitedAt, c.pl)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP("http://"+p.ops+"/readyz", 30*time.Second, p.done); err != nil {
		return nil, fmt.Errorf("chaos: %s: %w (log %s)", p.name, err, p.logPath)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, p)
	c.mu.Unlock()
	return p, nil
}

// restart is `docker start` of old's container, unless it runs already.
func (c *composeCluster) restart(old *proc) error {
	state, err := docker(20*time.Second, "inspect", "-f", "{{.State.Status}}", old.container)
	if err != nil {
		return err
	}
	if state == "running" || state == "restarting" {
		c.mu.Lock()
		c.selfStarted[old.service]++
		c.mu.Unlock()
		c.progress("%s: docker's restart policy started the container again by itself", old.name)
		return nil
	}
	_, err = docker(60*time.Second, "start", old.container)
	return err
}

func (c *composeCluster) pause(p *proc) (time.Time, error) {
	at := time.Now()
	if _, err := docker(20*time.Second, "pause", p.container); err != nil {
		return at, err
	}
	c.mu.Lock()
	c.paused[p] = true
	c.mu.Unlock()
	return at, nil
}

func (c *composeCluster) resume(p *proc) error {
	if _, err := docker(20*time.Second, "unpause", p.container); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.paused, p)
	c.mu.Unlock()
	return nil
}

func (c *composeCluster) address(p *proc) (string, error) {
	return docker(20*time.Second, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+c.network+`").IPAddress}}`, p.container)
}

// cut is `docker network disconnect`: the container loses its interface on
// the cluster's network (and its published port) until heal.
func (c *composeCluster) cut(p *proc) (time.Time, error) {
	ip, err := c.address(p)
	if err != nil {
		return time.Now(), err
	}
	// The node's ops port at its address on the compose network, from this
	// host (which has an address on every bridge network): what the cut
	// takes away. Its published port may stop answering earlier (docker
	// drops the port mapping first).
	target := p.ops
	if inner, ok := c.innerOps[p.service]; ok && ip != "" {
		target = net.JoinHostPort(ip, inner)
	}
	pr := startCutProbe("http://" + target + "/readyz")
	at := time.Now()
	_, err = docker(20*time.Second, "network", "disconnect", c.network, p.container)
	ret := time.Now()
	bite, seen := pr.stop(time.Second)
	if err != nil {
		return at, err
	}
	c.mu.Lock()
	c.cutIP[p] = ip
	c.cutCmd = append(c.cutCmd, ret.Sub(at))
	if seen {
		if bite.Before(at) { // the probe ran from just before the command
			bite = at
		}
		c.cutBite = append(c.cutBite, bite.Sub(at))
	} else {
		c.cutUnseen++
	}
	c.mu.Unlock()
	if !seen {
		return at, nil
	}
	return bite, nil
}

// cutProbe asks a node's published ops port (/readyz) again and again while
// `docker network disconnect` runs: the port goes with the container's
// interface on the compose network, so the answers stop when the cut takes
// effect. The docker CLI takes 30-60 ms to start, and the engine does more
// (endpoint, firewall, interface) before it removes the interface and after:
// the command's start and return only bound the moment (measured: BENCHMARKS.md
// "compose: the quota group under every fault").
type cutProbe struct {
	done   chan struct{}
	quit   chan struct{}
	lastOK time.Time // when the last answer arrived
	failed bool      // a request got no answer
}

// cutProbeTimeout: a request unanswered this long counts as cut (a node
// that is merely slow makes the cut's time earlier, never later: the figure
// it starts is then longer).
const cutProbeTimeout = 200 * time.Millisecond

func startCutProbe(url string) *cutProbe {
	pr := &cutProbe{done: make(chan struct{}), quit: make(chan struct{})}
	cl := &http.Client{Timeout: cutProbeTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	ready := make(chan struct{})
	go func() { // owned by the probe: stop waits for it
		defer close(pr.done)
		defer cl.CloseIdleConnections()
		first := true
		for {
			resp, err := cl.Get(url)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				pr.lastOK = time.Now()
			} else if !first {
				pr.failed = true
				return
			}
			if first {
				first = false
				close(ready)
			}
			select {
			case <-pr.quit:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	select { // a connection open before the command
	case <-ready:
	case <-time.After(cutProbeTimeout):
	}
	return pr
}

// stop waits up to within for the probe to see the cut and returns when the
// last answer before it arrived; seen is false when no request went
// unanswered.
func (pr *cutProbe) stop(within time.Duration) (last time.Time, seen bool) {
	select {
	case <-pr.done:
	case <-time.After(within):
		close(pr.quit)
		<-pr.done
	}
	return pr.lastOK, pr.failed && !pr.lastOK.IsZero()
}

// heal is `docker network connect` with the service's name as an alias
// (the others reach it by that name). The address may change; the node
// resolves its advertised name again when it rejoins.
func (c *composeCluster) heal(p *proc) error {
	if _, err := docker(20*time.Second, "network", "connect", "--alias", p.service, c.network, p.container); err != nil {
		return err
	}
	c.mu.Lock()
	before := c.cutIP[p]
	delete(c.cutIP, p)
	c.mu.Unlock()
	if now, err := c.address(p); err == nil && now != before {
		c.mu.Lock()
		c.ipChanged++
		c.mu.Unlock()
		c.progress("partition: %s is back on the network with another address (%s, was %s)", p.name, now, before)
	}
	return nil
}

// restartGateway is `docker kill -s KILL` (as kill) or `docker stop -t 30`
// (at: before the command) of the gateway, then
// `docker start`: same container, same volume (its store), same port.
func (c *composeCluster) restartGateway(kill bool) (time.Time, error) {
	c.mu.Lock()
	gw := c.gw
	c.mu.Unlock()
	at := time.Now()
	var err error
	if kill {
		at, err = c.sigkill(gw.container)
	} else {
		_, err = docker(60*time.Second, "stop", "-t", "30", gw.container)
	}
	if err != nil {
		return at, fmt.Errorf("chaos: gateway: %w", err)
	}
	gw.killed, gw.terminated = kill, !kill
	select {
	case <-gw.done:
	case <-time.After(30 * time.Second):
		c.progress("gateway: %s did not exit within 30 s; killing it", gw.name)
		_, _ = docker(20*time.Second, "kill", "-s", "KILL", gw.container)
		<-gw.done
	}
	if err := c.restart(gw); err != nil {
		return at, fmt.Errorf("restart: %w", err)
	}
	p, err := c.attach(gw.service, gw.container, gw.exitedAt, nil)
	if err != nil {
		return at, fmt.Errorf("restart: %w", err)
	}
	c.mu.Lock()
	c.gw = p
	url := c.gwURL
	c.mu.Unlock()
	if err := waitHTTP(url+"/readyz", 30*time.Second, p.done); err != nil {
		return at, fmt.Errorf("restart: gateway: %w (log %s)", err, p.logPath)
	}
	return at, nil
}

// waitMembers waits until the gateway counts n live members besides the
// bystander gateways (callers count the nodes and the driven gateway).
func (c *composeCluster) waitMembers(n int, within time.Duration) error {
	return waitMembers(c.gatewayURL(), n+len(c.bystanders()), within)
}

// bystanders are the gateways the scenarios send nothing to.
func (c *composeCluster) bystanders() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.others)
}

func (c *composeCluster) words() faultWords {
	return faultWords{kill: "docker kill -s KILL", replaced: "each container started again, joining under a new member name",
		pause: "docker pause", resume: "docker unpause",
		cut: "disconnected from the compose network (docker network disconnect)", term: "docker stop",
		rolled: "then docker start of the same container", gateway: "docker kill -s KILL and docker stop in turn, same container and volume",
		backend: "docker compose"}
}

// extras: how often docker's restart policy restarted a container by
// itself (a process that exited or crashed without the suite's doing), and
// cut-off nodes that came back with another address.
func (c *composeCluster) extras() [][2]string {
	c.mu.Lock()
	ids := map[string]bool{}
	for _, p := range c.all {
		ids[p.container] = true
	}
	changed, self := c.ipChanged, 0
	cutCmd, cutBite, cutUnseen := slices.Clone(c.cutCmd), slices.Clone(c.cutBite), c.cutUnseen
	for _, n := range c.selfStarted {
		self += n
	}
	c.mu.Unlock()
	restarts := 0
	for id := range ids {
		if s, err := docker(20*time.Second, "inspect", "-f", "{{.RestartCount}}", id); err == nil {
			n, _ := strconv.Atoi(s)
			restarts += n
		}
	}
	out := [][2]string{{"containers restarted by docker's restart policy (RestartCount; found running at a restart)", fmt.Sprintf("%d; %d", restarts, self)}}
	if changed > 0 {
		out = append(out, [2]string{"cut-off nodes back on the network with another address", fmt.Sprint(changed)})
	}
	if len(cutCmd) > 0 {
		out = append(out, [2]string{"docker network disconnect: command start → the node's ops port stops answering, the fault's time (p50 / max)", distShort(cutBite)},
			[2]string{"docker network disconnect: command start → it returns (p50 / max)", distShort(cutCmd)})
		if cutUnseen > 0 {
			out = append(out, [2]string{"cuts the probe did not see (marked at the command's start)", fmt.Sprint(cutUnseen)})
		}
	}
	return out
}

// shutdown unpauses what is paused, takes the project down with its network
// and volume (`down -v`), removes anything left with the project's label,
// and waits for the log followers.
func (c *composeCluster) shutdown() {
	if !c.upped {
		return
	}
	c.mu.Lock()
	var paused []*proc
	for p := range c.paused {
		paused = append(paused, p)
	}
	c.mu.Unlock()
	for _, p := range paused {
		_, _ = docker(20*time.Second, "unpause", p.container)
	}
	c.stops.Wait()
	t := time.Now()
	if out, err := c.compose(3*time.Minute, c.file, "down", "-v", "--remove-orphans", "-t", "15"); err != nil {
		c.progress("compose down: %v\n%s", err, lastLines(out, 10))
	}
	c.progress("compose down -v: %v", time.Since(t).Round(100*time.Millisecond))
	removeLeftovers()
	c.mu.Lock()
	all := slices.Clone(c.all)
	c.mu.Unlock()
	for _, p := range all {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			c.mu.Lock()
			f, w := c.followers[p], c.waiters[p]
			c.mu.Unlock()
			_ = w.Process.Kill()
			_ = f.Process.Kill()
			<-p.done
		}
	}
}

// engineAPI is the Docker Engine's HTTP API on a unix socket: the one call
// whose timing matters (a SIGKILL) goes there directly.
type engineAPI struct {
	http *http.Client
}

// localEngine is the engine's API on its unix socket (DOCKER_HOST's, else
// /var/run/docker.sock), or nil where the engine is reached otherwise.
func localEngine() *engineAPI {
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		var ok bool
		if sock, ok = strings.CutPrefix(h, "unix://"); !ok {
			return nil
		}
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil
	}
	return &engineAPI{http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
}

// kill sends SIGKILL to container id; the engine answers once it has exited.
func (e *engineAPI) kill(id string) error {
	resp, err := e.http.Post("http://docker/containers/"+url.PathEscape(id)+"/kill?signal=KILL", "", nil)
	if err != nil {
		return fmt.Errorf("chaos: docker engine API: kill %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("chaos: docker engine API: kill %s: HTTP %d: %s", id, resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// Only the compose backend uses it: the compose file must name the host
// port each container publishes, and a container restarted in place keeps
// it. (Publishing "127.0.0.1::9090" and asking `docker compose port` would
// avoid the race, but a restart may then move the port.) The local backend
// binds port 0 and reads the ports back (-addr-file).
//
// freeAddrs is n distinct free addresses on 127.0.0.1 for docker to publish
// on. They are drawn below the kernel's ephemeral range (32768–60999 by
// default), where every outgoing connection of this machine also takes its
// local port: a port asked of the kernel (":0"), closed and handed to
// docker later was at times taken by then ("port is already allocated",
// once in about 20 compose runs). All n are held open until all are found.
func freeAddrs(n int) ([]string, error) {
	var out []string
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries == 200 {
			return nil, fmt.Errorf("chaos: no free port in %d–%d after %d tries", freePortMin, freePortMax, tries)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePortMin+mrand.IntN(freePortMax-freePortMin)))
		if err != nil {
			continue // taken
		}
		held = append(held, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// The range freeAddrs draws from.
const freePortMin, freePortMax = 20000, 32000
