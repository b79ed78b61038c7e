package cluster

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Load gossip (issue 17).
//
// A member's load (Load, Limit, Queued, StageLatency, StageLoad, StageLimit) changes every few hundred
// milliseconds. It used to be announced in memberlist metadata, and every metadata change (UpdateNode)
// raises the member's incarnation. memberlist ignores a suspect or dead message whose incarnation is
// older than the one it holds, so a cut right after an announcement that reached only some members left
// those members deaf to the others' suspicion of it: Lifeguard then got fewer confirmations and the
// suspicion ran near its maximum (BENCHMARKS.md, "compose — the quota group under every fault", item 5).
//
// Now load travels as memberlist user messages, piggybacked on gossip (Delegate.GetBroadcasts), and the
// incarnation changes only for what is rare (draining, the re-announcement after a member left):
//
//   - Each message names its sender and carries a sequence that only grows: the maintenance loop takes
//     max(last+1, wall-clock nanoseconds) for each announcement, so a member restarted under the same
//     name starts above what it sent before.
//   - A receiver keeps, per member of its view, the sequence of the load it holds, applies a message only
//     when its sequence is higher, and then queues it for re-broadcast (epidemic, as serf's user events):
//     it reaches every member even though each gossip round goes to GossipNodes of them. Load from a
//     member not in the view (not yet joined, or gone) is ignored: the table is bounded by the view.
//   - The queue (loadQueue) holds at most one message per member name (a newer one replaces the queued
//     one) and drops a message after loadRetransmitMult × ⌈log10(N+1)⌉ transmissions.
//   - Gossip with a bounded number of transmissions may miss a member (a relay's copies all go to
//     members that had it). Every push/pull (memberlist's anti-entropy, every PushPullInterval, and each
//     join or re-join) carries the load we hold for every member of our view with its sequence
//     (pushState.Loads), applied under the same rule: a missed load is repaired within a few push/pull
//     rounds, and a joiner has everyone's load from its seed at once.
//   - The metadata keeps the last announced load with its sequence as a snapshot; a member's load is
//     whichever of snapshot and message is newer.
//   - Older members (before this change) send no sequence (0) and no load messages: their metadata load
//     is taken as it comes. They ignore our load messages (not a fence notice), so they see our load
//     only as of our last metadata change: placement quality during a rolling upgrade, not correctness.

// wireLoadV1 tags a load message (after wireMagic); fence notices are wireFenceV1, push/pull state
// wireStateV1.
const wireLoadV1 = 3

// maxLoadValue bounds every count in a load message (as in the metadata).
const maxLoadValue = 1<<31 - 1

// loadMsg is one member's load announcement. Encoded: wireMagic, wireLoadV1, length-prefixed sender,
// uvarint sequence, then uvarints load, limit, queued, latency (ms), stage attempts, stage limit.
// Decoders ignore bytes after these, so a later version may append fields.
type loadMsg struct {
	Sender string
	Seq    uint64
	Load, Limit, Queued, LatencyMs,
	StageActive, StageLimit int
}

func (m loadMsg) encode() []byte {
	b := make([]byte, 0, 16+len(m.Sender)+6*3)
	b = append(b, wireMagic, wireLoadV1)
	b = appendString(b, m.Sender)
	b = binary.AppendUvarint(b, m.Seq)
	for _, v := range []int{m.Load, m.Limit, m.Queued, m.LatencyMs, m.StageActive, m.StageLimit} {
		b = binary.AppendUvarint(b, uint64(min(max(v, 0), maxLoadValue)))
	}
	return b
}

// decodeLoad parses a load message. It never panics on any input (FuzzDecodeWire).
func decodeLoad(b []byte) (loadMsg, error) {
	var m loadMsg
	if len(b) < 2 || b[0] != wireMagic || b[1] != wireLoadV1 {
		return m, fmt.Errorf("%w: not a load message", errMeta)
	}
	r := metaReader{b: b[2:]}
	m.Sender = r.str()
	m.Seq = r.uvarint()
	for _, p := range []*int{&m.Load, &m.Limit, &m.Queued, &m.LatencyMs, &m.StageActive, &m.StageLimit} {
		v := r.uvarint()
		if r.err == nil && v > maxLoadValue {
			return loadMsg{}, fmt.Errorf("%w: load value %d out of range", errMeta, v)
		}
		*p = int(v)
	}
	if r.err != nil {
		return loadMsg{}, r.err
	}
	if m.Sender == "" {
		return loadMsg{}, fmt.Errorf("%w: load message without a sender", errMeta)
	}
	return m, nil
}

// apply copies the load fields into mem.
func (m loadMsg) apply(mem *Member) {
	mem.Load, mem.Limit, mem.Queued = m.Load, m.Limit, m.Queued
	mem.StageLatency = time.Duration(m.LatencyMs) * time.Millisecond
	mem.StageLoad, mem.StageLimit = m.StageActive, m.StageLimit
}

// loadRetransmitMult scales a load message's sends: loadRetransmitMult × ⌈log10(N+1)⌉ (memberlist's
// broadcasts use Config.RetransmitMult, larger: a lost verdict costs a second, a lost load message
// only until the next one).
const loadRetransmitMult = 3

// loadOf is the load part of meta as a message of name.
func loadOf(name string, md meta) loadMsg {
	return loadMsg{Sender: name, Seq: md.LoadSeq, Load: md.Load, Limit: md.Limit, Queued: md.Queued,
		LatencyMs: md.LatencyMs, StageActive: md.StageActive, StageLimit: md.StageLimit}
}

