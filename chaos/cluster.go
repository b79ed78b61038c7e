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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// moduleDir is the folder of the module that holds the working directory
// (the QLC repository).
func moduleDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("chaos: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("chaos: run from inside the QLC module (go run ./chaos)")
	}
	return filepath.Dir(gomod), nil
}

// buildBinaries builds cmd/node and cmd/gateway into dir, from the module
// that holds the working directory.
func buildBinaries(dir string) error {
	root, err := moduleDir()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/node", "./cmd/gateway")
	cmd.Dir = root
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

// listenAddrs is what a node or gateway writes to its -addr-file once it
// listens (cmd/internal/cli.Addrs): the addresses it bound. The local
// backend starts every process with port 0 and reads them back.
type listenAddrs struct {
	HTTP   string `json:"http"`
	Ops    string `json:"ops"`
	Actor  string `json:"actor"`
	Gossip string `json:"gossip"`
}

// waitAddrs polls path until the process has written its addresses.
func waitAddrs(path string, within time.Duration, died <-chan struct{}) (listenAddrs, error) {
	deadline := time.Now().Add(within)
	for {
		var a listenAddrs
		b, err := os.ReadFile(path)
		if err == nil {
			if err = json.Unmarshal(b, &a); err == nil {
				return a, nil
			}
		}
		select {
		case <-died:
			return a, errors.New("the process exited")
		default:
		}
		if time.Now().After(deadline) {
			return a, fmt.Errorf("no addresses in %s within %v: %v", path, within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// proc is one node or gateway: a local process, or one incarnation of a
// compose container (from a start to the exit that follows).
type proc struct {
	name               string
	ops                string // node: host:port of /metrics and /readyz
	logPath            string
	started            time.Time
	done               chan struct{} // closed when the process has exited
	exitErr            error         // set before done is closed
	exitedAt           time.Time     // set before done is closed
	sink               *logSink
	killed, terminated bool // set by the scenario that ended it

	// Local processes.
	cmd         *exec.Cmd
	gossip, act string // node addresses
	uid         uint32 // a uid of its own (partition scenario), else 0

	// Compose containers.
	service, container string // compose service, container id
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
	v, ok := metrics(url, name)[name]
	return v, ok
}

// metrics reads a Prometheus text endpoint once and sums, for each of
// names, its samples (all label sets); a name without a sample (or an
// endpoint that did not answer) is absent from the map.
func metrics(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	// The gateway serves /metrics on its API address to an admin key only
	// (nodes' ops addresses ignore the header).
	if k, _ := metricsKey.Load().(string); k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range names {
			rest, ok := strings.CutPrefix(line, name)
			if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
			if len(f) == 0 {
				continue
			}
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[name] += v
			}
		}
	}
	return out
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

// metricsKey is the chaos gateway's admin key, which its /metrics asks for
// (from dev-keys.json, or the compose tenants file's admin_keys).
var metricsKey atomic.Value

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
		AdminKey  string `json:"admin_key"`
	}
	if err := json.Unmarshal(b, &k); err != nil || k.TenantKey == "" {
		return fmt.Errorf("chaos: gateway keys: bad dev-keys.json: %v", err)
	}
	apiKey.Store(k.TenantKey)
	metricsKey.Store(k.AdminKey)
	return nil
}
