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
	"github.com/qlc-project/qlc/quota"
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
	// slices, when set, is the quota group's member on this node: budget
	// tokens are granted only from the slices it holds (quota.go).
	slices budgetSlices
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
		return &tenantLimiter{tenant: tenant, ledgers: p.ledgers, spawn: p.spawn, slices: p.slices,
			open: map[string]int64{}, granted: map[string]bool{}, taken: map[string]takenSlice{}}
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

	// With a quota group (slices != nil), the token budget is granted from
	// this node's slices: taken records what each run granted here took
	// (given back, less its real count, when it settles); waiting holds
	// the Admits that found the slices short while a new slice is asked
	// for (acquiring).
	slices    budgetSlices
	taken     map[string]takenSlice
	waiting   []pendingMsg
	acquiring bool
	// gone are runs settled before this limiter knew them: a gateway that
	// gave up waiting for an Admit settles the run at 0; an Admit of it
	// still waiting for a slice is then refused, not granted to nobody.
	// At most maxPendingAdmits (then forgotten at once).
	gone map[string]bool
}

// takenSlice is what a run took of this node's slices.
type takenSlice struct{ period, tokens int64 }

// needSlice is decide's answer when the run passes every limit but this
// node's slices of the budget are short: the limiter asks the quota group
// for more before it answers.
var needSlice = &messages.AdmitReply{Limit: "need_slice"}

// quotaUnavailable is AdmitReply.Limit when the quota group did not answer
// (this node is cut off from its majority): not a refusal; the gateway asks
// again until its AdmitTimeout (then 503 limiter_unavailable).
const quotaUnavailable = "quota_unavailable"

// quotaTimeout bounds one request for a slice.
var quotaTimeout = 2 * time.Second

// sliceShare: a slice asked for is at least this fraction of the budget
// (fewer log writes), and at least what the waiting runs need.
const sliceShare = 8

// acquired carries the quota group's answer back to the limiter.
type acquired struct{ err error }

func (l *tenantLimiter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(limiterIdle)
	case *actor.ReceiveTimeout:
		if !l.busy && !l.acquiring {
			l.giveBack()
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
		l.answer(ctx, m, ctx.Sender())
	case *acquired:
		l.acquiring = false
		waiting := l.waiting
		l.waiting = nil
		if l.busy {
			// A rebuild started meanwhile: they are decided after it.
			l.pending = append(l.pending, waiting...)
			return
		}
		for _, w := range waiting {
			am := w.msg.(*messages.Admit)
			now := time.Now()
			r := l.admit(am, now)
			if r == needSlice {
				switch {
				case m.err == nil:
					// A slice came but not enough for this run too: ask again.
					l.waiting = append(l.waiting, w)
					continue
				case errors.Is(m.err, quota.ErrBudget):
					r = l.budgetRefusal(am, now)
				default:
					r = &messages.AdmitReply{Limit: quotaUnavailable, RetryAfterMs: 100,
						Message: "the tenant-budget group did not answer (no majority reachable from this node): " + m.err.Error()}
				}
			}
			l.reply(ctx, w.sender, r)
		}
		l.acquire(ctx)
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
				l.answer(ctx, pm, p.sender)
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

// answer decides m and answers sender, or, when this node's slices of the
// budget are short, holds m while it asks the quota group for a slice.
func (l *tenantLimiter) answer(ctx actor.Context, m *messages.Admit, sender *actor.PID) {
	r := l.admit(m, time.Now())
	if r != needSlice {
		l.reply(ctx, sender, r)
		return
	}
	if len(l.waiting) >= maxPendingAdmits {
		return // dropped like an Admit that finds the mailbox full: the gateway asks again
	}
	l.waiting = append(l.waiting, pendingMsg{msg: m, sender: sender})
	l.acquire(ctx)
}

func (l *tenantLimiter) reply(ctx actor.Context, sender *actor.PID, r *messages.AdmitReply) {
	if sender != nil {
		ctx.Send(sender, r)
	}
}

// acquire asks the quota group, on a goroutine of the engine's, for a
// slice of the budget large enough for the first waiting run (at least
// 1/sliceShare of the budget, and what every waiting run needs); the
// answer comes back as an acquired message. One request at a time.
func (l *tenantLimiter) acquire(ctx actor.Context) {
	if l.acquiring || len(l.waiting) == 0 {
		return
	}
	first := l.waiting[0].msg.(*messages.Admit)
	tenant, period, budget := l.tenant, first.PeriodStartUnixMs, l.limits.GetTokenBudget()
	var all int64
	for _, w := range l.waiting {
		all += w.msg.(*messages.Admit).Tokens
	}
	slices, self, root := l.slices, ctx.Self(), ctx.ActorSystem().Root
	need := max(1, first.Tokens-slices.Free(tenant, period))
	want := max(need, all, budget/sliceShare)
	l.acquiring = l.spawn(func() {
		actx, cancel := context.WithTimeout(context.Background(), quotaTimeout)
		defer cancel()
		_, err := slices.Acquire(actx, tenant, period, budget, need, want)
		root.Send(self, &acquired{err: err})
	})
}

// giveBack returns the unused part of this node's slices to the quota
// group (the limiter is going idle), on a goroutine of the engine's.
func (l *tenantLimiter) giveBack() {
	if l.slices == nil || l.limits.GetTokenBudget() <= 0 {
		return
	}
	slices, tenant, period := l.slices, l.tenant, l.period
	l.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), quotaTimeout)
		defer cancel()
		_ = slices.GiveBack(ctx, tenant, period) // not given back: stays allocated (wasted, never granted twice)
	})
}