// loadQueue holds the load messages to piggyback on gossip: at most one per member name (a newer message
// of the same member replaces the queued one), each sent loadRetransmitMult × ⌈log10(N+1)⌉ times (as
// memberlist's broadcasts, with their own multiplier), fewest transmissions first and, among equals, the newest first. Bounded by
// the view: only our own load and that of members in the view are queued, and a member's entry is
// dropped when it leaves.
//
// Not memberlist.TransmitLimitedQueue: in v0.7.0 it resets its id generator whenever a deletion empties
// it, also in the middle of queueing (a named broadcast replacing the only queued one) or of
// GetBroadcasts, so a later message may get the id of one still queued; two messages of the same
// length and transmit count then compare equal in its btree and the later one silently replaces the
// other (one member's load message lost, while the name map still points at it).
type loadQueue struct {
	mult     int
	numNodes func() int

	mu    sync.Mutex
	items map[string]*loadItem
	order uint64
}

type loadItem struct {
	name      string
	msg       []byte
	transmits int
	order     uint64
}

func newLoadQueue(mult int, numNodes func() int) *loadQueue {
	return &loadQueue{mult: mult, numNodes: numNodes, items: make(map[string]*loadItem)}
}

// queue puts msg in place of what is queued under name, with no transmission yet.
func (q *loadQueue) queue(name string, msg []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.order++
	q.items[name] = &loadItem{name: name, msg: msg, order: q.order}
}

// remove drops what is queued under name.
func (q *loadQueue) remove(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.items, name)
}

// len is how many messages are queued.
func (q *loadQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// get returns messages that fit in limit bytes with overhead bytes each (memberlist's
// Delegate.GetBroadcasts), counting one transmission for each.
func (q *loadQueue) get(overhead, limit int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	n := max(q.numNodes(), 1)
	maxTransmits := q.mult * int(math.Ceil(math.Log10(float64(n+1))))
	items := make([]*loadItem, 0, len(q.items))
	for _, it := range q.items {
		items = append(items, it)
	}
	slices.SortFunc(items, func(a, b *loadItem) int {
		if a.transmits != b.transmits {
			return a.transmits - b.transmits
		}
		return cmp.Compare(b.order, a.order)
	})
	var out [][]byte
	used := 0
	for _, it := range items {
		if used+overhead+len(it.msg) > limit {
			continue
		}
		used += overhead + len(it.msg)
		out = append(out, it.msg)
		if it.transmits++; it.transmits >= maxTransmits {
			delete(q.items, it.name)
		}
	}
	return out
}

// nextLoadSeq returns a sequence above every one this process used, and at least the wall clock in
// nanoseconds (above what an earlier process of the same name sent, unless the clock went back).
// Called only from the maintenance loop (and Start).
func (c *Cluster) nextLoadSeq() uint64 {
	seq := max(c.loadSeq+1, uint64(max(time.Now().UnixNano(), 0)))
	c.loadSeq = seq
	return seq
}

// currentLoad is the load set by SetLoad/SetPressure as a message with sequence seq.
func (c *Cluster) currentLoad(seq uint64) loadMsg {
	m := loadMsg{Sender: c.self, Seq: seq, Load: int(c.load.Load())}
	if p := c.pressure.Load(); p != nil {
		m.Limit, m.Queued, m.LatencyMs = p.Limit, p.Queued, int(p.StageLatency/time.Millisecond)
		m.StageActive, m.StageLimit = p.StageLoad, p.StageLimit
	}
	return m
}

// announceLoad sends the current load to the cluster: applied to our own view entry and queued for
// gossip. Called from the maintenance loop only.
func (c *Cluster) announceLoad() {
	if c.gone.Load() || c.inactive.Load() {
		return
	}
	m := c.currentLoad(c.nextLoadSeq())
	c.announced.Store(&m)
	c.applyLoad(m)
	c.bq.queue(c.self, m.encode())
	c.met.loadSent.Inc()
}

// applyLoad puts m into the view if its sender is in it and m is newer than the load we hold for it.
// It reports whether m was applied.
func (c *Cluster) applyLoad(m loadMsg) bool {
	c.mu.Lock()
	mem, ok := c.view[m.Sender]
	if !ok || m.Seq <= c.loadSeqs[m.Sender] {
		c.mu.Unlock()
		return false
	}
	c.loadSeqs[m.Sender] = m.Seq
	m.apply(&mem)
	c.view[m.Sender] = mem
	c.putLocked(mem)
	c.mu.Unlock()
	c.kickTopology()
	return true
}

// receiveLoad handles a load message from the network: applied if newer, then passed on.
func (c *Cluster) receiveLoad(b []byte) {
	m, err := decodeLoad(b)
	if err != nil {
		c.met.loadReceived.WithLabelValues("bad").Inc()
		return
	}
	if m.Sender == c.self {
		c.met.loadReceived.WithLabelValues("own").Inc()
		return
	}
	if !c.applyLoad(m) {
		c.met.loadReceived.WithLabelValues("ignored").Inc()
		return
	}
	c.met.loadReceived.WithLabelValues("applied").Inc()
	// Re-broadcast what we had not seen (memberlist's buffer is not ours to keep).
	c.bq.queue(m.Sender, append([]byte(nil), b...))
}
