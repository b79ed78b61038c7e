package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// localCluster is the local backend: nodes and a gateway as processes of
// this program on loopback. Each binds port 0 for every listener and writes
// the ports it got to its -addr-file, which the backend reads. A killed or
// drained node is replaced by a new process with new ports; a restarted
// gateway binds the address it had.
type localCluster struct {
	bin, dir, key, profiles string
	progress                func(format string, args ...any)

	roster // its mu guards the fields below too
	seq    int
	gwN    int // gateway processes started
	// ownUIDs runs every node under a uid of its own (partitions).
	ownUIDs bool
	// firewall: the partition chains are up (shutdown removes them).
	firewall bool
	// groups: the group partition chains are up (groups.go); uidOffset
	// sets the nodes' uids apart from the partition scenario's.
	groups    bool
	uidOffset int
	// gwArgs are extra flags of every gateway process (the soak suite's
	// -retain-finished).
	gwArgs []string
	// nodeArgs are extra flags of every node process; nodeEnv extra
	// environment; nodeWrap and gwWrap a command the processes run under
	// (the overload scenario's CPU limits: taskset, GOMAXPROCS).
	nodeArgs, nodeEnv, nodeWrap, gwWrap []string
}

var _ fleet = (*localCluster)(nil)

// newLocalCluster prepares a cluster of the binaries in bin, writing its
// profile file and the processes' logs into dir.
func newLocalCluster(bin, dir, profiles string, progress func(string, ...any)) (*localCluster, error) {
	key, err := randomKey()
	if err != nil {
		return nil, err
	}
	pf := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return &localCluster{bin: bin, dir: dir, key: key, profiles: pf, roster: newRoster(), progress: progress}, nil
}

func (c *localCluster) start(_ context.Context, scenario string, nodes int) (skip, err error) {
	if scenario == "partition" || contains(groupScenarios, scenario) {
		if err := partitionSupport(); err != nil {
			return err, nil
		}
		if contains(groupScenarios, scenario) {
			err = groupFirewallUp()
			c.groups, c.uidOffset = true, groupUIDOffset
		} else {
			err = firewallUp()
			c.firewall = true
		}
		if err != nil {
			return nil, err
		}
		// Nodes run under uids of their own: they must reach the binaries
		// and the profile file.
		for _, d := range []string{c.bin, c.dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				return nil, fmt.Errorf("chaos: %w", err)
			}
		}
		c.ownUIDs = true
	}
	for i := 0; i < nodes; i++ {
		if _, err := c.startNode(); err != nil {
			return nil, err
		}
	}
	return nil, c.startGatewayOn("127.0.0.1:0")
}

func (c *localCluster) spawn(name, binary string, args []string, pl *placements) (*proc, error) {
	return c.spawnAs(name, binary, args, pl, 0)
}

// spawnAs is spawn under uid (0: this program's).
func (c *localCluster) spawnAs(name, binary string, args []string, pl *placements, uid uint32) (*proc, error) {
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	p := &proc{name: name, logPath: logPath, done: make(chan struct{})}
	p.sink = &logSink{f: f, node: name, pl: pl}
	path := filepath.Join(c.bin, binary)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "QLC_CLUSTER_KEY="+c.key)
	wrap := c.gwWrap
	if binary == "node" {
		wrap = c.nodeWrap
		cmd.Env = append(cmd.Env, c.nodeEnv...)
	}
	if len(wrap) > 0 { // taskset execs the binary: the process (and its Pdeathsig) stays one
		cmd = exec.Command(wrap[0], append(append(wrap[1:len(wrap):len(wrap)], path), args...)...)
		cmd.Env = append(os.Environ(), "QLC_CLUSTER_KEY="+c.key)
		if binary == "node" {
			cmd.Env = append(cmd.Env, c.nodeEnv...)
		}
	}
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
		p.exitedAt = time.Now()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.all = append(c.all, p)
	c.mu.Unlock()
	return p, nil
}

// startNode starts a node that joins the live ones and waits until it is ready.
func (c *localCluster) startNode() (*proc, error) { return c.startNodeWith(nil, 0) }

// startNodeWith is startNode with extra flags, under uid when not 0
// (else the scenario's rule).
func (c *localCluster) startNodeWith(extra []string, uid uint32) (*proc, error) {
	var seeds []string
	for _, n := range c.liveNodes() {
		seeds = append(seeds, n.gossip)
	}
	c.mu.Lock()
	c.seq++
	seq := c.seq
	name := fmt.Sprintf("node-%d", seq)
	c.mu.Unlock()
	if c.ownUIDs && uid == 0 {
		uid = uint32(firstNodeUID + c.uidOffset + seq)
	}
	addrFile, err := c.addrFile(name, uid)
	if err != nil {
		return nil, err
	}
	args := []string{"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-ops-addr", "127.0.0.1:0", "-addr-file", addrFile,
		"-profiles", c.profiles, "-log-format", "json", "-log-level", "info", "-drain-timeout", "60s"}
	if len(seeds) > 0 {
		args = append(args, "-seeds", strings.Join(seeds, ","))
	}
	args = append(append(args, c.nodeArgs...), extra...)
	p, err := c.spawnAs(name, "node", args, c.pl, uid)
	if err != nil {
		return nil, err
	}
	a, err := waitAddrs(addrFile, 20*time.Second, p.done)
	if err != nil {
		return nil, fmt.Errorf("chaos: %s: %w (log %s)", name, err, p.logPath)
	}
	p.gossip, p.act, p.ops = a.Gossip, a.Actor, a.Ops
	if err := waitHTTP("http://"+p.ops+"/readyz", 20*time.Second, p.done); err != nil {
		return nil, fmt.Errorf("chaos: %s: %w (log %s)", name, err, p.logPath)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, p)
	c.mu.Unlock()
	return p, nil
}

