package actors

import (
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Tenants' own provider keys (bring your own key, docs/design.md): a run
// carries them sealed (StartRun.provider_keys), a step offered to a stage
// host carries the one of its endpoint (StartStep.provider_key), and only
// the worker's attempt opens it, into Request.APIKey (a stagework.Secret,
// which never prints). No clear key is logged, put in an event, or sent.

// providerKeyFor returns the run's sealed key for endpoint, or nil.
func providerKeyFor(keys []*messages.SealedSecret, endpoint string) *messages.SealedSecret {
	for _, k := range keys {
		if k.GetEndpoint() == endpoint {
			return k
		}
	}
	return nil
}

// openProviderKey opens sk, sealed for tenant and its endpoint; nil sk
// gives "" (the endpoint's own key). The error says why without the key.
func openProviderKey(ring *sealed.Ring, tenant string, sk *messages.SealedSecret) (stagework.Secret, error) {
	if sk == nil {
		return "", nil
	}
	b, err := ring.Open(sealed.Box{KeyID: sk.GetKeyId(), Data: sk.GetBox()}, sealed.AAD(tenant, sk.GetEndpoint()))
	if err != nil {
		return "", fmt.Errorf("the tenant's key for endpoint %q cannot be opened on this node: %w", sk.GetEndpoint(), err)
	}
	return stagework.Secret(b), nil
}

// withProviderKey returns keys with endpoint's key replaced by sk, or
// removed when sk is nil. keys is not modified (others may hold it).
func withProviderKey(keys []*messages.SealedSecret, endpoint string, sk *messages.SealedSecret) []*messages.SealedSecret {
	out := make([]*messages.SealedSecret, 0, len(keys)+1)
	for _, k := range keys {
		if k.GetEndpoint() != endpoint {
			out = append(out, k)
		}
	}
	if sk != nil {
		out = append(out, &messages.SealedSecret{Endpoint: endpoint, KeyId: sk.GetKeyId(), Box: sk.GetBox()})
	}
	return out
}

// ProviderKeyChanged tells the unfinished runs of tenant started through
// this engine, whose profile calls endpoint, that the tenant put (sk, sealed)
// or deleted (nil) its own key for it: their next attempts on the endpoint
// use the new key, or the endpoint's own. A failover after it starts the
// new coordinator with the change. It returns how many runs were told; it
// does not block (the coordinators are sent a message).
func (e *Engine) ProviderKeyChanged(tenant, endpoint string, sk *messages.SealedSecret) int {
	e.mu.Lock()
	var hubs []*Hub
	for _, h := range e.hubs {
		if h.Tenant == tenant {
			hubs = append(hubs, h)
		}
	}
	e.mu.Unlock()
	n := 0
	for _, h := range hubs {
		p, err := e.profiles.resolve(h.Profile, h.profileDefinition())
		if err != nil || !slices.Contains(p.Endpoints(), endpoint) {
			continue
		}
		if to := h.setProviderKey(endpoint, sk); to != nil {
			e.system.Root.Send(to, &messages.ProviderKeyChanged{RunId: h.RunID, Endpoint: endpoint, ProviderKey: sk})
			n++
		}
	}
	return n
}

// setProviderKey records a changed provider key in the run's start message
// (which a failover starts the next coordinator with) and returns the
// coordinator to tell; nil if the run ended, replays another run's log, or
// is not this hub's to start (a hub attached to a run started elsewhere).
func (h *Hub) setProviderKey(endpoint string, sk *messages.SealedSecret) *actor.PID {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.terminal || h.start == nil || h.start.GetCachedFrom() != "" {
		return nil
	}
	start := proto.Clone(h.start).(*messages.StartRun) // copy on write: readers clone it under the lock
	start.ProviderKeys = withProviderKey(start.ProviderKeys, endpoint, sk)
	h.start = start
	return h.coordinator
}

// startMessage returns a copy of the message the run was started with.
func (h *Hub) startMessage() *messages.StartRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	return proto.Clone(h.start).(*messages.StartRun)
}
