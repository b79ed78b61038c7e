package actors

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/quota"
)

// Tenant budgets under consensus (issue 17): with Config.Quota, this node is
// one of the three members of a Raft group (package quota) that allocates
// each tenant's token budget in slices to the nodes hosting its limiter.
// The group's messages travel over the actor transport (authenticated with
// the cluster key) to the quota actor of each member; members find each
// other's addresses in the membership (KindQuotaPeer).

// quotaName is the well-known name of a member's quota actor.
const quotaName = "qlc-quota"

// KindQuota is announced by every member of the quota group: when any
// member announces it, tenant limiters are placed among these members only
// (their grants come from slices the group allocated to them).
const KindQuota = "quota"

// kindQuotaPeerPrefix + the Raft id is announced by the member with that id.
const kindQuotaPeerPrefix = "quota-"

// KindQuotaPeer is the kind the quota group's member id announces.
func KindQuotaPeer(id uint64) string { return kindQuotaPeerPrefix + strconv.FormatUint(id, 10) }

// QuotaPeerID parses a KindQuotaPeer kind (ok false for another kind).
func QuotaPeerID(kind string) (uint64, bool) {
	rest, ok := strings.CutPrefix(kind, kindQuotaPeerPrefix)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	return id, err == nil && id > 0
}

// QuotaConfig puts a node in the quota group.
type QuotaConfig struct {
	// ID is the node's Raft id: 1, 2 or 3 (the group is always those
	// three). Two live processes must never share one.
	ID uint64
	// Dir keeps the node's Raft log across restarts (required: a member
	// that forgets its votes and acknowledgements breaks Raft's safety).
	Dir string
}

// QuotaPeers is implemented by a Topology that knows where the quota
// group's members are: the actor address of member id. Non-blocking,
// concurrent.
type QuotaPeers interface {
	QuotaPeer(id uint64) (addr string, ok bool)
}

// budgetSlices is what a tenant limiter needs of the quota group
// (*quota.Node): Take, Release and Available do not block; Acquire and
// GiveBack wait for the group.
type budgetSlices interface {
	Take(tenant string, period, tokens int64) bool
	Free(tenant string, period int64) int64
	Release(tenant string, period, tokens int64)
	Available(tenant string, period, budget int64) int64
	Acquire(ctx context.Context, tenant string, period, budget, need, want int64) (int64, error)
	GiveBack(ctx context.Context, tenant string, period int64) error
}

var _ budgetSlices = (*quota.Node)(nil)

// quotaActor hands the group's messages to the local member.
type quotaActor struct{ node *quota.Node }

func (q *quotaActor) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*messages.QuotaMessage); ok {
		if err := q.node.Step(m.GetData()); err != nil {
			ctx.Logger().Debug("quota: message not taken", "error", err)
		}
	}
}

// startQuota starts this node's member of the quota group (after the actor
// transport is up: its messages leave through it).
func (e *Engine) startQuota(cfg *QuotaConfig) error {
	if cfg.Dir == "" {
		return fmt.Errorf("actors: the quota group needs a log directory")
	}
	peers, ok := e.topo.(QuotaPeers)
	if !ok {
		return fmt.Errorf("actors: the quota group needs a Topology that knows its peers")
	}
	qc := quota.DefaultConfig()
	qc.ID, qc.Dir, qc.Logger = cfg.ID, cfg.Dir, e.logger
	root := e.system.Root
	qc.Send = func(to uint64, data []byte) {
		if addr, ok := peers.QuotaPeer(to); ok {
			root.Send(actor.NewPID(addr, quotaName), &messages.QuotaMessage{Data: data})
		}
	}
	n, err := quota.Start(qc)
	if err != nil {
		return err
	}
	if _, err := root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &quotaActor{node: n} },
		actor.WithMailbox(e.metrics.mailbox("quota"))), quotaName); err != nil {
		n.Stop()
		return fmt.Errorf("actors: quota actor: %w", err)
	}
	e.quota = n
	return nil
}
