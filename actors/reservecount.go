package actors

import (
	"strings"
	"sync"

	"github.com/qlc-project/qlc/stagework"
)

// Reservation builds every step's prompt to bound its size; counting each
// prompt whole would count the question once per step and model, and the
// templates' fixed text every time. reserveCounter counts a prompt as the
// pieces between the question's occurrences — fixed template text, counted
// once per process (partCounts) — plus the question, counted once per
// reservation, plus boundarySlack tokens per place the question was cut
// out: an upper bound of the whole text's count (a reservation may exceed
// the real count, never fall below it).
type reserveCounter struct {
	c      stagework.TokenCounter
	enc    string // the counter's identity in partCounts
	query  string
	qn     int // the question's count, -1 until needed
	memo   map[string]int
	shared *partCounts
}

// boundarySlack is the most a text's count can exceed the sum of the
// counts of two pieces it is cut into, per cut: a byte-level BPE's
// pre-tokenizer can split a whitespace run at the cut into one more piece
// (TestCutCountBound checks it over random texts).
const boundarySlack = 2

// minSplitQuery is the shortest question worth cutting out: shorter ones
// are counted in place.
const minSplitQuery = 32

func newReserveCounter(c stagework.TokenCounter, enc, query string) *reserveCounter {
	return &reserveCounter{c: c, enc: enc, query: query, qn: -1, memo: map[string]int{}, shared: reserveParts}
}

func (r *reserveCounter) Count(s string) int {
	if n, ok := r.memo[s]; ok {
		return n
	}
	var n int
	if len(r.query) < minSplitQuery || !strings.Contains(s, r.query) {
		n = r.shared.count(r.c, r.enc, s)
	} else {
		if r.qn < 0 {
			r.qn = r.c.Count(r.query)
		}
		parts := strings.Split(s, r.query)
		for _, p := range parts {
			n += r.shared.count(r.c, r.enc, p)
		}
		cuts := len(parts) - 1
		n += cuts*r.qn + 2*cuts*boundarySlack
	}
	r.memo[s] = n
	return n
}

func (r *reserveCounter) Truncate(s string, n int) (string, int) { return r.c.Truncate(s, n) }

// partCounts caches the counts of texts that recur across reservations
// (the templates' fixed text), bounded: when full it starts over.
type partCounts struct {
	mu sync.Mutex
	m  map[string]int
}

// Bounds of partCounts: entries, and the longest text kept.
const (
	maxPartCounts = 4096
	maxPartBytes  = 16 << 10
)

var reserveParts = &partCounts{m: map[string]int{}}

func (p *partCounts) count(c stagework.TokenCounter, enc, s string) int {
	if s == "" {
		return 0
	}
	if len(s) > maxPartBytes {
		return c.Count(s)
	}
	key := enc + "\x00" + s
	p.mu.Lock()
	n, ok := p.m[key]
	p.mu.Unlock()
	if ok {
		return n
	}
	n = c.Count(s)
	p.mu.Lock()
	if len(p.m) >= maxPartCounts {
		clear(p.m)
	}
	p.m[key] = n
	p.mu.Unlock()
	return n
}
