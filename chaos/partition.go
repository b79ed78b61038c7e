package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// Partitions of local processes: every node of the partition scenario runs
// under a uid of its own, so iptables can cut one off the loopback network
// completely — every packet it sends (owner match, which covers its answers
// on connections others opened and its outgoing connections alike) and
// every packet to its gossip and actor ports. Healing flushes the rules.
// Needs root and iptables; the rules live in their own chains, removed at
// the end whatever happens.

const (
	chainOut = "QLC-CHAOS-OUT"
	chainIn  = "QLC-CHAOS-IN"
)

// firstNodeUID is the uid of the partition scenario's first node; node i
// runs as firstNodeUID+i.
const firstNodeUID = 61000

// partitionSupport says why partitions cannot be made here, or nil.
func partitionSupport() error {
	if os.Geteuid() != 0 {
		return errors.New("the partition scenario needs root (iptables, and nodes under their own uids)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return errors.New("the partition scenario needs iptables")
	}
	// Root in a container may still lack CAP_NET_ADMIN: try a chain.
	const probe = "QLC-CHAOS-PROBE"
	_ = exec.Command("iptables", "-X", probe).Run()
	if err := iptables("-N", probe); err != nil {
		return fmt.Errorf("the partition scenario cannot change the firewall here: %w", err)
	}
	_ = exec.Command("iptables", "-X", probe).Run()
	return nil
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chaos: iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// firewallUp creates the scenario's (empty) chains and hooks them in.
func firewallUp() error {
	firewallDown() // leftovers of an interrupted run
	for _, c := range []struct{ chain, hook string }{{chainOut, "OUTPUT"}, {chainIn, "INPUT"}} {
		if err := iptables("-N", c.chain); err != nil {
			return err
		}
		if err := iptables("-I", c.hook, "1", "-j", c.chain); err != nil {
			return err
		}
	}
	return nil
}

// firewallDown removes the chains (errors ignored: they may not exist).
func firewallDown() {
	for _, c := range []struct{ chain, hook string }{{chainOut, "OUTPUT"}, {chainIn, "INPUT"}} {
		_ = exec.Command("iptables", "-D", c.hook, "-j", c.chain).Run()
		_ = exec.Command("iptables", "-F", c.chain).Run()
		_ = exec.Command("iptables", "-X", c.chain).Run()
	}
}

// cutOff isolates node p (started with a uid of its own).
func cutOff(p *proc) error {
	if p.uid == 0 {
		return fmt.Errorf("chaos: %s has no uid of its own", p.name)
	}
	_, gport, _ := net.SplitHostPort(p.gossip)
	_, aport, _ := net.SplitHostPort(p.act)
	if err := iptables("-A", chainOut, "-o", "lo", "-m", "owner", "--uid-owner", fmt.Sprint(p.uid), "-j", "DROP"); err != nil {
		return err
	}
	if err := iptables("-A", chainIn, "-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", gport+","+aport, "-j", "DROP"); err != nil {
		return err
	}
	return iptables("-A", chainIn, "-i", "lo", "-p", "udp", "--dport", gport, "-j", "DROP")
}

// heal removes every cut.
func heal() error {
	if err := iptables("-F", chainOut); err != nil {
		return err
	}
	return iptables("-F", chainIn)
}
