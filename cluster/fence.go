package cluster

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"
)

// Fencing.
//
// memberlist lets a member that was declared dead come back: it refutes the accusation with a higher
// incarnation and the others mark it alive again (a NotifyJoin). With placement by hashing that means two
// owners for one key during the outage and a silent resurrection after it. This package instead treats
// "declared dead" as final for a name:
//
//   - Tombstones. When a member leaves our view (dead or left) its name is tombstoned for TombstoneTTL.
//     Our memberlist.AliveDelegate refuses every alive message for a tombstoned name, so memberlist never
//     resurrects it: the old identity stays dead on every member that saw it die.
//   - Accusations reach the accused in two ways: (1) when we refuse an alive message for a tombstoned
//     name we send its address a fence notice (an encrypted memberlist user message, at most one per name
//     per noticeInterval); (2) every push/pull (periodic, and each seed re-join) carries our recent
//     tombstones in the delegate's LocalState.
//   - Deciding (decide). If the accuser is alive in our view, the accusation is one-sided (we were paused,
//     starved, or our packets were lost): we fence. If we consider the accuser dead too, it was a
//     partition: the side with fewer alive members fences, equal sizes are broken by the smallest member
//     name (that side survives). Both sides evaluate the same numbers, so one side fences, the other keeps
//     running, and a disagreement (views changing mid-way) resolves at the next notice or push/pull; the
//     worst case is that both sides fence, which is safe.
//   - Fencing closes Fenced(), shuts memberlist down (no Leave: we are already dead to the others) and
//     delivers an empty Topology. The process stops its actors and starts a new Cluster with a new name.

// noticeInterval rate-limits fence notices to one name.
const noticeInterval = 500 * time.Millisecond

// maxStateTombstones bounds the tombstones carried in one push/pull (the most recent ones).
const maxStateTombstones = 128

// Wire tags of our user messages and push/pull state.
const (
	wireMagic      = 'Q'
	wireFenceV1    = 1
	wireStateV1    = 2
	maxWireStrings = 1 << 12
)

// accusation says: Accuser (whose side has AccuserCount alive members, the smallest named AccuserMin)
// declared us dead.
type accusation struct {
	Accuser      string
	AccuserCount int
	AccuserMin   string
	Via          string // "notice" or "push-pull", for logs
}

// decide applies the fencing rule above. view holds the names we consider alive, self included.
func decide(self string, view map[string]struct{}, a accusation) (bool, string) {
	if _, ok := view[a.Accuser]; ok && a.Accuser != self {
		return true, fmt.Sprintf("declared dead by %s (via %s), which we still see alive", a.Accuser, a.Via)
	}
	ourCount := len(view)
	ourMin := ""
	for n := range view {
		if ourMin == "" || n < ourMin {
			ourMin = n
		}
	}
	switch {
	case a.AccuserCount > ourCount:
		return true, fmt.Sprintf("declared dead by %s (via %s) after a partition: its side has %d members, ours %d", a.Accuser, a.Via, a.AccuserCount, ourCount)
	case a.AccuserCount < ourCount:
		return false, ""
	case a.AccuserMin <= ourMin:
		return true, fmt.Sprintf("declared dead by %s (via %s) after a partition: equal sides of %d, the other side holds the smallest name", a.Accuser, a.Via, ourCount)
	}
	return false, ""
}

// fenceNotice is sent to an address whose old identity Target we refused.
type fenceNotice struct {
	Target string
	addr   string // where to send it (not encoded)
	accusation
}

func (n fenceNotice) encode() []byte {
	b := []byte{wireMagic, wireFenceV1}
	b = appendString(b, n.Target)
	b = appendString(b, n.Accuser)
	b = binary.AppendUvarint(b, uint64(n.AccuserCount))
	return appendString(b, n.AccuserMin)
}

func decodeFenceNotice(b []byte) (fenceNotice, error) {
	var n fenceNotice
	if len(b) < 2 || b[0] != wireMagic || b[1] != wireFenceV1 {
		return n, fmt.Errorf("%w: not a fence notice", errMeta)
	}
	r := metaReader{b: b[2:]}
	n.Target = r.str()
	n.Accuser = r.str()
	c := r.uvarint()
	n.AccuserMin = r.str()
	if r.err != nil {
		return fenceNotice{}, r.err
	}
	if c > maxTombstones*16 {
		return fenceNotice{}, fmt.Errorf("%w: member count %d", errMeta, c)
	}
	n.AccuserCount = int(c)
	n.Via = "notice"
	return n, nil
}

