package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Group partitions on the compose backend. A docker network is two-way and
// shared: disconnecting the nodes of one group from it cuts them from each
// other too, and no network can carry one direction only. So the cuts are
// iptables rules in each container's own network namespace (nsenter -n,
// with this machine's iptables: the images have no shell): "A → B dropped"
// is, in A's namespace, every packet to B's address on the compose network
// dropped (OUTPUT). A split drops both ways. The published ports (ops, the
// gateway's API) come in from the network's gateway address, which no rule
// names: the suite keeps reading metrics and streams.

const chainNS = "QLC-GROUP"

func groupComposeSupport() error {
	if os.Geteuid() != 0 {
		return errors.New("group partitions on compose need root (nsenter into the containers' network namespaces, iptables there)")
	}
	for _, b := range []string{"nsenter", "iptables-restore"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("group partitions on compose need %s", b)
		}
	}
	return nil
}

// nsDropInput is iptables-restore's input (with --noflush) that, in one
// namespace, makes chainNS afresh, hooks it into OUTPUT and drops every
// packet to the addresses dst.
func nsDropInput(dst []string) string {
	var b strings.Builder
	b.WriteString("*filter\n:" + chainNS + " - [0:0]\n-I OUTPUT 1 -j " + chainNS + "\n")
	for _, ip := range dst {
		b.WriteString("-A " + chainNS + " -d " + ip + "/32 -j DROP\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// nsHealInput removes chainNS and its hook.
const nsHealInput = "*filter\n-D OUTPUT -j " + chainNS + "\n-F " + chainNS + "\n-X " + chainNS + "\nCOMMIT\n"

// nsTouched are the containers (id → pid) with a chainNS now.
var nsTouched = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func nsRestore(pid, input string) error {
	cmd := exec.Command("nsenter", "-t", pid, "-n", "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: nsenter -t %s -n iptables-restore: %v: %s", pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

var _ groupFleet = (*composeCluster)(nil)

func (c *composeCluster) dropBetween(from, to []*proc, both bool) (time.Time, error) {
	type ns struct {
		pid string
		dst []string
	}
	addr := map[*proc]string{}
	pids := map[*proc]string{}
	for _, p := range append(append([]*proc(nil), from...), to...) {
		ip, err := c.address(p)
		if err != nil || ip == "" {
			return time.Now(), fmt.Errorf("chaos: %s has no address on %s: %v", p.name, c.network, err)
		}
		pid, err := docker(20*time.Second, "inspect", "-f", "{{.State.Pid}}", p.container)
		if err != nil {
			return time.Now(), err
		}
		addr[p], pids[p] = ip, strings.TrimSpace(pid)
	}
	plan := map[*proc]*ns{}
	add := func(a, b *proc) {
		if plan[a] == nil {
			plan[a] = &ns{pid: pids[a]}
		}
		plan[a].dst = append(plan[a].dst, addr[b])
	}
	for _, a := range from {
		for _, b := range to {
			add(a, b)
			if both {
				add(b, a)
			}
		}
	}
	at := time.Now() // one restore per namespace: a few ms each
	for p, n := range plan {
		nsTouched.Lock()
		nsTouched.m[p.container] = n.pid
		nsTouched.Unlock()
		if err := nsRestore(n.pid, nsDropInput(n.dst)); err != nil {
			return at, err
		}
	}
	return at, nil
}

func (c *composeCluster) healGroups() error {
	nsTouched.Lock()
	defer nsTouched.Unlock()
	var errs []error
	for id, pid := range nsTouched.m {
		if err := nsRestore(pid, nsHealInput); err != nil {
			errs = append(errs, err)
		}
		delete(nsTouched.m, id)
	}
	return errors.Join(errs...)
}
