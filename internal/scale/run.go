package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/loadgen"
)

// Config is one `make scale` measurement.
type Config struct {
	// Repo is the repository root (docker-compose.yml, scripts/compose.sh,
	// .qlc/compose.env).
	Repo string
	// Sizes are the node counts measured, ascending (default 1, 2, 3, 4).
	Sizes []int
	// NodeCPUs is each node container's CPU quota (default 0.2, issue 18's
	// figure); GatewayCPU the gateway's (default 1).
	NodeCPUs, GatewayCPU float64
	// Step is how long each load step sends (default 15 s); Warm its
	// first part left out of the throughput figures (default 5 s); Drain
	// bounds the wait for runs in flight after it (default 20 s).
	Step, Warm, Drain time.Duration
	// Profile, MaxTokens and QueryWords make each run: the built-in
	// profile "fast" (simulated small models: 150 ms ± 50 to the first
	// token, 6 ms ± 3 between tokens), 64 tokens a stage (about 2 s and
	// 256 tokens a run), a question of 20 words.
	Profile    string
	MaxTokens  int
	QueryWords int
	// Unloaded is the rate of the first step, on the first size, whose
	// TTFT p99 × SLOFactor is the SLO for every size (defaults 1 run/s, 2).
	Unloaded  float64
	SLOFactor float64
	// Start is the first rate of the first size's search (default 8
	// runs/s); later sizes start at 0.7 × the previous best scaled by the
	// node count. Bisections as in SearchConfig (default 3).
	Start      float64
	Bisections int
	// Burner, when set, is a static Linux executable run in a container
	// under NodeCPUs with the arguments "-burn 3s", which must print the
	// cores it got; the run stops when the quota does not hold.
	Burner string
	// DockerShares, when > 0, sets the cpu.shares of docker's parent cgroup
	// (cgroup v1: /sys/fs/cgroup/cpu/docker) for the measurement and puts
	// the old value back after: with the cgroupfs driver every container
	// sits under that one group, which competes at the root as ONE task
	// against every other process of the machine — on a machine with a
	// load of 10, the whole cluster would get a tenth of the CPUs whatever
	// the quotas say. Default 0 (leave it).
	DockerShares int
	// Project is the compose project (default qlc-scale); Keep leaves it
	// running at the end.
	Project string
	Keep    bool
	// Out is the results directory (scale.json, scale.md, scale.svg).
	Out string
	// Log gets progress lines.
	Log io.Writer
}

