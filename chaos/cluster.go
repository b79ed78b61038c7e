package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// buildBinaries builds cmd/node and cmd/gateway into dir, from the module
// that holds the working directory.
func buildBinaries(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("chaos: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("chaos: run from inside the QLC module (go run ./chaos)")
	}
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/node", "./cmd/gateway")
	cmd.Dir = filepath.Dir(gomod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: go build: %w\n%s", err, b)
	}
	return nil
}

// randomKey is a fresh cluster key: base64 of 32 random bytes.
func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("chaos: cluster key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("chaos: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// proc is one node or gateway process.
type proc struct {
	name               string
	cmd                *exec.Cmd
	gossip, act, ops   string // node addresses (ops: /metrics)
	logPath            string
	started            time.Time
	done               chan struct{} // closed when the process has exited
	exitErr            error         // set before done is closed
	sink               *logSink
	killed, terminated bool   // set by the scenario that ended it
	uid                uint32 // a uid of its own (partition scenario), else 0
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// placements records, from the nodes' logs, which node hosts each run's
// coordinator: the "run started" line of the highest epoch wins.
type placements struct {
	mu   sync.Mutex
	runs map[string]placement
}

type placement struct {
	node  string
	epoch int
}

func (p *placements) record(run, node string, epoch int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.runs[run]; !ok || epoch >= cur.epoch {
		p.runs[run] = placement{node, epoch}
	}
}

func (p *placements) of(run string) (placement, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl, ok := p.runs[run]
	return pl, ok
}

// logSink writes a process's output to its log file and reads the lines the
// scenarios need (where each run's coordinator started). exec calls Write
// from one goroutine at a time (Stdout and Stderr are the same writer).
type logSink struct {
	f       *os.File
	node    string
	pl      *placements
	partial []byte
}

func (s *logSink) Write(b []byte) (int, error) {
	if _, err := s.f.Write(b); err != nil {
		return 0, err
	}
	if s.pl == nil {
		return len(b), nil
	}
	s.partial = append(s.partial, b...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(s.partial[:i])
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 1<<20 { // a runaway line: forget it
		s.partial = s.partial[:0]
	}
	return len(b), nil
}

func (s *logSink) line(l []byte) {
	if !bytes.Contains(l, []byte(`"run started"`)) {
		return
	}
	var v struct {
		RunID string `json:"run_id"`
		Epoch int    `json:"epoch"`
	}
	if json.Unmarshal(l, &v) == nil && v.RunID != "" {
		s.pl.record(v.RunID, s.node, v.Epoch)
	}
}

// cluster is the processes of one scenario.
type cluster struct {
	bin, dir, key, profiles string
	pl                      *placements
	progress                func(format string, args ...any)

	mu    sync.Mutex
	seq   int
	nodes []*proc // started and not ended by a fault (paused ones included)
	all   []*proc
	gw    *proc
	gwURL string
	gwN   int // gateway processes started
	// ownUIDs runs every node under a uid of its own (partitions).
	ownUIDs bool
}

func newCluster(bin, dir, profiles string, progress func(string, ...any)) (*cluster, error) {
	key, err := randomKey()
	if err != nil {
		return nil, err
	}
	pf := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return &cluster{bin: bin, dir: dir, key: key, profiles: pf, pl: &placements{runs: map[string]placement{}}, progress: progress}, nil
}

func (c *cluster) start(name, binary string, args []string, pl *placements) (*proc, error) {
	return c.startAs(name, binary, args, pl, 0)
}

// startAs is start under uid (0: this program's).
func (c *cluster) startAs(name, binary string, args []string, pl *placements, uid uint32) (*proc, error) {
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	p := &proc{name: name, logPath: logPath, done: make(chan struct{})}
	p.sink = &logSink{f: f, node: name, pl: pl}
	cmd := exec.Command(filepath.Join(c.bin, binary), args...)
	cmd.Env = append(os.Environ(), "QLC_CLUSTER_KEY="+c.key)
	cmd.Stdout, cmd.Stderr = p.sink, p.sink
	// The children die with this program, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
		cmd.Dir = "/"
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	p.cmd, p.started, p.uid = cmd, time.Now(), uid
	go func() { // owned by the process: ends when it exits
		p.exitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.all = append(c.all, p)
	c.mu.Unlock()
	return p, nil
}

func (c *cluster) liveNodes() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*proc(nil), c.nodes...)
}

func (c *cluster) node(name string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// startNode starts a node that joins the live ones and waits until it is ready.
func (c *cluster) startNode() (*proc, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	var seeds []string
	for _, n := range c.liveNodes() {
		seeds = append(seeds, n.gossip)
	}
	c.mu.Lock()
	c.seq++
	seq := c.seq
	name := fmt.Sprintf("node-%d", seq)
	c.mu.Unlock()
	args := []string{"-gossip-bind", addrs[0], "-bind", addrs[1], "-ops-addr", addrs[2], "-profiles", c.profiles,
		"-log-format", "json", "-log-level", "info", "-drain-timeout", "60s"}
	if len(seeds) > 0 {
		args = append(args, "-seeds", strings.Join(seeds, ","))
	}
	var uid uint32
	if c.ownUIDs {
		uid = uint32(firstNodeUID + seq)
	}
	p, err := c.startAs(name, "node", args, c.pl, uid)
	if err != nil {
		return nil, err
	}
	p.gossip, p.act, p.ops = addrs[0], addrs[1], addrs[2]
	if err := waitHTTP("http://"+p.ops+"/readyz", 20*time.Second, p.done); err != nil {
		return nil, fmt.Errorf("chaos: %s: %w (log %s)", name, err, p.logPath)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, p)
	c.mu.Unlock()
	return p, nil
}

// startGateway starts the gateway, seeded with every live node.
func (c *cluster) startGateway() error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	return c.startGatewayOn(addr)
}

// startGatewayOn starts a gateway listening on addr with the cluster's
// gateway data folder (a restart finds its store: ledger, kept runs).
func (c *cluster) startGatewayOn(addr string) error {
	var seeds []string
	for _, n := range c.liveNodes() {
		seeds = append(seeds, n.gossip)
	}
	data := filepath.Join(c.dir, "gateway-data")
	c.mu.Lock()
	c.gwN++
	name := "gateway"
	if c.gwN > 1 {
		name = fmt.Sprintf("gateway-%d", c.gwN)
	}
	c.mu.Unlock()
	p, err := c.start(name, "gateway", []string{"-addr", addr, "-seeds", strings.Join(seeds, ","),
		"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.profiles,
		"-log-format", "json", "-log-level", "warn", "-data-dir", data, "-dev-keys"}, nil)
	if err != nil {
		return err
	}
	c.gw, c.gwURL = p, "http://"+addr
	if err := waitHTTP(c.gwURL+"/readyz", 20*time.Second, p.done); err != nil {
		return fmt.Errorf("chaos: gateway: %w (log %s)", err, p.logPath)
	}
	return loadKey(data)
}

// removeNode drops a node from the live set (it was killed or drained).
func (c *cluster) removeNode(p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n == p {
			c.nodes = append(c.nodes[:i], c.nodes[i+1:]...)
			return
		}
	}
}

// waitMembers polls the gateway until it counts n live members (itself
// included).
func (c *cluster) waitMembers(n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var got float64
	for time.Now().Before(deadline) {
		v, ok := metric(c.gwURL+"/metrics", "qlc_cluster_members_alive")
		if ok && int(v) == n {
			return nil
		}
		got = v
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("chaos: the gateway never saw %d members (sees %v)", n, got)
}

// shutdown ends every process still running: SIGCONT (a paused one must be
// able to act on the signal), SIGTERM, then SIGKILL after a grace period.
func (c *cluster) shutdown() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.all...)
	gw := c.gw
	c.mu.Unlock()
	stop := func(p *proc) {
		if p == nil || p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	stop(gw) // first: it cancels what is still active
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); stop(p) }()
	}
	wg.Wait()
}