// pushState is our delegate's LocalState: who we are, our side, our recent tombstones, and the newest
// load we hold for each member of our view (load.go: the anti-entropy of load gossip, and a joiner's
// first view of everyone's load). The loads come after the tombstones (older readers ignore them),
// each a length-prefixed load message.
type pushState struct {
	Sender string
	Count  int
	Min    string
	Dead   []string
	Loads  []loadMsg
}

func (s pushState) encode() []byte {
	b := []byte{wireMagic, wireStateV1}
	b = appendString(b, s.Sender)
	b = binary.AppendUvarint(b, uint64(s.Count))
	b = appendString(b, s.Min)
	b = binary.AppendUvarint(b, uint64(len(s.Dead)))
	for _, d := range s.Dead {
		b = appendString(b, d)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Loads)))
	for _, l := range s.Loads {
		b = appendString(b, string(l.encode()))
	}
	return b
}

func decodePushState(b []byte) (pushState, error) {
	var s pushState
	if len(b) < 2 || b[0] != wireMagic || b[1] != wireStateV1 {
		return s, fmt.Errorf("%w: not a push/pull state", errMeta)
	}
	r := metaReader{b: b[2:]}
	s.Sender = r.str()
	c := r.uvarint()
	s.Min = r.str()
	n := r.uvarint()
	if r.err == nil && (n > uint64(len(r.b)) || n > maxWireStrings || c > maxTombstones*16) {
		return pushState{}, fmt.Errorf("%w: push/pull state counts out of range", errMeta)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		s.Dead = append(s.Dead, r.str())
	}
	if r.err != nil {
		return pushState{}, r.err
	}
	s.Count = int(c)
	s.Loads = decodeStateLoads(r.b)
	return s, nil
}

// decodeStateLoads parses the loads after a push/pull state's tombstones; nil if absent or malformed
// (the rest of the state still counts: fencing does not depend on load).
func decodeStateLoads(b []byte) []loadMsg {
	if len(b) == 0 {
		return nil
	}
	r := metaReader{b: b}
	n := r.uvarint()
	if r.err != nil || n == 0 || n > uint64(len(r.b)) || n > maxWireStrings {
		return nil
	}
	out := make([]loadMsg, 0, n)
	for i := uint64(0); i < n; i++ {
		raw := r.str()
		if r.err != nil {
			return nil
		}
		l, err := decodeLoad([]byte(raw))
		if err != nil {
			return nil
		}
		out = append(out, l)
	}
	return out
}

// tombstones is the set of names that left our view, with the time they left. Not safe for concurrent
// use: Cluster.mu guards it.
type tombstones struct {
	at map[string]time.Time
}

func (t *tombstones) add(name string, now time.Time) {
	if t.at == nil {
		t.at = make(map[string]time.Time)
	}
	t.at[name] = now
	if len(t.at) > maxTombstones {
		t.prune(now, 0)
	}
}

func (t *tombstones) has(name string, now time.Time, ttl time.Duration) bool {
	at, ok := t.at[name]
	return ok && now.Sub(at) < ttl
}

// prune drops expired names and, while over maxTombstones, the oldest ones.
func (t *tombstones) prune(now time.Time, ttl time.Duration) {
	if ttl > 0 {
		for n, at := range t.at {
			if now.Sub(at) >= ttl {
				delete(t.at, n)
			}
		}
	}
	if len(t.at) <= maxTombstones {
		return
	}
	names := t.recent(len(t.at))
	for _, n := range names[maxTombstones:] {
		delete(t.at, n)
	}
}

// recent returns up to max names, most recent first.
func (t *tombstones) recent(max int) []string {
	names := make([]string, 0, len(t.at))
	for n := range t.at {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		ti, tj := t.at[names[i]], t.at[names[j]]
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return names[i] < names[j]
	})
	if len(names) > max {
		names = names[:max]
	}
	return names
}
