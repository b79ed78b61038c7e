package quota

import (
	"sync"
)

// MemNet connects Nodes in one process without sockets, for tests (as
// memberlist's MockNetwork): each node gets a bounded inbox (256 messages;
// full: the message is dropped, as a lossy network would, and Raft
// resends) drained by a goroutine of the MemNet's, which Close stops and
// waits for. Cut and Heal partition it.
type MemNet struct {
	mu     sync.Mutex
	nodes  map[uint64]*Node
	inbox  map[uint64]chan []byte
	cut    map[[2]uint64]bool // directed: from, to
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// NewMemNet returns an empty network.
func NewMemNet() *MemNet {
	return &MemNet{nodes: map[uint64]*Node{}, inbox: map[uint64]chan []byte{}, cut: map[[2]uint64]bool{}, stop: make(chan struct{})}
}

// Sender is the Config.Send of node id.
func (m *MemNet) Sender(from uint64) func(to uint64, data []byte) {
	return func(to uint64, data []byte) {
		m.mu.Lock()
		ch, cut := m.inbox[to], m.cut[[2]uint64{from, to}]
		m.mu.Unlock()
		if ch == nil || cut {
			return
		}
		select {
		case ch <- data:
		default:
		}
	}
}

// Attach delivers node's messages to it (again, after a restart).
func (m *MemNet) Attach(n *Node) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	id := n.ID()
	m.nodes[id] = n
	if m.inbox[id] != nil {
		return
	}
	ch := make(chan []byte, 256)
	m.inbox[id] = ch
	m.wg.Go(func() {
		for {
			select {
			case <-m.stop:
				return
			case data := <-ch:
				m.mu.Lock()
				node := m.nodes[id]
				m.mu.Unlock()
				if node != nil {
					node.Step(data)
				}
			}
		}
	})
}

// Detach stops delivering to node id (it was stopped).
func (m *MemNet) Detach(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nodes, id)
}

// Isolate cuts node id off from every other node, both ways.
func (m *MemNet) Isolate(id uint64, peers []uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range peers {
		if p != id {
			m.cut[[2]uint64{id, p}], m.cut[[2]uint64{p, id}] = true, true
		}
	}
}

// Heal restores every link.
func (m *MemNet) Heal() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cut = map[[2]uint64]bool{}
}

// Close stops the delivery goroutines and waits for them. Idempotent.
func (m *MemNet) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()
	m.wg.Wait()
}
