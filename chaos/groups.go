package main

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"
)

// Group partitions of local processes (the split and asymmetric
// scenarios). Unlike partition.go, which cuts one node off every peer, these
// drop only the traffic between two sets of processes, in one direction or
// both, so each side keeps talking within itself.
//
// A packet on loopback has the same address at both ends, so the sender is
// told by its uid (owner match, OUTPUT) and the receiver by its port: a
// request goes to the receiver's gossip or actor port; an answer on a
// connection the receiver opened goes to an ephemeral port, and is told by
// the connection's mark instead. Every connection is marked, on its first
// packet, with a number of the process that opened it (markOf); an answer
// from "from" on a connection marked as "to"'s is dropped. So "from → to"
// drops every byte from to: requests, answers and ACKs alike, and a TCP
// connection between them stalls in that direction at once.
//
// The gateway runs as root (uid 0, shared with this program); its packets
// are told apart from this program's by the ports they go to (this program
// never talks to a gossip or actor port) and by its own ports as sources.

const (
	chainMark  = "QLC-GROUP-MARK"
	chainGroup = "QLC-GROUP-DROP"
	// groupUIDOffset sets the group scenarios' node uids apart from the
	// partition scenario's (firstNodeUID+i): a partition run at the same
	// time on this machine must not drop this one's packets, nor the other
	// way round.
	groupUIDOffset = 1000
	// gatewayMark marks the connections uid 0 (the gateway) opens.
	gatewayMark = firstNodeUID + groupUIDOffset
	// markedUIDs is how many node uids get a mark rule up front (nodes of a
	// group scenario are never replaced; fenced ones rejoin as the same
	// process).
	markedUIDs = 32
)

// groupScenarios are the scenarios of group partitions; not part of "all"
// (make chaos runs them on their own, make chaos-smoke does not).
var groupScenarios = []string{"split", "asymmetric"}

// member is one process of a group partition as the firewall sees it.
type member struct {
	name  string
	uid   uint32 // 0: the gateway (root)
	ports []string
}

// markOf is the connection mark of the connections m opens.
func markOf(uid uint32) uint32 {
	if uid == 0 {
		return gatewayMark
	}
	return uid
}

func memberOf(p *proc) (member, error) {
	_, g, err1 := net.SplitHostPort(p.gossip)
	_, a, err2 := net.SplitHostPort(p.act)
	if err := errors.Join(err1, err2); err != nil {
		return member{}, fmt.Errorf("chaos: %s: addresses %q %q: %w", p.name, p.gossip, p.act, err)
	}
	return member{name: p.name, uid: p.uid, ports: []string{g, a}}, nil
}

// dropRules are the iptables rules (after "-A chain") that drop every
// packet from "from" to "to": requests to to's ports (TCP and the gossip's
// UDP) and answers from from's ports on connections to opened.
func dropRules(from, to member) [][]string {
	owner := []string{"-o", "lo", "-m", "owner", "--uid-owner", fmt.Sprint(from.uid)}
	with := func(tail ...string) []string { return append(append([]string(nil), owner...), tail...) }
	dports, sports := strings.Join(to.ports, ","), strings.Join(from.ports, ",")
	return [][]string{
		with("-p", "tcp", "-m", "multiport", "--dports", dports, "-j", "DROP"),
		with("-p", "udp", "-m", "multiport", "--dports", dports, "-j", "DROP"),
		with("-p", "tcp", "-m", "multiport", "--sports", sports, "-m", "connmark", "--mark", fmt.Sprint(markOf(to.uid)), "-j", "DROP"),
	}
}

// splitRules drop everything between the groups a and b, both ways.
func splitRules(a, b []member) [][]string {
	var out [][]string
	for _, x := range a {
		for _, y := range b {
			out = append(out, dropRules(x, y)...)
			out = append(out, dropRules(y, x)...)
		}
	}
	return out
}

// markRules mark, on its first packet, each connection a process of the
// scenario opens: uid 0 (the gateway) and node uids first..first+n-1.
func markRules(first uint32, n int) [][]string {
	rule := func(uid uint32) []string {
		return []string{"-o", "lo", "-m", "owner", "--uid-owner", fmt.Sprint(uid), "-m", "connmark", "--mark", "0",
			"-j", "CONNMARK", "--set-mark", fmt.Sprint(markOf(uid))}
	}
	out := [][]string{rule(0)}
	for i := 0; i < n; i++ {
		out = append(out, rule(first+uint32(i)))
	}
	return out
}

// groupFirewallUp creates the group chains: the mark rules, always on, and
// the (empty) drop chain, both hooked into OUTPUT (marks first).
func groupFirewallUp() error {
	groupFirewallDown()
	for _, ch := range []string{chainGroup, chainMark} { // inserted at 1: mark ends up first
		if err := iptables("-N", ch); err != nil {
			return err
		}
		if err := iptables("-I", "OUTPUT", "1", "-j", ch); err != nil {
			return err
		}
	}
	for _, r := range markRules(firstNodeUID+groupUIDOffset+1, markedUIDs) {
		if err := iptables(append([]string{"-A", chainMark}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// groupFirewallDown removes the group chains (errors ignored).
func groupFirewallDown() {
	for _, ch := range []string{chainMark, chainGroup} {
		_ = exec.Command("iptables", "-D", "OUTPUT", "-j", ch).Run()
		_ = exec.Command("iptables", "-F", ch).Run()
		_ = exec.Command("iptables", "-X", ch).Run()
	}
}

// groupFleet is a backend that can make group partitions.
type groupFleet interface {
	// gateway is the gateway's process.
	gateway() *proc
	// dropBetween drops the traffic of each ordered pair (from[i] → to[j]);
	// both ways when both is set. It returns the time just before.
	dropBetween(from, to []*proc, both bool) (time.Time, error)
	// healGroups removes every drop.
	healGroups() error
	// bystanders are members the scenarios send nothing to (compose's
	// second gateway): they stay on the gateway's side of a split.
	bystanders() []*proc
}

var _ groupFleet = (*localCluster)(nil)

func (c *localCluster) bystanders() []*proc { return nil }

// gateway is the gateway's process (both backends).
func (r *roster) gateway() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gw
}

func (c *localCluster) dropBetween(from, to []*proc, both bool) (time.Time, error) {
	conv := func(ps []*proc) ([]member, error) {
		var out []member
		for _, p := range ps {
			m, err := memberOf(p)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	a, err := conv(from)
	if err != nil {
		return time.Now(), err
	}
	b, err := conv(to)
	if err != nil {
		return time.Now(), err
	}
	var rules [][]string
	if both {
		rules = splitRules(a, b)
	} else {
		for _, x := range a {
			for _, y := range b {
				rules = append(rules, dropRules(x, y)...)
			}
		}
	}
	at := time.Now()
	return at, iptablesAppend(chainGroup, rules)
}

// iptablesAppend appends rules to chain in one iptables-restore (one
// commit: the cut takes effect at once, not rule by rule).
func iptablesAppend(chain string, rules [][]string) error {
	var b strings.Builder
	b.WriteString(restoreInput(chain, rules))
	cmd := exec.Command("iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: iptables-restore: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// restoreInput is iptables-restore's input appending rules to chain of the
// filter table.
func restoreInput(chain string, rules [][]string) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range rules {
		b.WriteString("-A " + chain + " " + strings.Join(r, " ") + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func (c *localCluster) healGroups() error { return iptables("-F", chainGroup) }
