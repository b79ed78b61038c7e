package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
)

// Tenant limiters: one actor per tenant holds the tenant's request, token,
// concurrency and budget counters for the whole cluster. Gateways ask it
// (Admit) before starting a run and tell it the run's real token count when
// the run ends (Settle); the reservation made at admission is an upper bound
// of what the run can use, so concurrent admissions can never overrun a
// budget.
//
// Where a tenant's limiter lives is decided by the gateway (LimiterPlacer:
// the rendezvous owner of the tenant among the nodes). The limiter keeps no
// durable state of its own: when it starts, or when the set of limiter hosts
// has changed (its ownership may have moved), it rebuilds its counters from
// the gateways' ledgers (LedgerQuery), which record every reservation before
// it is asked for, and every settled run.

// limitersName is the well-known name of every process's limiter parent.
const limitersName = "qlc-limiters"

// ledgerName is the well-known name of a gateway's ledger actor.
const ledgerName = "qlc-ledger"

// registryName is the well-known name of a gateway's tenant registry actor.
const registryName = "qlc-registry"

// Errors of the tenant services.
var (
	ErrNoLimiter = errors.New("actors: no tenant limiter is reachable")
	ErrNoLedger  = errors.New("actors: this process serves no ledger")
)

// limiterWindow is the span of the per-minute limits.
const limiterWindow = time.Minute

// limiterIdle is how long a tenant's limiter lives without a message; a
// later one rebuilds from the ledgers.
const limiterIdle = 2 * time.Minute

// ledgerTimeout bounds one gateway's answer to a LedgerQuery.
const ledgerTimeout = time.Second

// limiterParent routes Admit and Settle to per-tenant children, spawning
// them on first use (a virtual actor per tenant).
type limiterParent struct {
	ledgers func() []string // actor addresses of the processes serving ledgers
	// view, on a node, is this node's own view of the limiter hosts (the
	// LimiterPlacer's view for the tenant); nil: none (one process).
	view func(tenant string) string
	// mailbox makes the tenant limiters' mailboxes (bounded, mailbox.go).
	mailbox actor.MailboxProducer
	// spawn runs a limiter's ledger reads on a goroutine the engine's
	// Shutdown waits for (Engine.goOwned); false: shutting down, not run.
	spawn func(func()) bool
}

func (p *limiterParent) Receive(ctx actor.Context) {
	var tenant string
	switch m := ctx.Message().(type) {
	case *messages.Admit:
		tenant = m.Tenant
	case *messages.Settle:
		tenant = m.Tenant
	case stopHosted:
		for _, c := range ctx.Children() {
			ctx.Stop(c)
		}
		return
	default:
		return
	}
	if tenant == "" {
		ctx.Respond(&messages.AdmitReply{Message: "no tenant named"})
		return
	}
	name := ctx.Self().Id + "/" + tenant
	for _, c := range ctx.Children() {
		if c.Id == name {
			ctx.Forward(c)
			return
		}
	}
	if m, ok := ctx.Message().(*messages.Admit); ok && p.view != nil && m.View != "" {
		// A limiter decides only while the gateway's view of the limiter
		// hosts is this node's too: two nodes that each believe they own
		// the tenant (membership views that disagree) must not both grant.
		if own := p.view(tenant); own != m.View {
			ctx.Respond(&messages.AdmitReply{Limit: viewMismatch, RetryAfterMs: 50,
				Message: "the gateway's and this node's views of the cluster differ; ask again"})
			return
		}
	}
	pid, err := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &tenantLimiter{tenant: tenant, ledgers: p.ledgers, spawn: p.spawn, open: map[string]int64{}, granted: map[string]bool{}}
	}, actor.WithMailbox(p.mailbox)), tenant)
	if err != nil {
		ctx.Respond(&messages.AdmitReply{Message: "cannot start the tenant's limiter: " + err.Error()})
		return
	}
	ctx.Forward(pid)
}

// admitted is one run in the per-minute window.
type admitted struct {
	at     time.Time
	run    string
	tokens int64
}

// pendingMsg is a message that arrived while the limiter was rebuilding.
type pendingMsg struct {
	msg    proto.Message
	sender *actor.PID
}

// rebuilt carries the ledgers' answers back to the limiter.
type rebuilt struct {
	view, periodKey string
	period          int64
	states          []*messages.LedgerState
	failed          int
	now             time.Time
}

// refresh asks a limiter to re-read the ledgers (see ledgerRefresh).
type refresh struct{}

// reread repeats a rebuild that a ledger did not answer.
type reread struct {
	view   string
	period int64
}

// ledgerRetry is the pause before reading the ledgers again after one did
// not answer.
const ledgerRetry = 100 * time.Millisecond

