package cluster

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the qlc_cluster_* collectors. Some counters are derived from memberlist's log lines
// (memberlist reports suspicions only there and through the global go-metrics sink, which we do not use).
type metrics struct {
	members         prometheus.Gauge
	tombstoned      prometheus.Gauge
	suspicions      prometheus.Counter
	suspectTimeouts prometheus.Counter
	refutations     prometheus.Counter
	fencings        prometheus.Counter
	refusedAlive    prometheus.Counter
	noticesSent     prometheus.Counter
	topologies      prometheus.Counter
	joins           prometheus.Counter
	leaves          prometheus.Counter
	placements      *prometheus.CounterVec
	rejected        prometheus.Counter
	joinFailures    prometheus.Counter
	rejoins         *prometheus.CounterVec
	pushPulls       *prometheus.CounterVec
	loadSent        prometheus.Counter
	loadReceived    *prometheus.CounterVec
	metaUpdates     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	c := func(name, help string) prometheus.Counter {
		return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "qlc_cluster_" + name, Help: help})).(prometheus.Counter)
	}
	g := func(name, help string) prometheus.Gauge {
		return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "qlc_cluster_" + name, Help: help})).(prometheus.Gauge)
	}
	return &metrics{
		members:         g("members_alive", "Members alive or suspect in this node's view, self included."),
		tombstoned:      g("members_tombstoned", "Names declared dead or left that this node refuses for the tombstone TTL."),
		suspicions:      c("suspicions_total", "Members this node suspected after a failed probe (from memberlist's log)."),
		suspectTimeouts: c("suspect_timeouts_total", "Suspects this node declared dead when their suspicion timed out (from memberlist's log)."),
		refutations:     c("refutations_total", "Suspect or dead accusations about this node that memberlist refuted (from memberlist's log)."),
		fencings:        c("fencings_total", "Times this process fenced itself after learning it was declared dead."),
		refusedAlive:    c("refused_alive_total", "Alive messages refused because the name is tombstoned (a dead identity trying to come back)."),
		noticesSent:     c("fence_notices_sent_total", "Fence notices sent to a refused identity."),
		topologies:      c("topology_updates_total", "Topology snapshots delivered on Updates."),
		joins:           c("member_joins_total", "Members that joined this node's view."),
		leaves:          c("member_leaves_total", "Members that left this node's view (left, dead, or fenced)."),
		rejected:        c("rejected_traffic_total", "Packets or streams refused because they did not decrypt with the cluster key or had another cluster's label (from memberlist's log)."),
		joinFailures:    c("join_failures_total", "Join or re-join attempts in which no seed answered."),
		loadSent:        c("load_announcements_total", "Load announcements this member gossiped (user messages; at most one per LoadUpdateInterval)."),
		metaUpdates:     c("metadata_updates_total", "Metadata announcements of this member (draining, re-announcement after a member left); each raises its incarnation."),
		loadReceived: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_cluster_load_messages_received_total",
			Help: "Load messages received by result: applied (newer; passed on), ignored (not newer, or its sender not in the view), own, bad (undecodable); push_pull counts the loads taken from a push/pull state (anti-entropy).",
		}, []string{"result"})).(*prometheus.CounterVec),
		rejoins: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_cluster_rejoins_total",
			Help: "Background joins by reason: missing_seed (a seed no member of the view has), stall (this process was not scheduled long enough to be declared dead), resync (the rare safety-net join of a random seed).",
		}, []string{"reason"})).(*prometheus.CounterVec),
		pushPulls: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_cluster_push_pulls_total",
			Help: "Full state exchanges this node took part in, either side, by kind: join (a join or re-join) or periodic (memberlist's PushPullInterval). Each carries the whole member list.",
		}, []string{"kind"})).(*prometheus.CounterVec),
		placements: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_cluster_placements_total",
			Help: "Placement decisions by method (owner, least_loaded), kind, and result (ok, none).",
		}, []string{"method", "kind", "result"})).(*prometheus.CounterVec),
	}
}

// register registers col, or returns the collector already registered under the same description (a new
// Cluster after fencing keeps counting on the same series).
func register(reg prometheus.Registerer, col prometheus.Collector) prometheus.Collector {
	if reg == nil {
		return col
	}
	if err := reg.Register(col); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector
		}
		// A conflicting description is a programming error in this package; keep an unregistered one.
		return col
	}
	return col
}

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog records and counts the lines
// that carry failure-detector events.
type logWriter struct {
	log *slog.Logger
	m   *metrics
	// suspect, if set, is told the member named by a failed probe.
	suspect func(name string)
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[DEBUG]"):
		level = slog.LevelDebug
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	}
	if i := strings.Index(line, "] "); i >= 0 && i < 8 {
		line = line[i+2:]
	}
	switch {
	case strings.Contains(line, "Suspect ") && strings.Contains(line, " has failed"):
		w.m.suspicions.Inc()
		if w.suspect != nil {
			rest := line[strings.Index(line, "Suspect ")+len("Suspect "):]
			if name, _, ok := strings.Cut(rest, " has failed"); ok {
				w.suspect(name)
			}
		}
	case strings.Contains(line, "as failed, suspect timeout reached"):
		w.m.suspectTimeouts.Inc()
	case strings.Contains(line, "Refuting a"):
		w.m.refutations.Inc()
	case strings.Contains(strings.ToLower(line), "decrypt") || strings.Contains(line, "unacceptable label"):
		w.m.rejected.Inc()
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