// budgetRefusal answers a run the quota group has no slice left for.
func (l *tenantLimiter) budgetRefusal(m *messages.Admit, now time.Time) *messages.AdmitReply {
	retry := int64(time.Hour / time.Millisecond)
	if m.PeriodEndUnixMs > 0 {
		retry = max(1000, m.PeriodEndUnixMs-now.UnixMilli())
	}
	if len(l.taken) > 0 {
		retry = 1000 // running runs may settle for less than they reserved
	}
	return refuse("token_budget", retry, fmt.Sprintf("tenant's token budget of %d is used up for this period (allocated to the limiter hosts; this run reserves %d)",
		l.limits.GetTokenBudget(), m.Tokens))
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
	if _, took := l.taken[m.RunId]; took && !m.Precheck {
		return &messages.AdmitReply{Ok: true} // granted here from a slice: a repeated Admit
	}
	if l.gone[m.RunId] && !m.Precheck {
		return refuse("settled", 0, "the run was given up by its gateway before it was decided")
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
	if l.slices != nil && l.limits.GetTokenBudget() > 0 {
		// The budget is granted only from this node's slices: no log
		// write here; a new slice when they are short.
		if !l.slices.Take(l.tenant, m.PeriodStartUnixMs, m.Tokens) {
			return needSlice
		}
		l.taken[m.RunId] = takenSlice{period: m.PeriodStartUnixMs, tokens: m.Tokens}
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
	if b := lim.GetTokenBudget(); b > 0 && l.slices != nil {
		// The quota group decides (decide takes from the slices); a
		// precheck estimates from this replica's state.
		if m.Precheck && m.Tokens > l.slices.Available(l.tenant, m.PeriodStartUnixMs, b) {
			return l.budgetRefusal(m, now)
		}
	} else if b > 0 {
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
	if _, ok := l.taken[m.RunId]; !ok && l.slices != nil {
		if _, open := l.open[m.RunId]; !open {
			if l.gone == nil || len(l.gone) >= maxPendingAdmits {
				l.gone = map[string]bool{}
			}
			l.gone[m.RunId] = true
		}
	}
	if t, ok := l.taken[m.RunId]; ok {
		// What the run reserved and did not use goes back to this node's
		// slices; a retried run that used more takes the rest if held (else
		// it is billed beyond, as without the group).
		delete(l.taken, m.RunId)
		if d := t.tokens - m.Tokens; d > 0 {
			l.slices.Release(l.tenant, t.period, d)
		} else if d < 0 {
			l.slices.Take(l.tenant, t.period, -d)
		}
	}
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
