package scalesim

// Membership across several processes: the members of one simulation are
// spread over worker processes (each its own Go runtime, scheduler and
// GC), talking real memberlist UDP and TCP on loopback with distinct
// ports, as a deployment's nodes do. The parent starts the workers (this
// program again, with -worker), sends them commands as JSON lines on
// their stdin and reads JSON replies on their stdout; times are taken by
// the workers as wall-clock instants (one kernel clock for all of them)
// and the parent takes the latest.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
	"github.com/qlc-project/qlc/topology"
)

// command is one request to a worker; reply its answer.
type command struct {
	ID int    `json:"id"`
	Op string `json:"op"` // start, wait, kill, setload, stats, views
	// start: Names of members to start, each with Seeds, one every Every.
	Names []string      `json:"names,omitempty"`
	Seeds []string      `json:"seeds,omitempty"`
	Every time.Duration `json:"every,omitempty"`
	// wait: until every member here has Name (Cond "present"), has not
	// ("absent") or reads its Load ("load"), polling every Poll, at most
	// Timeout. kill, setload: the member Name (here).
	Name    string        `json:"name,omitempty"`
	Cond    string        `json:"cond,omitempty"`
	Load    int           `json:"load,omitempty"`
	Poll    time.Duration `json:"poll,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

type reply struct {
	ID  int    `json:"id"`
	Err string `json:"err,omitempty"`
	// start: each started member's gossip address.
	Addrs []string `json:"addrs,omitempty"`
	// wait: the instant (Unix ns) of the poll that saw the last member
	// agree; OK false when the timeout came first. kill, setload: the
	// instant of the act.
	At int64 `json:"at,omitempty"`
	OK bool  `json:"ok,omitempty"`
	// views: each running member's view size; Fenced counts fenced ones.
	Views  []int `json:"views,omitempty"`
	Fenced int   `json:"fenced,omitempty"`
	// stats: counters summed over this worker's members, the busiest
	// member's bytes, the process's CPU time.
	PktBytes, StreamBytes, Pkts, Recv int64
	CPU                               time.Duration
	// Sent is each member's bytes sent so far (the busiest member).
	Sent map[string]int64 `json:"sent,omitempty"`
}

// WorkerConfig is a worker's share of a simulation.
type WorkerConfig struct {
	Scale int    // as Config.Scale
	Key   []byte // the cluster key every member shares
}

type workerMember struct {
	c    *cluster.Cluster
	ft   *cluster.FaultTransport
	name string
	dead bool
}

// RunWorker serves commands from in until it is closed or ctx ends,
// running this process's members. Commands run concurrently (a wait does
// not hold up the kill it is waiting for); replies are written whole, one
// per line.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer, cfg WorkerConfig) error {
	if cfg.Scale < 1 || len(cfg.Key) == 0 {
		return errors.New("scalesim: worker needs Scale ≥ 1 and a key")
	}
	var (
		mu      sync.Mutex
		members []*workerMember
		outMu   sync.Mutex
		wg      sync.WaitGroup
	)
	// The end of the input (the parent gone) stops the commands in flight.
	ctx, cancel := context.WithCancel(ctx)
	var drains sync.WaitGroup // one reader of Updates per member, ended by its Shutdown
	defer func() {
		cancel()
		wg.Wait()
		for _, m := range members {
			if !m.dead {
				_ = m.c.Shutdown()
			}
		}
		drains.Wait()
	}()
	enc := json.NewEncoder(out)
	send := func(r reply) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(r)
	}
	running := func() []*workerMember {
		mu.Lock()
		defer mu.Unlock()
		var live []*workerMember
		for _, m := range members {
			if !m.dead && !isClosed(m.c.Fenced()) {
				live = append(live, m)
			}
		}
		return live
	}
	find := func(name string) *workerMember {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range members {
			if m.name == name {
				return m
			}
		}
		return nil
	}
	startMember := func(name string, seeds []string, n int) (string, error) {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"},
			Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			return "", fmt.Errorf("%s: transport: %v", name, err)
		}
		ft := cluster.WrapTransport(nt)
		cc := shippedConfig(cfg.Scale)
		cc.NodeName, cc.Transport, cc.Seeds, cc.ClusterKey = name, ft, seeds, cfg.Key
		cc.Kinds = []string{actors.KindCoordinator, actors.KindTokenizer}
		cc.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:8090", (n>>16)&255, (n>>8)&255, n&255)
		cc.Version = "v0.15.0-3-g0e5f637"
		cc.Logger = slog.New(slog.DiscardHandler)
		cl, err := cluster.Start(cc)
		if err != nil {
			_ = ft.Shutdown()
			return "", fmt.Errorf("%s: %v", name, err)
		}
		drains.Add(1)
		go drainUpdates(cl, &drains)
		mu.Lock()
		members = append(members, &workerMember{c: cl, ft: ft, name: name})
		mu.Unlock()
		return cl.Self().GossipAddr, nil
	}
	handle := func(c command) reply {
		r := reply{ID: c.ID}
		switch c.Op {
		case "start":
			// One member every Every, each joining on its own goroutine: a
			// join blocks up to TCPTimeout per seed that does not answer,
			// and waiting for each in turn would set the pace instead.
			addrs := make([]string, len(c.Names))
			errs := make([]error, len(c.Names))
			var sw sync.WaitGroup
			for i, name := range c.Names {
				if i > 0 && !sleep(ctx, c.Every) {
					break
				}
				sw.Add(1)
				go func() { // owned: waited for below
					defer sw.Done()
					addrs[i], errs[i] = startMember(name, c.Seeds, len(c.Names)*c.ID+i)
				}()
			}
			sw.Wait()
			if err := errors.Join(append(errs, ctx.Err())...); err != nil {
				r.Err = err.Error()
				return r
			}
			r.Addrs, r.OK = addrs, true
		case "wait":
			cond := func(m *workerMember) bool {
				x, ok := m.c.Member(c.Name)
				switch c.Cond {
				case "present":
					return ok
				case "absent":
					return !ok
				default:
					return ok && x.Load == c.Load
				}
			}
			pending := slices.DeleteFunc(running(), func(m *workerMember) bool { return m.name == c.Name })
			deadline := time.Now().Add(c.Timeout)
			for {
				now := time.Now()
				pending = slices.DeleteFunc(pending, cond)
				if len(pending) == 0 {
					r.At, r.OK = now.UnixNano(), true
					break
				}
				if now.After(deadline) || !sleep(ctx, c.Poll) {
					r.At = now.UnixNano()
					break
				}
			}
		case "kill", "setload":
			m := find(c.Name)
			if m == nil {
				r.Err = "no member " + c.Name
				return r
			}
			r.At, r.OK = time.Now().UnixNano(), true
			if c.Op == "kill" {
				mu.Lock()
				m.dead = true
				mu.Unlock()
				_ = m.c.Shutdown()
			} else {
				m.c.SetLoad(c.Load)
			}
		case "views":
			for _, m := range running() {
				r.Views = append(r.Views, viewSize(m.c))
			}
			mu.Lock()
			for _, m := range members {
				r.Fenced += b2i(!m.dead && isClosed(m.c.Fenced()))
			}
			mu.Unlock()
		case "stats":
			mu.Lock()
			for _, m := range members {
				st := m.ft.Stats()
				r.PktBytes += st.PacketBytesSent
				r.StreamBytes += st.StreamBytesSent
				r.Pkts += st.PacketsSent
				r.Recv += st.PacketsReceived
				if r.Sent == nil {
					r.Sent = map[string]int64{}
				}
				r.Sent[m.name] = st.PacketBytesSent + st.StreamBytesSent
			}
			mu.Unlock()
			r.CPU = cpuTime()
		default:
			r.Err = "unknown op " + c.Op
		}
		return r
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			send(reply{ID: -1, Err: "bad command: " + err.Error()})
			continue
		}
		wg.Add(1)
		go func() { // owned: RunWorker waits for it before returning
			defer wg.Done()
			send(handle(c))
		}()
	}
	return sc.Err()
}

// shippedConfig is topology.DefaultConfig's cluster configuration with
// every protocol interval multiplied by scale.
func shippedConfig(scale int) cluster.Config {
	cc := topology.DefaultConfig().Cluster
	k := time.Duration(scale)
	cc.ProbeInterval *= k
	cc.ProbeTimeout *= k
	cc.GossipInterval *= k
	cc.PushPullInterval *= k
	cc.GossipToTheDeadTime *= k
	cc.TCPTimeout *= k
	cc.RejoinInterval *= k
	cc.SeedResyncInterval *= k
	cc.LoadUpdateInterval *= k
	return cc
}

// worker is the parent's handle on one worker process.
type worker struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	mu      sync.Mutex
	pending map[int]chan reply
	nextID  int
	done    chan struct{}
	err     error
}

func (w *worker) call(ctx context.Context, c command) (reply, error) {
	w.mu.Lock()
	w.nextID++
	c.ID = w.nextID
	ch := make(chan reply, 1)
	w.pending[c.ID] = ch
	b, _ := json.Marshal(c)
	_, err := w.stdin.Write(append(b, '\n'))
	w.mu.Unlock()
	if err != nil {
		return reply{}, fmt.Errorf("scalesim: worker: %w", err)
	}
	select {
	case r := <-ch:
		if r.Err != "" {
			return r, fmt.Errorf("scalesim: worker: %s", r.Err)
		}
		return r, nil
	case <-w.done:
		return reply{}, fmt.Errorf("scalesim: worker ended: %v", w.err)
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// ProcsConfig is a membership simulation over several processes.
type ProcsConfig struct {
	Config
	// Procs is how many worker processes share the N members (default 4).
	Procs int
	// Exe and Args start one worker: the program that calls RunWorker
	// when given Args (qlc-scalesim -worker -scale S).
	Exe  string
	Args []string
	// Stderr gets the workers' own error output (default: this process's).
	Stderr io.Writer
}

// SimulateMembershipProcs is SimulateMembership with the members spread
// over cfg.Procs processes on real loopback sockets. Result.CPU is the
// workers' CPU summed, over the window and the machine's cores; timer lag
// and packet loss are not measured (Loss compares packets sent with
// packets received, which UDP on loopback loses only under load).
func SimulateMembershipProcs(ctx context.Context, cfg ProcsConfig) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	if cfg.Procs == 0 {
		cfg.Procs = 4
	}
	if cfg.Procs < 1 || cfg.Exe == "" {
		return Result{}, errors.New("scalesim: Procs ≥ 1 and Exe are required")
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	log := cfg.Logger
	scale := time.Duration(cfg.Scale)
	res := Result{N: cfg.N, Scale: cfg.Scale, Seeds: cfg.Seeds}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5ca1e))

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var ws []*worker
	defer func() {
		for _, w := range ws {
			_ = w.stdin.Close()
		}
		for _, w := range ws {
			select {
			case <-w.done:
			case <-time.After(10 * time.Second):
				_ = w.cmd.Process.Kill()
				<-w.done
			}
		}
	}()
	for range cfg.Procs {
		cmd := exec.CommandContext(wctx, cfg.Exe, cfg.Args...)
		cmd.Stderr = cfg.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return res, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("scalesim: start worker: %w", err)
		}
		w := &worker{cmd: cmd, stdin: stdin, pending: map[int]chan reply{}, done: make(chan struct{})}
		ws = append(ws, w)
		go func() { // owned: ends when the worker's stdout closes; the defer above waits on done
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				var r reply
				if json.Unmarshal(sc.Bytes(), &r) != nil {
					continue
				}
				w.mu.Lock()
				ch := w.pending[r.ID]
				delete(w.pending, r.ID)
				w.mu.Unlock()
				if ch != nil {
					ch <- r
				}
			}
			w.err = cmd.Wait()
			close(w.done)
		}()
	}
	owner := map[string]*worker{}
	next := 0
	name := func() string {
		next++
		return fmt.Sprintf("qlc-node-%d-%08x", next, uint32(next)*2654435761)
	}
	// all sends c to every worker at once and returns the replies.
	all := func(c command) ([]reply, error) {
		out := make([]reply, len(ws))
		errs := make([]error, len(ws))
		var wg sync.WaitGroup
		for i, w := range ws {
			wg.Add(1)
			go func() { // owned: waited for below
				defer wg.Done()
				out[i], errs[i] = w.call(ctx, c)
			}()
		}
		wg.Wait()
		return out, errors.Join(errs...)
	}
	views := func() (lo, hi, full, fenced int, err error) {
		rs, err := all(command{Op: "views"})
		lo = cfg.N
		for _, r := range rs {
			for _, v := range r.Views {
				lo, hi, full = min(lo, v), max(hi, v), full+b2i(v >= cfg.N)
			}
			fenced += r.Fenced
		}
		return lo, hi, full, fenced, err
	}

	// 1. The seeds, one by one on worker 0, then the rest spread over the
	// workers, started at once with the same overall pace as in one
	// process (StartEvery per member).
	t0 := time.Now()
	var seeds []string
	for range cfg.Seeds {
		n := name()
		r, err := ws[0].call(ctx, command{Op: "start", Names: []string{n}, Seeds: slices.Clone(seeds)})
		if err != nil {
			return res, err
		}
		owner[n] = ws[0]
		seeds = append(seeds, r.Addrs...)
		if !sleep(ctx, cfg.StartEvery) {
			return res, ctx.Err()
		}
	}
	batches := make([][]string, len(ws))
	for i := cfg.Seeds; i < cfg.N; i++ {
		n := name()
		w := i % len(ws)
		batches[w] = append(batches[w], n)
		owner[n] = ws[w]
	}
	{
		var wg sync.WaitGroup
		errs := make([]error, len(ws))
		for i, w := range ws {
			wg.Add(1)
			go func() { // owned: waited for below
				defer wg.Done()
				_, errs[i] = w.call(ctx, command{Op: "start", Names: batches[i], Seeds: seeds, Every: cfg.StartEvery * time.Duration(len(ws))})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return res, err
		}
	}
	startTimeout := max(60*time.Second, time.Duration(cfg.N)*200*time.Millisecond) * scale
	for {
		lo, hi, full, fenced, err := views()
		if err != nil {
			return res, err
		}
		if full == cfg.N {
			break
		}
		if time.Since(t0) > startTimeout {
			res.Failed = fmt.Sprintf("%d members in %d processes did not all see each other within %v (views %d..%d, %d complete, %d fenced)",
				cfg.N, len(ws), startTimeout, lo, hi, full, fenced)
			return res, errors.New("scalesim: " + res.Failed)
		}
		log.Info("scalesim: starting", "n", cfg.N, "procs", len(ws), "views", fmt.Sprintf("%d..%d", lo, hi), "complete", full, "fenced", fenced)
		if !sleep(ctx, time.Second) {
			return res, ctx.Err()
		}
	}
	res.Start = time.Since(t0) / scale
	log.Info("scalesim: members up", "n", cfg.N, "procs", len(ws), "took", time.Since(t0).Round(time.Millisecond))

	// 2. Settle, then the steady window.
	if !sleep(ctx, 3*time.Second*scale) {
		return res, ctx.Err()
	}
	sum := func() (reply, error) {
		rs, err := all(command{Op: "stats"})
		var s reply
		for _, r := range rs {
			s.PktBytes += r.PktBytes
			s.StreamBytes += r.StreamBytes
			s.Pkts += r.Pkts
			s.Recv += r.Recv
			s.CPU += r.CPU
			for k, v := range r.Sent {
				if s.Sent == nil {
					s.Sent = map[string]int64{}
				}
				s.Sent[k] = v
			}
		}
		return s, err
	}
	b0, err := sum()
	if err != nil {
		return res, err
	}
	w0 := time.Now()
	if !sleep(ctx, cfg.Steady) {
		return res, ctx.Err()
	}
	b1, err := sum()
	if err != nil {
		return res, err
	}
	window := time.Since(w0)
	res.CPU = (b1.CPU - b0.CPU).Seconds() / (window.Seconds() * float64(runtime.NumCPU()))
	perSec := float64(cfg.Scale) / window.Seconds()
	n := float64(cfg.N)
	res.PacketBytesPerMember = float64(b1.PktBytes-b0.PktBytes) / n * perSec
	res.StreamBytesPerMember = float64(b1.StreamBytes-b0.StreamBytes) / n * perSec
	res.BytesPerMember = res.PacketBytesPerMember + res.StreamBytesPerMember
	res.PacketsPerMember = float64(b1.Pkts-b0.Pkts) / n * perSec
	for k, v := range b1.Sent {
		res.MaxBytesPerMember = max(res.MaxBytesPerMember, float64(v-b0.Sent[k])*perSec)
	}
	if p := b1.Pkts - b0.Pkts; p > 0 {
		res.Loss = max(0, 1-float64(b1.Recv-b0.Recv)/float64(p))
	}
	lo, _, _, fenced, err := views()
	if err != nil {
		return res, err
	}
	res.MinView = lo
	log.Info("scalesim: steady window", "n", cfg.N, "bytes_per_member_s", int(res.BytesPerMember), "cpu", fmt.Sprintf("%.2f", res.CPU),
		"loss", res.Loss, "min_view", res.MinView, "fenced", fenced)

	// 3. Repetitions: a join, a death, a load change, each timed until
	// every running member agrees.
	wait := func(c command, act func() (int64, error)) (time.Duration, bool, error) {
		c.Op, c.Poll, c.Timeout = "wait", cfg.Poll, cfg.Timeout
		type result struct {
			rs  []reply
			err error
		}
		ch := make(chan result, 1)
		go func() { // owned: its result is received below
			rs, err := all(c)
			ch <- result{rs, err}
		}()
		at, err := act()
		r := <-ch
		if err != nil {
			return 0, false, err
		}
		if r.err != nil {
			return 0, false, r.err
		}
		last, ok := int64(0), true
		for _, x := range r.rs {
			last = max(last, x.At)
			ok = ok && x.OK
		}
		if !ok {
			return cfg.Timeout / scale, false, nil
		}
		return time.Duration(last-at) / scale, true, nil
	}
	settle := time.Second * scale
	killed := map[string]bool{}
	for r := range cfg.Reps {
		nm := name()
		w := ws[rng.IntN(len(ws))]
		owner[nm] = w
		d, ok, err := wait(command{Name: nm, Cond: "present"}, func() (int64, error) {
			at := time.Now().UnixNano()
			_, err := w.call(ctx, command{Op: "start", Names: []string{nm}, Seeds: seeds})
			return at, err
		})
		if err != nil {
			return res, fmt.Errorf("scalesim: join: %w", err)
		}
		res.Join = append(res.Join, d)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}

		// A member that is not a seed nor the newcomer stops without
		// leaving.
		var victims []string
		for i := cfg.Seeds + 1; i < next; i++ {
			v := fmt.Sprintf("qlc-node-%d-%08x", i, uint32(i)*2654435761)
			if !killed[v] {
				victims = append(victims, v)
			}
		}
		v := victims[rng.IntN(len(victims))]
		killed[v] = true
		d, ok, err = wait(command{Name: v, Cond: "absent"}, func() (int64, error) {
			x, err := owner[v].call(ctx, command{Op: "kill", Name: v})
			return x.At, err
		})
		if err != nil {
			return res, fmt.Errorf("scalesim: death: %w", err)
		}
		res.Death = append(res.Death, d)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}

		var srcs []string
		for i := 1; i < next; i++ {
			s := fmt.Sprintf("qlc-node-%d-%08x", i, uint32(i)*2654435761)
			if !killed[s] {
				srcs = append(srcs, s)
			}
		}
		src := srcs[rng.IntN(len(srcs))]
		load := 1000 + r
		d, ok, err = wait(command{Name: src, Cond: "load", Load: load}, func() (int64, error) {
			x, err := owner[src].call(ctx, command{Op: "setload", Name: src, Load: load})
			return x.At, err
		})
		if err != nil {
			return res, fmt.Errorf("scalesim: metadata: %w", err)
		}
		res.Meta = append(res.Meta, d)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}
		log.Info("scalesim: repetition", "n", cfg.N, "rep", r+1, "join", res.Join[r], "death", res.Death[r], "meta", res.Meta[r])
	}
	_, _, _, res.Fenced, err = views()
	return res, err
}
