package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
)

// LimiterClient asks tenant limiters to admit runs and settles them: a
// gateway's side of the tenant limits. Its methods are safe for concurrent
// use and block until the limiter answers or ctx ends; it starts no
// goroutine.
type LimiterClient struct {
	system *actor.ActorSystem
	placer LimiterPlacer // nil: this process's limiters
	logger *slog.Logger
}

// NewLimiterClient returns a client sending from system to the limiters
// placer names (the cluster's Topology), or with a nil placer to this
// process's own.
func NewLimiterClient(system *actor.ActorSystem, placer LimiterPlacer, logger *slog.Logger) *LimiterClient {
	if logger == nil {
		logger = slog.Default()
	}
	return &LimiterClient{system: system, placer: placer, logger: logger}
}

// limiterPID is tenant's limiter parent: on the host the LimiterPlacer
// names, or in this process without one.
func (c *LimiterClient) limiterPID(tenant string) (*actor.PID, string, error) {
	if c.placer == nil {
		return actor.NewPID(c.system.Address(), limitersName), "", nil
	}
	addr, view, ok := c.placer.LimiterHost(tenant)
	if !ok {
		return nil, "", ErrNoLimiter
	}
	return actor.NewPID(addr, limitersName), view, nil
}

// viewMismatch is AdmitReply.Limit when the limiter's node sees another set
// of limiter hosts than the gateway: not a refusal, ask again.
const viewMismatch = "view_mismatch"

// admitAttempt bounds one try of Admit: a limiter whose node just died
// does not answer, and the next try goes to the new owner.
const admitAttempt = 600 * time.Millisecond

// Admit asks the tenant's limiter for a run (the view is filled in here),
// trying again, at the owner of the moment, until ctx ends. The caller has
// recorded the reservation in its ledger first. A repeated Admit is
// answered as the first (the limiter knows the runs it granted). m is not
// changed: each try sends its own copy (an earlier one may still be on its
// way through the transport).
func (c *LimiterClient) Admit(ctx context.Context, m *messages.Admit) (reply *messages.AdmitReply, err error) {
	var tc map[string]string
	if trace.SpanContextFromContext(ctx).IsValid() {
		// A traced caller: one client span for the whole exchange, every
		// try its child's context.
		var span trace.Span
		ctx, span = startSpan(ctx, "qlc.limiter.admit", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attrTenant.String(m.Tenant), attribute.Bool("qlc.limiter.precheck", m.Precheck)))
		tc = tracing.Inject(ctx)
		defer func() {
			switch {
			case err != nil:
				endSpan(&span, "limiter_unavailable", err.Error())
			default:
				span.SetAttributes(attribute.Bool("qlc.limiter.ok", reply.Ok))
				endSpan(&span, "", "")
			}
		}()
	}
	for {
		pid, view, err := c.limiterPID(m.Tenant)
		if err != nil {
			return nil, err
		}
		try := proto.Clone(m).(*messages.Admit)
		if c.placer != nil {
			try.View = view
		}
		if tc != nil {
			try.TraceContext = tc
		}
		actx, cancel := context.WithTimeout(ctx, admitAttempt)
		r, err := request(c.system, actx, pid, try)
		cancel()
		if err == nil {
			reply, ok := r.(*messages.AdmitReply)
			if !ok {
				return nil, fmt.Errorf("%w: answered %T", ErrNoLimiter, r)
			}
			if reply.Limit != viewMismatch && reply.Limit != quotaUnavailable {
				return reply, nil
			}
			err = errors.New(reply.Message) // membership is settling: ask again
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoLimiter, err)
		}
		c.logger.Warn("tenant limiter did not answer; asking again", "tenant", m.Tenant, "host", pid.Address, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoLimiter, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Settle tells the tenant's limiter a run's real token count, retrying a
// lost message a few times (the transport is at-most-once). A limiter that
// never hears it still learns the count from the ledger when it rebuilds.
func (c *LimiterClient) Settle(ctx context.Context, tenant, runID string, tokens int64) error {
	var err error
	for try := 0; try < 3; try++ {
		var pid *actor.PID
		if pid, _, err = c.limiterPID(tenant); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = request(c.system, sctx, pid, &messages.Settle{Tenant: tenant, RunId: runID, Tokens: tokens})
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: settle %s: %w", ErrNoLimiter, runID, err)
}