// startGatewayOn starts a gateway listening on addr (port 0 at first; a
// restart binds the address the gateway had, as a restarted service does)
// with the cluster's gateway data folder (a restart finds its store:
// ledger, kept runs).
func (c *localCluster) startGatewayOn(addr string) error {
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
	addrFile, err := c.addrFile(name, 0)
	if err != nil {
		return err
	}
	p, err := c.spawn(name, "gateway", append([]string{"-addr", addr, "-addr-file", addrFile, "-seeds", strings.Join(seeds, ","),
		"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.profiles,
		"-log-format", "json", "-log-level", "warn", "-data-dir", data, "-dev-keys"}, c.gwArgs...), nil)
	if err != nil {
		return err
	}
	a, err := waitAddrs(addrFile, 20*time.Second, p.done)
	if err != nil {
		return fmt.Errorf("chaos: gateway: %w (log %s)", err, p.logPath)
	}
	addr = a.HTTP
	p.gossip, p.act = a.Gossip, a.Actor
	c.mu.Lock()
	c.gw, c.gwURL = p, "http://"+addr
	c.mu.Unlock()
	if err := waitHTTP("http://"+addr+"/readyz", 20*time.Second, p.done); err != nil {
		return fmt.Errorf("chaos: gateway: %w (log %s)", err, p.logPath)
	}
	return loadKey(data)
}

// addrFile is a fresh path for name's -addr-file, in a folder of its own
// that uid (a node's own uid in the partition scenario) may write in.
func (c *localCluster) addrFile(name string, uid uint32) (string, error) {
	dir, err := os.MkdirTemp(c.dir, name+"-addrs-")
	if err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	if uid != 0 {
		if err := os.Chown(dir, int(uid), int(uid)); err != nil {
			return "", fmt.Errorf("chaos: %w", err)
		}
	}
	return filepath.Join(dir, "addrs.json"), nil
}

func (c *localCluster) kill(p *proc) (time.Time, error) {
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return at, err
	}
	p.killed = true
	c.removeNode(p)
	return at, nil
}

func (c *localCluster) terminate(p *proc) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	p.terminated = true
	c.removeNode(p)
	return nil
}

// replace starts a new node with new ports (old plays no part).
func (c *localCluster) replace(*proc) (*proc, error) { return c.startNode() }

func (c *localCluster) inPlace() bool { return false }

func (c *localCluster) pause(p *proc) (time.Time, error) {
	at := time.Now()
	return at, p.cmd.Process.Signal(syscall.SIGSTOP)
}

func (c *localCluster) resume(p *proc) error { return p.cmd.Process.Signal(syscall.SIGCONT) }

func (c *localCluster) cut(p *proc) (time.Time, error) {
	at := time.Now()
	return at, cutOff(p)
}

func (c *localCluster) heal(*proc) error { return heal() }

func (c *localCluster) restartGateway(kill bool) (time.Time, error) {
	c.mu.Lock()
	gw, addr := c.gw, strings.TrimPrefix(c.gwURL, "http://")
	c.mu.Unlock()
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	at := time.Now()
	if err := gw.cmd.Process.Signal(sig); err != nil {
		return at, fmt.Errorf("chaos: gateway: %w", err)
	}
	gw.killed, gw.terminated = kill, !kill
	select {
	case <-gw.done:
	case <-time.After(30 * time.Second):
		c.progress("gateway: %s did not exit within 30 s of SIGTERM; killing it", gw.name)
		_ = gw.cmd.Process.Kill()
		<-gw.done
	}
	if err := c.startGatewayOn(addr); err != nil {
		return at, fmt.Errorf("restart: %w", err)
	}
	return at, nil
}

func (c *localCluster) words() faultWords {
	return faultWords{kill: "kill -9", replaced: "each replaced by a new node", pause: "SIGSTOP", resume: "SIGCONT",
		cut: "cut off the network (iptables)", term: "SIGTERM", rolled: "a new node started first",
		gateway: "kill -9 and SIGTERM in turn, same address and store"}
}

func (c *localCluster) extras() [][2]string { return nil }

// shutdown ends every process still running: SIGCONT (a paused one must be
// able to act on the signal), SIGTERM, then SIGKILL after a grace period;
// then removes the partition scenario's firewall chains.
func (c *localCluster) shutdown() {
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
	if c.firewall {
		firewallDown()
	}
	if c.groups {
		groupFirewallDown()
	}
}