func (c *Config) defaults() error {
	if c.Repo == "" {
		return errors.New("scale: Repo is required")
	}
	if len(c.Sizes) == 0 {
		c.Sizes = []int{1, 2, 3, 4}
	}
	if !slices.IsSorted(c.Sizes) || c.Sizes[0] < 1 {
		return fmt.Errorf("scale: sizes %v must be ascending and ≥ 1", c.Sizes)
	}
	def := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.NodeCPUs, 0.2)
	def(&c.GatewayCPU, 1)
	def(&c.Unloaded, 1)
	def(&c.SLOFactor, 2)
	def(&c.Start, 8)
	for p, v := range map[*time.Duration]time.Duration{&c.Step: 15 * time.Second, &c.Warm: 5 * time.Second, &c.Drain: 20 * time.Second} {
		if *p == 0 {
			*p = v
		}
	}
	if c.Warm >= c.Step {
		return fmt.Errorf("scale: warm-up %s must be shorter than the step %s", c.Warm, c.Step)
	}
	if c.Profile == "" {
		c.Profile = "fast"
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = 64
	}
	if c.QueryWords == 0 {
		c.QueryWords = 20
	}
	if c.Project == "" {
		c.Project = "qlc-scale"
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// Results is everything a measurement found.
type Results struct {
	Started    time.Time `json:"started"`
	NodeCPUs   float64   `json:"node_cpus"`
	GatewayCPU float64   `json:"gateway_cpus"`
	// QuotaCheck is the cores a CPU burner got under NodeCPUs (0: not
	// checked).
	QuotaCheck float64       `json:"quota_check_cores"`
	Unloaded   Step          `json:"unloaded"`
	SLO        time.Duration `json:"slo_ttft_p99"`
	Rows       []Row         `json:"rows"`
	// Suspicions counts the gateway's suspicions of members over each
	// size's search, Deaths the suspicions it let time out (members
	// declared dead): overload must not look like failure.
	Suspicions map[int]int64 `json:"suspicions"`
	Deaths     map[int]int64 `json:"deaths"`
}

// Run measures every size and writes the results into cfg.Out.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	logf := func(f string, a ...any) { fmt.Fprintf(cfg.Log, "scale: "+f+"\n", a...) }
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	ov := Override{Nodes: cfg.Sizes[len(cfg.Sizes)-1], BaseNodes: 3, NodeCPUs: cfg.NodeCPUs, GatewayCPU: cfg.GatewayCPU}
	y, err := ov.YAML()
	if err != nil {
		return nil, err
	}
	ovPath := filepath.Join(cfg.Out, "docker-compose.scale.yml")
	if err := os.WriteFile(ovPath, []byte(y), 0o644); err != nil {
		return nil, err
	}
	cp := &Compose{Repo: cfg.Repo, Project: cfg.Project, Override: ovPath}
	res := &Results{Started: time.Now().UTC(), NodeCPUs: cfg.NodeCPUs, GatewayCPU: cfg.GatewayCPU, Suspicions: map[int]int64{}, Deaths: map[int]int64{}}

	if cfg.Burner != "" {
		got, err := quotaCheck(ctx, cfg.Burner, cfg.NodeCPUs)
		if err != nil {
			return nil, err
		}
		res.QuotaCheck = got
		logf("quota check: a CPU burner under --cpus %g got %.3f cores", cfg.NodeCPUs, got)
		if got > cfg.NodeCPUs*1.15 {
			return nil, fmt.Errorf("scale: the CPU quota does not hold on this machine: a burner under --cpus %g got %.2f cores", cfg.NodeCPUs, got)
		}
	}
	if cfg.DockerShares > 0 {
		restore, old, err := setShares(filepath.Join("/sys/fs/cgroup/cpu/docker", "cpu.shares"), cfg.DockerShares)
		switch {
		case errors.Is(err, os.ErrNotExist):
			logf("no cgroup v1 docker group here: its cpu.shares left alone")
		case err != nil:
			return nil, err
		default:
			defer restore()
			logf("docker's cgroup cpu.shares %d → %d for the measurement (put back after)", old, cfg.DockerShares)
		}
	}
	logf("compose project %s: down (a clean start)", cfg.Project)
	if err := cp.Down(ctx); err != nil {
		return nil, err
	}
	if !cfg.Keep {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := cp.Down(dctx); err != nil {
				logf("down: %v", err)
			}
		}()
	}
	keys, err := readEnv(filepath.Join(cfg.Repo, ".qlc", "compose.env"))
	if err != nil {
		return nil, err
	}

	m := &measurer{cfg: cfg, cp: cp, logf: logf, cgroup: CgroupCPU{}}
	started := 0
	for si, n := range cfg.Sizes {
		var svcs []string
		for i := started + 1; i <= n; i++ {
			svcs = append(svcs, fmt.Sprintf("node%d", i))
		}
		logf("%d node(s): starting %s", n, strings.Join(svcs, " "))
		if err := cp.Up(ctx, svcs...); err != nil {
			return res, err
		}
		started = n
		if si == 0 {
			if err := cp.Up(ctx, "gateway"); err != nil {
				return res, err
			}
			ip, err := cp.IP(ctx, "gateway")
			if err != nil {
				return res, err
			}
			m.base, m.ops = "http://127.0.0.1:8080", "http://"+ip+":9080"
			if m.key, err = makeTenant(ctx, m.base, keys["QLC_ADMIN_KEY"]); err != nil {
				return res, err
			}
		}
		m.containers = append([]string{"gateway"}, nodeNames(n)...)
		if err := m.waitMembers(ctx, n+1); err != nil {
			return res, err
		}
		susp0, dead0 := m.metric(ctx, "qlc_cluster_suspicions_total"), m.metric(ctx, "qlc_cluster_suspect_timeouts_total")
		if si == 0 {
			st, err := m.step(ctx, cfg.Unloaded)
			if err != nil {
				return res, err
			}
			res.Unloaded = st
			res.SLO = time.Duration(float64(st.TTFTP99) * cfg.SLOFactor)
			logf("unloaded (%.2f runs/s on %d node(s)): TTFT p50 %s p99 %s → SLO: TTFT p99 ≤ %s", cfg.Unloaded, n,
				st.TTFTP50.Round(time.Millisecond), st.TTFTP99.Round(time.Millisecond), res.SLO.Round(time.Millisecond))
			if st.OK == 0 || st.ErrorCount() > 0 {
				return res, fmt.Errorf("scale: the unloaded step failed: %d ok, errors %s", st.OK, errorList(st.Errors))
			}
		}
		start := cfg.Start
		if si > 0 {
			if prev := res.Rows[si-1]; prev.Outcome.Found {
				start = 0.7 * prev.Outcome.Best.Rate * float64(n) / float64(prev.Nodes)
			}
		}
		slo := SLO{TTFTP99: res.SLO}
		out, err := Search(ctx, SearchConfig{Start: start, Bisections: cfg.Bisections, MaxSteps: 8}, slo, func(ctx context.Context, rate float64) (Step, error) {
			st, err := m.step(ctx, rate)
			if err == nil {
				st.Pass, st.Why = slo.Judge(st)
				verdict := "pass"
				if !st.Pass {
					verdict = "FAIL " + st.Why
				}
				logf("%d node(s) %.2f runs/s: completed %.2f/s, TTFT p50 %s p99 %s, failed %d, cpu %s: %s", n, rate, st.Goodput,
					st.TTFTP50.Round(time.Millisecond), st.TTFTP99.Round(time.Millisecond), st.ErrorCount(), cpuList(st.CPU), verdict)
			}
			return st, err
		})
		res.Rows = append(res.Rows, Row{Nodes: n, Outcome: out})
		res.Suspicions[n] = m.metric(ctx, "qlc_cluster_suspicions_total") - susp0
		res.Deaths[n] = m.metric(ctx, "qlc_cluster_suspect_timeouts_total") - dead0
		if err != nil {
			return res, err
		}
		if err := res.write(cfg.Out); err != nil {
			return res, err
		}
	}
	return res, nil
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node%d", i+1)
	}
	return out
}