// ledgerRefresh is when a limiter re-reads the ledgers while it holds
// reservations it learned only from them: their Admit may have been decided
// by another limiter (ownership moving) and refused there, in which case
// the gateway has dropped them and only a re-read frees them.
var ledgerRefresh = 15 * time.Second

// tenantLimiter holds one tenant's counters.
type tenantLimiter struct {
	tenant  string
	ledgers func() []string
	spawn   func(func()) bool // see limiterParent.spawn

	limits  *messages.TenantLimits
	built   bool
	view    string // the limiter hosts' view it was built under
	period  int64  // period_start_unix_ms the budget counters are for
	window  []admitted
	open    map[string]int64 // run id -> reserved tokens, until settled
	granted map[string]bool  // runs this limiter admitted (an Admit repeated for one is granted again)
	used    int64            // settled tokens in the period
	pending []pendingMsg
	busy    bool // a rebuild is under way
}

func (l *tenantLimiter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(limiterIdle)
	case *actor.ReceiveTimeout:
		if !l.busy {
			ctx.Stop(ctx.Self())
			return
		}
		ctx.SetReceiveTimeout(limiterIdle) // it fires once: idle again later
	case *messages.Admit:
		if m.GetLimits().GetVersion() >= l.limits.GetVersion() {
			l.limits = m.Limits
		}
		if l.busy || !l.built || m.View != l.view || (l.limits.GetTokenBudget() > 0 && m.PeriodStartUnixMs != l.period) {
			if len(l.pending) >= maxPendingAdmits {
				return // dropped like an Admit that finds the mailbox full: the gateway asks again
			}
			l.pending = append(l.pending, pendingMsg{msg: m, sender: ctx.Sender()})
			l.rebuild(ctx, m.View, m.PeriodStartUnixMs)
			return
		}
		ctx.Respond(l.admit(m, time.Now()))
	case *messages.Settle:
		if l.busy {
			l.pending = append(l.pending, pendingMsg{msg: m, sender: ctx.Sender()})
			return
		}
		l.settle(m)
		ctx.Respond(&messages.SettleAck{})
	case *refresh:
		if l.built && !l.busy {
			l.rebuild(ctx, l.view, l.period)
		}
	case *reread:
		if !l.busy {
			l.rebuild(ctx, m.view, m.period)
		}
	case *rebuilt:
		if m.failed > 0 {
			// A ledger did not answer: its reservations would be missing,
			// and deciding without them could overrun a budget. Ask again
			// (the gateway's Admit waits, or fails closed with a 503).
			l.busy = false
			l.logger(ctx).Warn("tenant limiter: a ledger did not answer; reading the ledgers again", "tenant", l.tenant, "failed", m.failed)
			self, root, view, period := ctx.Self(), ctx.ActorSystem().Root, m.view, m.period
			time.AfterFunc(ledgerRetry, func() { root.Send(self, &reread{view: view, period: period}) })
			return
		}
		l.apply(m)
		pending := l.pending
		l.pending = nil
		for _, p := range pending {
			switch pm := p.msg.(type) {
			case *messages.Admit:
				if pm.View != l.view || (l.limits.GetTokenBudget() > 0 && pm.PeriodStartUnixMs != l.period) {
					// Views disagree while membership settles: answer from
					// this state rather than rebuild again and again.
					l.view, l.period = pm.View, pm.PeriodStartUnixMs
				}
				reply := l.admit(pm, time.Now())
				if p.sender != nil {
					ctx.Send(p.sender, reply)
				}
			case *messages.Settle:
				l.settle(pm)
				if p.sender != nil {
					ctx.Send(p.sender, &messages.SettleAck{})
				}
			}
		}
		for run := range l.open {
			if !l.granted[run] {
				self, root := ctx.Self(), ctx.ActorSystem().Root
				time.AfterFunc(ledgerRefresh, func() { root.Send(self, &refresh{}) })
				break
			}
		}
	}
}

