package actors

import (
	"fmt"

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
