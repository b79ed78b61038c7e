package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/messages"
)

// ServicesConfig configures Services.
type ServicesConfig struct {
	// Workers bounds the requests served at once (each may block on the
	// gateway's database), across every service of the process. When all
	// are busy, a LedgerQuery is answered at once with the error "busy"
	// (the limiter reads the ledgers again after ledgerRetry, and admits
	// nothing without them) and a RegistryChange is dropped (changes are
	// at-most-once already: the next pull repairs them). Default 16.
	Workers int
	// Logger: default slog.Default().
	Logger *slog.Logger
}

// Services serves a gateway's ledger and tenant registry to the cluster
// (tenant limiters, other gateways) and sends registry changes: the RPC
// side of a gateway. Its methods are safe for concurrent use; Serve* do not
// block, SendRegistry blocks for the answer when it wants one.
//
// Goroutines: one per request being served, at most Workers at a time;
// Close waits for them.
type Services struct {
	system *actor.ActorSystem
	cfg    ServicesConfig
	slots  chan struct{} // a token per request being served (cap Workers)

	// mu guards closed and the Add side of wg.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// NewServices returns Services on system.
func NewServices(system *actor.ActorSystem, cfg ServicesConfig) *Services {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Services{system: system, cfg: cfg, slots: make(chan struct{}, cfg.Workers)}
}

// Close stops serving (later requests get the busy answer) and waits for
// the requests being served. Idempotent.
func (s *Services) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// start runs work on a goroutine Close waits for, if a worker is free and
// Services is open; else it returns false.
func (s *Services) start(work func()) bool {
	select {
	case s.slots <- struct{}{}:
	default:
		return false
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.slots
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			<-s.slots
			s.wg.Done()
		}()
		work()
	}()
	return true
}

// service is one served name: fn answers the messages it accepts, busy
// answers them when no worker is free (nil: no answer).
type service struct {
	name   string
	accept func(proto.Message) bool
	fn     func(proto.Message) proto.Message
	busy   func(proto.Message) proto.Message
}

// serviceActor answers requests by calling fn off the actor's goroutine (fn
// may block on a database), on a bounded pool of workers (Services),
// replying to the sender.
type serviceActor struct {
	s   *Services
	svc service
}

func (a *serviceActor) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(proto.Message)
	if !ok || !a.svc.accept(m) {
		return
	}
	sender, root := ctx.Sender(), ctx.ActorSystem().Root
	if a.s.start(func() {
		reply := a.svc.fn(m)
		if sender != nil && reply != nil {
			root.Send(sender, reply)
		}
	}) {
		return
	}
	a.s.cfg.Logger.Warn("every service worker is busy; answering busy", "service", a.svc.name, "workers", a.s.cfg.Workers)
	if reply := a.svc.busy(m); sender != nil && reply != nil {
		ctx.Send(sender, reply)
	}
}

// ServeLedger makes this process answer LedgerQuery with fn (a gateway's
// usage ledger), for the tenant limiters of the cluster.
func (s *Services) ServeLedger(fn func(*messages.LedgerQuery) *messages.LedgerState) error {
	return s.serve(ledgerName, service{
		accept: func(m proto.Message) bool { _, ok := m.(*messages.LedgerQuery); return ok },
		fn:     func(m proto.Message) proto.Message { return fn(m.(*messages.LedgerQuery)) },
		busy:   func(proto.Message) proto.Message { return &messages.LedgerState{Error: "busy"} },
	})
}

// ServeRegistry makes this process apply RegistryChange messages from other
// gateways with fn; fn's answer (nil for none) goes back to the sender.
func (s *Services) ServeRegistry(fn func(*messages.RegistryChange) *messages.RegistryChange) error {
	return s.serve(registryName, service{
		accept: func(m proto.Message) bool { _, ok := m.(*messages.RegistryChange); return ok },
		fn: func(m proto.Message) proto.Message {
			if r := fn(m.(*messages.RegistryChange)); r != nil {
				return r
			}
			return nil
		},
		busy: func(proto.Message) proto.Message { return nil },
	})
}

// usageName is the actor on every gateway that answers UsageQuery.
const usageName = "qlc-usage"

// ServeUsage makes this process answer other gateways' UsageQuery with
// fn (its own ledger only).
func (s *Services) ServeUsage(fn func(*messages.UsageQuery) *messages.UsageReply) error {
	return s.serve(usageName, service{
		accept: func(m proto.Message) bool { _, ok := m.(*messages.UsageQuery); return ok },
		fn:     func(m proto.Message) proto.Message { return fn(m.(*messages.UsageQuery)) },
		busy:   func(proto.Message) proto.Message { return &messages.UsageReply{Error: "busy"} },
	})
}

// AskUsage asks the gateway at addr for its ledger's usage, waiting until
// ctx's deadline (2 s without one).
func (s *Services) AskUsage(ctx context.Context, addr string, q *messages.UsageQuery) (*messages.UsageReply, error) {
	r, err := request(s.system, ctx, actor.NewPID(addr, usageName), q)
	if err != nil {
		return nil, err
	}
	u, ok := r.(*messages.UsageReply)
	if !ok {
		return nil, fmt.Errorf("actors: usage answered %T", r)
	}
	if u.Error != "" {
		return nil, fmt.Errorf("actors: usage at %s: %s", addr, u.Error)
	}
	return u, nil
}

func (s *Services) serve(name string, svc service) error {
	svc.name = name
	_, err := s.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &serviceActor{s: s, svc: svc} }), name)
	if err != nil {
		return fmt.Errorf("actors: serve %s: %w", name, err)
	}
	return nil
}

// SendRegistry sends a registry change to the gateway at addr, and waits
// for its answer when change.WantAll.
func (s *Services) SendRegistry(ctx context.Context, addr string, change *messages.RegistryChange) (*messages.RegistryChange, error) {
	pid := actor.NewPID(addr, registryName)
	if !change.WantAll {
		s.system.Root.Send(pid, change)
		return nil, nil
	}
	r, err := request(s.system, ctx, pid, change)
	if err != nil {
		return nil, err
	}
	rc, ok := r.(*messages.RegistryChange)
	if !ok {
		return nil, fmt.Errorf("actors: registry answered %T", r)
	}
	return rc, nil
}

// request sends m to pid from system's root and waits for the answer until
// ctx's deadline (2 s without one).
func request(system *actor.ActorSystem, ctx context.Context, pid *actor.PID, m proto.Message) (any, error) {
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	return system.Root.RequestFuture(pid, m, timeout).Result()
}