// rebuild asks every ledger for the tenant's recent usage and open
// reservations; the answers come back as a rebuilt message.
func (l *tenantLimiter) rebuild(ctx actor.Context, view string, periodStart int64) {
	if l.busy {
		return
	}
	l.busy = true
	self, system := ctx.Self(), ctx.ActorSystem()
	now := time.Now()
	q := &messages.LedgerQuery{Tenant: l.tenant, SinceUnixMs: now.Add(-limiterWindow).UnixMilli(), PeriodStartUnixMs: periodStart}
	hosts := l.ledgers()
	// A false spawn means the engine is shutting down: the limiter stays
	// busy and answers nothing more, as the process is going away.
	l.spawn(func() {
		out := &rebuilt{view: view, periodKey: fmt.Sprint(periodStart), period: periodStart, now: now}
		if len(hosts) == 0 {
			out.failed = 1 // no ledger known yet (membership still forming): not an empty ledger
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Go(func() {
				r, err := system.Root.RequestFuture(actor.NewPID(h, ledgerName), q, ledgerTimeout).Result()
				st, ok := r.(*messages.LedgerState)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || !ok || st.Error != "" {
					out.failed++
					return
				}
				out.states = append(out.states, st)
			})
		}
		wg.Wait()
		system.Root.Send(self, out)
	})
	l.period = periodStart
}

// apply replaces the counters with what the ledgers hold.
func (l *tenantLimiter) apply(r *rebuilt) {
	l.busy, l.built, l.view = false, true, r.view
	// Requests that are not runs (Admit.request) are in no ledger: this
	// limiter keeps the ones it counted (a limiter that takes the tenant
	// over from another node starts without them: at most a minute's).
	var requests []admitted
	for _, a := range l.window {
		if a.run == "" {
			requests = append(requests, a)
		}
	}
	l.window = append(l.window[:0:0], requests...)
	l.open = map[string]int64{}
	kept := l.granted // runs this limiter granted stay its own (not re-decided)
	l.granted = map[string]bool{}
	l.used = 0
	seen := map[string]bool{}
	for _, st := range r.states {
		l.used += st.PeriodTokens
		for _, e := range st.Open {
			l.open[e.RunId] = e.Tokens
		}
		for _, e := range st.Recent {
			if seen[e.RunId] {
				continue
			}
			seen[e.RunId] = true
			l.window = append(l.window, admitted{at: time.UnixMilli(e.AtUnixMs), run: e.RunId, tokens: e.Tokens})
		}
	}
	sortWindow(l.window)
	for run := range l.open {
		if kept[run] {
			l.granted[run] = true
		}
	}
}

func sortWindow(w []admitted) {
	// Insertion sort: the ledgers' answers are each sorted, and short.
	for i := 1; i < len(w); i++ {
		for j := i; j > 0 && w[j].at.Before(w[j-1].at); j-- {
			w[j], w[j-1] = w[j-1], w[j]
		}
	}
}

// admit decides one Admit at now: a run (recorded when granted), a
// precheck (decided as a run of m.Tokens, recording nothing), or a request
// that is not a run (counted against requests_per_minute only).
//
// The checks are all cheap (counters in memory); what makes a refusal
// expensive is the gateway's work before asking: counting the run's
// reservation (tokenizing its prompts) and writing it to the ledger. So
// the gateway asks a precheck first with a lower bound of the reservation
// (the stages' output tokens, known without tokenizing): a run the
// precheck refuses would be refused by the real Admit too (every check
// grows with the tokens), and the gateway answers 429 having tokenized
// and written nothing. A precheck records nothing, so a granted precheck
// followed by a refused Admit (another gateway's run came first) is
// possible and harmless: the real Admit, after the ledger write, decides
// alone, which keeps the budget exact.
func (l *tenantLimiter) admit(m *messages.Admit, now time.Time) *messages.AdmitReply {
	if len(m.TraceContext) == 0 {
		return l.decide(m, now)
	}
	// The gateway's admission is traced: this decision is its child, on
	// the limiter's node.
	_, span := startSpan(tracing.Extract(context.Background(), m.TraceContext), "qlc.limiter.admit", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrTenant.String(m.Tenant), attrRunID.String(m.RunId), attribute.Bool("qlc.limiter.precheck", m.Precheck),
			attribute.Int64("qlc.limiter.tokens", m.Tokens)))
	r := l.decide(m, now)
	span.SetAttributes(attribute.Bool("qlc.limiter.ok", r.Ok))
	if !r.Ok {
		span.SetAttributes(attribute.String("qlc.limiter.limit", r.Limit))
	}
	endSpan(&span, "", "")
	return r
}