// waitHTTP polls url until it answers 200, the deadline passes or died closes.
func waitHTTP(url string, within time.Duration, died <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-died:
			return errors.New("the process exited")
		default:
		}
		if resp, err := httpClient.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v", url, within)
}

// metric reads a Prometheus text endpoint and sums the samples of name (all
// label sets). ok is false when the endpoint did not answer or has no sample.
func metric(url, name string) (float64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// httpClient is for short requests; streams use streamClient.
var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: withKey{&http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}},
}

// streamClient has no overall timeout: streams are bounded by contexts.
var streamClient = &http.Client{
	Transport: withKey{&http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}},
}

// apiKey is the dev tenant's key of the chaos gateway (read from its
// dev-keys.json once it has started).
var apiKey atomic.Value

// withKey sends apiKey with every request.
type withKey struct{ next http.RoundTripper }

func (w withKey) RoundTrip(r *http.Request) (*http.Response, error) {
	if k, _ := apiKey.Load().(string); k != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+k)
	}
	return w.next.RoundTrip(r)
}

// loadKey reads the dev tenant's key a gateway wrote in dataDir.
func loadKey(dataDir string) error {
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-keys.json"))
	if err != nil {
		return fmt.Errorf("chaos: gateway keys: %w", err)
	}
	var k struct {
		TenantKey string `json:"tenant_key"`
	}
	if err := json.Unmarshal(b, &k); err != nil || k.TenantKey == "" {
		return fmt.Errorf("chaos: gateway keys: bad dev-keys.json: %v", err)
	}
	apiKey.Store(k.TenantKey)
	return nil
}
