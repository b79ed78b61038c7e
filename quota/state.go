package quota

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Command is one entry of the replicated log.
type Command struct {
	// Op is OpGrant or OpReturn.
	Op string `json:"op"`
	// Req is the proposer's request id (its waiter matches the result).
	Req uint64 `json:"req,omitempty"`
	// Holder is the Raft id of the node the slice is for; Inc the holder
	// process's incarnation (a restarted process is another holder).
	Holder uint64 `json:"holder"`
	Inc    uint64 `json:"inc"`
	// Tenant and Period (the budget period's start, Unix ms) name the
	// account.
	Tenant string `json:"tenant"`
	Period int64  `json:"period"`
	// Budget is the tenant's token budget as the proposer knows it (grant).
	Budget int64 `json:"budget,omitempty"`
	// Min and Want bound a grant: at least Min tokens, at most Want.
	Min  int64 `json:"min,omitempty"`
	Want int64 `json:"want,omitempty"`
	// Tokens is what a return gives back.
	Tokens int64 `json:"tokens,omitempty"`
}

// Operations of a Command.
const (
	OpGrant  = "grant"
	OpReturn = "return"
)

// Errors of decoding a Command.
var errBadCommand = errors.New("quota: bad command")

// DecodeCommand parses a log entry's data, rejecting what Apply could not
// decide.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%w: %w", errBadCommand, err)
	}
	switch {
	case c.Op != OpGrant && c.Op != OpReturn:
		return c, fmt.Errorf("%w: op %q", errBadCommand, c.Op)
	case c.Tenant == "" || c.Holder == 0:
		return c, fmt.Errorf("%w: no tenant or holder", errBadCommand)
	case c.Min < 0 || c.Want < c.Min || c.Tokens < 0 || c.Budget < 0:
		return c, fmt.Errorf("%w: negative or inverted amounts", errBadCommand)
	}
	return c, nil
}

// Result is what Apply decided for a command.
type Result struct {
	// Tokens granted (a grant) or given back (a return).
	Tokens int64
	// Refused: a grant that found less than Min left (or an old period).
	Refused bool
	// Budget and Allocated are the account's after the command.
	Budget, Allocated int64
}

// holderKey names one process of one node.
type holderKey struct{ id, inc uint64 }

// account is one tenant's budget for one period.
type account struct {
	period    int64
	budget    int64
	allocated int64
	held      map[holderKey]int64
}

// State is the replicated state machine: for each tenant, its current
// period's budget and the slices allocated from it. Apply is deterministic
// (no clock, no randomness), so every replica that applies the same log
// holds the same State. Not safe for concurrent use (the Node's goroutine
// owns it).
type State struct {
	accounts map[string]*account
}

// NewState returns an empty state.
func NewState() *State { return &State{accounts: map[string]*account{}} }

// Apply decides one command. The invariant it keeps, for every account:
// allocated = Σ held ≤ max(budget of every grant that allocated).
func (s *State) Apply(c Command) Result {
	a := s.accounts[c.Tenant]
	if a == nil || c.Period > a.period {
		if c.Op != OpGrant {
			return Result{Refused: true}
		}
		a = &account{period: c.Period, held: map[holderKey]int64{}}
		s.accounts[c.Tenant] = a
	}
	if c.Period < a.period {
		return Result{Refused: true, Budget: a.budget, Allocated: a.allocated} // an earlier period: over
	}
	k := holderKey{c.Holder, c.Inc}
	switch c.Op {
	case OpGrant:
		a.budget = c.Budget
		left := a.budget - a.allocated
		if left < c.Min || left <= 0 {
			return Result{Refused: true, Budget: a.budget, Allocated: a.allocated}
		}
		n := min(c.Want, left)
		a.allocated += n
		a.held[k] += n
		return Result{Tokens: n, Budget: a.budget, Allocated: a.allocated}
	default: // OpReturn
		n := min(c.Tokens, a.held[k])
		a.held[k] -= n
		a.allocated -= n
		if a.held[k] == 0 {
			delete(a.held, k)
		}
		return Result{Tokens: n, Budget: a.budget, Allocated: a.allocated}
	}
}

// Allocated returns tenant's account: its period, budget and the tokens
// allocated to holders.
func (s *State) Allocated(tenant string) (period, budget, allocated int64) {
	a := s.accounts[tenant]
	if a == nil {
		return 0, 0, 0
	}
	return a.period, a.budget, a.allocated
}