// decide is admit's decision.
func (l *tenantLimiter) decide(m *messages.Admit, now time.Time) *messages.AdmitReply {
	cut := now.Add(-limiterWindow)
	i := 0
	for i < len(l.window) && !l.window[i].at.After(cut) {
		i++
	}
	l.window = l.window[i:]
	if m.Request {
		if r := l.checkRequests(now); r != nil {
			return r
		}
		l.window = append(l.window, admitted{at: now}) // no run: nothing to settle
		return &messages.AdmitReply{Ok: true}
	}
	if _, open := l.open[m.RunId]; open && !m.Precheck {
		if l.granted[m.RunId] {
			return &messages.AdmitReply{Ok: true} // a repeated Admit (the gateway retried)
		}
		// Known only from the ledger: the gateway wrote the reservation
		// before asking, and this is the asking. Decide it like any other.
		delete(l.open, m.RunId)
		for i := range l.window {
			if l.window[i].run == m.RunId {
				l.window = slices.Delete(l.window, i, i+1)
				break
			}
		}
	}
	if r := l.check(m, now); r != nil {
		return r
	}
	if m.Precheck {
		return &messages.AdmitReply{Ok: true}
	}
	l.window = append(l.window, admitted{at: now, run: m.RunId, tokens: m.Tokens})
	l.open[m.RunId] = m.Tokens
	l.granted[m.RunId] = true
	return &messages.AdmitReply{Ok: true}
}

// retryAt is how long until window[i] leaves the window.
func (l *tenantLimiter) retryAt(i int, now time.Time) int64 {
	return max(1, l.window[i].at.Add(limiterWindow).Sub(now).Milliseconds())
}

// checkRequests refuses one more request beyond requests_per_minute.
func (l *tenantLimiter) checkRequests(now time.Time) *messages.AdmitReply {
	if rpm := l.limits.GetRequestsPerMinute(); rpm > 0 && int64(len(l.window))+1 > rpm {
		return refuse("requests_per_minute", l.retryAt(len(l.window)-int(rpm), now),
			fmt.Sprintf("tenant is over its limit of %d requests per minute", rpm))
	}
	return nil
}

// check decides a run of m.Tokens against every limit, cheapest first;
// nil grants it. It changes nothing.
func (l *tenantLimiter) check(m *messages.Admit, now time.Time) *messages.AdmitReply {
	lim := l.limits
	if r := l.checkRequests(now); r != nil {
		return r
	}
	if c := lim.GetConcurrentRuns(); c > 0 && int64(len(l.open))+1 > c {
		return refuse("concurrent_runs", 1000, fmt.Sprintf("tenant already has %d runs going; its limit is %d", len(l.open), c))
	}
	if tpm := lim.GetTokensPerMinute(); tpm > 0 {
		if m.Tokens > tpm {
			return refuse("tokens_per_minute", limiterWindow.Milliseconds(),
				fmt.Sprintf("this run reserves %d tokens (its prompt and every stage's max_tokens), more than the tenant's %d tokens per minute; lower max_tokens or choose a smaller profile", m.Tokens, tpm))
		}
		var sum int64
		for _, a := range l.window {
			sum += a.tokens
		}
		if sum+m.Tokens > tpm {
			// Retry when enough of the window has expired.
			need, k := sum+m.Tokens-tpm, 0
			for ; k < len(l.window) && need > 0; k++ {
				need -= l.window[k].tokens
			}
			return refuse("tokens_per_minute", l.retryAt(max(0, k-1), now),
				fmt.Sprintf("tenant is over its limit of %d tokens per minute (%d used or reserved in the last minute, this run reserves %d)", tpm, sum, m.Tokens))
		}
	}
	if b := lim.GetTokenBudget(); b > 0 {
		var reserved int64
		for _, t := range l.open {
			reserved += t
		}
		if l.used+reserved+m.Tokens > b {
			retry := int64(time.Hour / time.Millisecond) // a budget that never resets: until an admin raises it
			if m.PeriodEndUnixMs > 0 {
				retry = max(1000, m.PeriodEndUnixMs-now.UnixMilli())
			}
			if reserved > 0 && l.used+m.Tokens <= b {
				retry = 1000 // running runs may settle for less than they reserved
			}
			return refuse("token_budget", retry,
				fmt.Sprintf("tenant's token budget of %d is used up for this period (%d used, %d reserved by running runs, this run reserves %d)", b, l.used, reserved, m.Tokens))
		}
	}
	return nil
}

func refuse(limit string, retryMS int64, msg string) *messages.AdmitReply {
	return &messages.AdmitReply{Limit: limit, RetryAfterMs: retryMS, Message: msg}
}

// settle ends a reservation at the run's real count.
func (l *tenantLimiter) settle(m *messages.Settle) {
	if _, ok := l.open[m.RunId]; !ok {
		return // not reserved here: the ledger the next rebuild reads has it
	}
	delete(l.open, m.RunId)
	delete(l.granted, m.RunId)
	l.used += m.Tokens
	for i := range l.window {
		if l.window[i].run == m.RunId {
			l.window[i].tokens = m.Tokens
			break
		}
	}
}

// logger is the actor system's logger (limiters have no engine at hand).
func (l *tenantLimiter) logger(ctx actor.Context) *slog.Logger { return ctx.Logger() }
