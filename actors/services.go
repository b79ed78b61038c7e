package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/messages"
)

// serviceActor answers requests by calling fn off the actor's goroutine (fn
// may block on a database), replying to the sender.
type serviceActor struct {
	fn func(proto.Message) proto.Message
}

func (s *serviceActor) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(proto.Message)
	if !ok {
		return
	}
	sender, root := ctx.Sender(), ctx.ActorSystem().Root
	go func() {
		reply := s.fn(m)
		if sender != nil && reply != nil {
			root.Send(sender, reply)
		}
	}()
}

// ServeLedger makes this process answer LedgerQuery with fn (a gateway's
// usage ledger), for the tenant limiters of the cluster.
func (e *Engine) ServeLedger(fn func(*messages.LedgerQuery) *messages.LedgerState) error {
	return e.serve(ledgerName, func(m proto.Message) proto.Message {
		if q, ok := m.(*messages.LedgerQuery); ok {
			return fn(q)
		}
		return nil
	})
}

// ServeRegistry makes this process apply RegistryChange messages from other
// gateways with fn; fn's answer (nil for none) goes back to the sender.
func (e *Engine) ServeRegistry(fn func(*messages.RegistryChange) *messages.RegistryChange) error {
	return e.serve(registryName, func(m proto.Message) proto.Message {
		if c, ok := m.(*messages.RegistryChange); ok {
			if r := fn(c); r != nil {
				return r
			}
		}
		return nil
	})
}

func (e *Engine) serve(name string, fn func(proto.Message) proto.Message) error {
	_, err := e.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &serviceActor{fn: fn} }), name)
	if err != nil {
		return fmt.Errorf("actors: serve %s: %w", name, err)
	}
	return nil
}

// SendRegistry sends a registry change to the gateway at addr, and waits
// for its answer when change.WantAll.
func (e *Engine) SendRegistry(ctx context.Context, addr string, change *messages.RegistryChange) (*messages.RegistryChange, error) {
	pid := actor.NewPID(addr, registryName)
	if !change.WantAll {
		e.system.Root.Send(pid, change)
		return nil, nil
	}
	r, err := e.request(ctx, pid, change)
	if err != nil {
		return nil, err
	}
	rc, ok := r.(*messages.RegistryChange)
	if !ok {
		return nil, fmt.Errorf("actors: registry answered %T", r)
	}
	return rc, nil
}

func (e *Engine) request(ctx context.Context, pid *actor.PID, m proto.Message) (any, error) {
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	return e.system.Root.RequestFuture(pid, m, timeout).Result()
}