func cpuList(m map[string]float64) string {
	var parts []string
	for _, k := range sortedNames(m) {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// write puts scale.json, scale.md and scale.svg into dir.
func (r *Results) write(dir string) error {
	var md strings.Builder
	fmt.Fprintf(&md, "# make scale, %s\n\nNodes under --cpus %g each, the gateway under %g; SLO: answer TTFT p99 ≤ %s (%s × the unloaded p99 %s).\n\n",
		r.Started.Format(time.RFC3339), r.NodeCPUs, r.GatewayCPU, r.SLO.Round(time.Millisecond),
		strconv.FormatFloat(float64(r.SLO)/float64(max(r.Unloaded.TTFTP99, 1)), 'f', 1, 64), r.Unloaded.TTFTP99.Round(time.Millisecond))
	if r.QuotaCheck > 0 {
		fmt.Fprintf(&md, "Quota check: a CPU burner under --cpus %g got %.3f cores.\n\n", r.NodeCPUs, r.QuotaCheck)
	}
	WriteTable(&md, r.Rows)
	md.WriteString("\nThe gateway's suspicions of members (declared dead) during each size's search:")
	for _, row := range r.Rows {
		fmt.Fprintf(&md, " %d node(s): %d (%d);", row.Nodes, r.Suspicions[row.Nodes], r.Deaths[row.Nodes])
	}
	md.WriteString("\n\nEvery step:\n\n")
	WriteSteps(&md, r.Rows)
	if err := os.WriteFile(filepath.Join(dir, "scale.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "scale.json"), j, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "scale.svg"))
	if err != nil {
		return err
	}
	err = WriteSVG(f, fmt.Sprintf("QLC on compose: runs/s at TTFT p99 ≤ %s, nodes at %g CPU", r.SLO.Round(time.Millisecond), r.NodeCPUs), r.Rows)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteMarkdown writes the results' summary table (as scale.md has it).
func (r *Results) WriteMarkdown(w io.Writer) { WriteTable(w, r.Rows) }

type measurer struct {
	cfg            Config
	cp             *Compose
	logf           func(string, ...any)
	cgroup         CgroupCPU
	base, ops, key string
	containers     []string
	steps          uint64
}

// step offers rate runs/s (Poisson) for cfg.Step and measures.
func (m *measurer) step(ctx context.Context, rate float64) (Step, error) {
	ids := map[string]string{}
	before := map[string]Sample{}
	for _, c := range m.containers {
		id, err := m.cp.ID(ctx, c)
		if err != nil {
			return Step{}, err
		}
		s, err := m.cgroup.Read(id)
		if err != nil {
			return Step{}, err
		}
		ids[c], before[c] = id, s
	}
	m.steps++
	keep := false
	lc := loadgen.Config{URL: m.base, APIKey: m.key, Target: loadgen.TargetRunsStream, Rate: rate, Arrival: loadgen.ArrivalPoisson,
		MaxInFlight: 2000, Requests: int(rate*m.cfg.Step.Seconds()*2) + 20, Duration: m.cfg.Step, Drain: m.cfg.Drain,
		Mix:  []loadgen.MixItem{{Profile: m.cfg.Profile, MaxTokens: m.cfg.MaxTokens, QueryWords: m.cfg.QueryWords, Weight: 1}},
		Seed: m.steps, KeepRequests: &keep}
	t0, cpu0 := time.Now(), selfCPU()
	rep, err := loadgen.Run(ctx, lc)
	wall, loadCPU := time.Since(t0), selfCPU()-cpu0
	if err != nil {
		return Step{}, err
	}
	st := Step{Rate: rate, Sent: rep.Sent, OK: rep.Outcomes[loadgen.OutcomeOK], Errors: rep.Errors,
		CPU: map[string]float64{}, Throttled: map[string]int64{}, LoadCPU: loadCPU.Seconds() / wall.Seconds()}
	if n := rep.Sent - st.OK - st.ErrorCount(); n > 0 { // interrupted or cancelled: a failure too
		if st.Errors == nil {
			st.Errors = map[string]int{}
		}
		st.Errors["unfinished"] += n
	}
	st.Offered, st.Goodput, st.TokensPerSecond = steady(rep.Timeline, int(m.cfg.Warm/time.Second), int(m.cfg.Step/time.Second))
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	st.TTFTP50, st.TTFTP99 = ms(rep.Latency["ttft"].P50), ms(rep.Latency["ttft"].P99)
	st.TTFTAnyP99, st.E2EP50 = ms(rep.Latency["ttft_any"].P99), ms(rep.Latency["e2e"].P50)
	for c, id := range ids {
		s, err := m.cgroup.Read(id)
		if err != nil {
			return Step{}, err
		}
		st.CPU[c] = (s.CPU - before[c].CPU).Seconds() / wall.Seconds()
		st.Throttled[c] = s.Throttled - before[c].Throttled
	}
	return st, nil
}

// steady is requests sent, runs completed and tokens streamed per second
// over the timeline's seconds [from, to).
func steady(tl []loadgen.Second, from, to int) (sent, runs, tokens float64) {
	n := 0
	for _, s := range tl {
		if s.T >= from && s.T < to {
			sent += float64(s.Sent)
			runs += float64(s.Done)
			tokens += float64(s.Tokens)
			n++
		}
	}
	if n == 0 {
		return 0, 0, 0
	}
	return sent / float64(n), runs / float64(n), tokens / float64(n)
}

// metric reads one unlabelled series from the gateway's ops listener (0
// when absent).
func (m *measurer) metric(ctx context.Context, name string) int64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.ops+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return int64(v)
		}
	}
	return 0
}

// waitMembers waits until the gateway sees want members alive.
func (m *measurer) waitMembers(ctx context.Context, want int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := m.metric(ctx, "qlc_cluster_members_alive")
		if got == int64(want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scale: the gateway sees %d members, want %d", got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// makeTenant waits for the gateway and makes a tenant without limits,
// returning its key.
func makeTenant(ctx context.Context, base, adminKey string) (string, error) {
	if adminKey == "" {
		return "", errors.New("scale: no QLC_ADMIN_KEY in .qlc/compose.env")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("scale: the gateway at %s is not ready after 60 s", base)
		}
		time.Sleep(250 * time.Millisecond)
	}
	c, err := client.New(client.Config{BaseURL: base, APIKey: adminKey})
	if err != nil {
		return "", err
	}
	// No concurrent-runs limit (absent would take the gateway's default),
	// and streams past the gateway's default of 64 per key: the cluster's
	// capacity is measured, not the tenant's limits.
	none := int64(0)
	k, err := c.AdminCreateTenant(ctx, client.NewTenant{Name: "scale", ID: "scale",
		Limits: &client.Limits{ConcurrentRuns: &none, MaxStreams: 1_000_000}})
	if err != nil {
		return "", fmt.Errorf("scale: making the tenant: %w", err)
	}
	return k.Key, nil
}

// readEnv reads NAME=value lines.
func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scale: %w (scripts/compose.sh makes it on first use)", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out, nil
}

// quotaCheck runs burner in a container under --cpus and returns the
// cores it reports.
func quotaCheck(ctx context.Context, burner string, cpus float64) (float64, error) {
	abs, err := filepath.Abs(burner)
	if err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--cpus", strconv.FormatFloat(cpus, 'g', -1, 64),
		"-v", abs+":/burn:ro", "--entrypoint", "/burn", "qlc-node:dev", "-burn", "3s").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("scale: quota check: %w: %s", err, lastLines(string(out), 5))
	}
	return ParseBurn(string(out))
}

// ParseBurn reads the burner's "cores N" line.
func ParseBurn(out string) (float64, error) {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cores "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil && f >= 0 {
				return f, nil
			}
		}
	}
	return 0, fmt.Errorf("scale: the burner printed no \"cores N\" line: %q", lastLines(out, 3))
}

// setShares writes a cgroup v1 cpu.shares file and returns a function that
// puts the old value back.
func setShares(path string, shares int) (func(), int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("scale: docker's cgroup: %w", err)
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, 0, fmt.Errorf("scale: %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(shares)), 0o644); err != nil {
		return nil, 0, fmt.Errorf("scale: %s: %w", path, err)
	}
	return func() { _ = os.WriteFile(path, []byte(strconv.Itoa(old)), 0o644) }, old, nil
}
