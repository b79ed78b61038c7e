package main

import (
	"github.com/qlc-project/qlc/gateway"
	"github.com/qlc-project/qlc/topology"
)

// consoleCluster shows the gateway's membership to the cluster console.
type consoleCluster struct{ m *topology.Membership }

func (c consoleCluster) Members() []gateway.ConsoleMember {
	ms := c.m.Members()
	out := make([]gateway.ConsoleMember, len(ms))
	for i, m := range ms {
		out[i] = gateway.ConsoleMember{Name: m.Name, RemoteAddr: m.RemoteAddr, GossipAddr: m.GossipAddr, Version: m.Version,
			Kinds: m.Kinds, Features: m.Features, Load: m.Load, Draining: m.Draining}
	}
	return out
}

func (c consoleCluster) Suspects() []string       { return c.m.Suspects() }
func (c consoleCluster) Changed() <-chan struct{} { return c.m.Changed() }
func (c consoleCluster) LimiterHost(tenant string) (string, string, bool) {
	return c.m.LimiterHost(tenant)
}
