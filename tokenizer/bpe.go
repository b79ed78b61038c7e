package tokenizer

import (
	"math/bits"
	"slices"
)

// Byte-pair merging of one piece that is not itself a token, as tiktoken's
// _byte_pair_merge: repeatedly merge the adjacent pair whose concatenation has
// the lowest rank, the leftmost one on ties, until no pair is a token.
// Short pieces use tiktoken's O(n·m) scan over a small array; pieces of
// largePiece bytes or more use a priority queue over a linked list,
// so that a megabyte of one letter stays linear-ish instead of quadratic.

const largePiece = 128

// blockMin is the piece length from which mergeSmall keeps the minimum key
// of each block of minBlock keys, so that a round reads the block minima and
// rescans at most three blocks instead of reading all n keys.
const (
	blockMin = 12
	minBlock = 8
)

// pairCache remembers rank(bytes(a)+bytes(b)) for recent token pairs (a, b):
// the merges of long pieces repeat (the bytes of a CJK character, a common
// suffix) although the pieces do not, and this small table stays in the L2
// cache where the rank table does not. Direct mapped; each entry packs
// pairValid | a<<40 | b<<20 | rank into 8 bytes (ranks are below
// maxVocabRank, noRank is stored as pairNoRank), so 256 KB hold 32768 pairs.
type pairCache [1 << pairBits]uint64

const (
	pairBits   = 15
	pairValid  = 1 << 60
	pairNoRank = maxVocabRank
)

// pairRank returns the rank of s = bytes(a)+bytes(b).
func (v *vocab) pairRank(pc *pairCache, a, b uint32, s string) uint32 {
	if len(s) > v.maxLen {
		return noRank
	}
	key := pairValid>>20 | uint64(a)<<20 | uint64(b)
	e := &pc[(key*0x9E3779B97F4A7C15)>>(64-pairBits)]
	if x := *e; x>>20 == key {
		if r := uint32(x) & pairNoRank; r != pairNoRank {
			return r
		}
		return noRank
	}
	r := v.rankOf(s)
	*e = key<<20 | uint64(min(r, pairNoRank))
	return r
}

// smallScratch holds the arrays of mergeSmall. Parts are indexed by their
// first byte; key[i] = rank<<32 | i orders merges by rank, then leftmost, and
// is ^0 once part i has been merged into its left neighbour (or for padding).
type smallScratch struct {
	key        [largePiece]uint64
	bmin       [largePiece / minBlock]uint64 // bmin[b]: least of key[minBlock*b:][:minBlock]
	next, prev [largePiece]int32
	tok        [largePiece]uint32
}

// mergeSmall appends the tokens of p (2 <= len(p) < largePiece) to dst.
// Each round takes the least key (lowest rank, then leftmost), merges that
// part with the next one and re-ranks the two pairs the new part is in.
// Short pieces find the least key with a branch-free scan of all n keys;
// from blockMin bytes the scan reads the block minima and only the (at most
// three) blocks a round changed are rescanned.
func (v *vocab) mergeSmall(dst []int, p string, ms *smallScratch, pc *pairCache) []int {
	n := len(p)
	key, next, prev, tok := ms.key[:n], ms.next[:n], ms.prev[:n], ms.tok[:n]
	for i := 0; i < n; i++ {
		r := noRank
		if i+1 < n {
			r = v.pair2[uint16(p[i])<<8|uint16(p[i+1])]
		}
		key[i] = uint64(r)<<32 | uint64(i)
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		tok[i] = v.byte1[p[i]]
	}
	nb := 0 // blocks; 0 for a plain scan
	if n >= blockMin {
		nb = (n + minBlock - 1) / minBlock
		for i := n; i < nb*minBlock; i++ {
			ms.key[i] = ^uint64(0)
		}
		for b := range len(ms.bmin) {
			ms.bmin[b] = ^uint64(0)
			if b < nb {
				ms.bmin[b] = minOf(&ms.key, b)
			}
		}
	}
	bmin := &ms.bmin
	for {
		var m uint64
		if nb > 0 {
			m = minBlocks(bmin, nb)
		} else {
			m = key[0]
			for _, k := range key[1:] {
				m = min(m, k)
			}
		}
		r := uint32(m >> 32)
		if r == noRank {
			break
		}
		// Merge part i with its successor j into the token r.
		i := int32(uint32(m))
		j := next[i]
		nj := next[j]
		key[j] = ^uint64(0)
		tok[i] = r
		next[i] = nj
		nr := noRank
		if int(nj) < n {
			prev[nj] = i
			nr = v.pairRank(pc, r, tok[nj], p[i:endOf(next, nj, n)])
		}
		key[i] = uint64(nr)<<32 | uint64(i)
		pi := prev[i]
		if pi >= 0 {
			key[pi] = uint64(v.pairRank(pc, tok[pi], r, p[pi:nj]))<<32 | uint64(pi)
		}
		if nb > 0 { // pi < i < j: rescan their blocks, each once
			bi, bj := int(i)/minBlock, int(j)/minBlock
			bmin[bi] = minOf(&ms.key, bi)
			if bj != bi {
				bmin[bj] = minOf(&ms.key, bj)
			}
			if pi >= 0 {
				if bp := int(pi) / minBlock; bp != bi {
					bmin[bp] = minOf(&ms.key, bp)
				}
			}
		}
	}
	for i := int32(0); int(i) < n; i = next[i] {
		dst = append(dst, int(tok[i]))
	}
	return dst
}

// minOf and minBlocks are written for blocks of 8 keys and 16 blocks; this
// constant does not compile otherwise.
const _ = uint(8-minBlock) + uint(minBlock-8) + uint(16-largePiece/minBlock) + uint(largePiece/minBlock-16)

// minBlocks returns the least of the first nb block minima (the others are
// ^0), as a tree of independent mins: a chain of mins, each waiting for the
// one before, made the merge rounds of long pieces a sixth slower.
func minBlocks(b *[largePiece / minBlock]uint64, nb int) uint64 {
	m := min(min(b[0], b[1]), min(b[2], b[3]))
	if nb > 4 {
		m = min(m, min(min(b[4], b[5]), min(b[6], b[7])))
		if nb > 8 {
			m = min(m, min(min(min(b[8], b[9]), min(b[10], b[11])), min(min(b[12], b[13]), min(b[14], b[15]))))
		}
	}
	return m
}

// minOf returns the least key of block b.
func minOf(key *[largePiece]uint64, b int) uint64 {
	k := key[b*minBlock : b*minBlock+minBlock : b*minBlock+minBlock]
	return min(min(min(k[0], k[1]), min(k[2], k[3])), min(min(k[4], k[5]), min(k[6], k[7])))
}

// endOf is the end of part j: the start of the part after it, or n.
func endOf(next []int32, j int32, n int) int {
	if e := next[j]; int(e) < n {
		return int(e)
	}
	return n
}

// mergeScratch holds the reusable arrays of mergeLarge.
type mergeScratch struct {
	next, prev []int32
	rank, tok  []uint32
	q          radixQueue
}

// radixQueue is the priority queue of mergeLarge: keys rank<<32 | start,
// popped in increasing order. It is a radix heap on the rank (buckets by the
// highest bit in which a rank differs from the current one), and the keys of
// the current rank are sorted once and popped in order. A merge never pushes
// a key of the current rank (the pair's bytes would be longer than the token
// just made), and almost never a lower one (a longer token ranks later); any
// key of rank <= the current one goes to a side heap, and pop takes the
// smaller of the two heads, so the order is exactly (rank, start) whatever
// the vocabulary. One letter repeated for megabytes costs a sort and a few
// passes instead of a binary heap's log n cache misses per merge.
type radixQueue struct {
	last    uint32       // rank of cur
	n       int          // keys in buckets
	buckets [33][]uint64 // bucket b: keys whose rank differs from last first at bit b-1
	cur     []uint64     // keys of rank last, sorted; cur[pos:] are not popped yet
	pos     int
	side    []uint64 // 8-ary min-heap of keys of rank <= last
}

func (q *radixQueue) reset() {
	q.last, q.n, q.pos = 0, 0, 0
	for i := range q.buckets {
		q.buckets[i] = q.buckets[i][:0]
	}
	q.cur = q.cur[:0]
	q.side = q.side[:0]
}

func (q *radixQueue) push(x uint64) {
	r := uint32(x >> 32)
	if r <= q.last {
		q.side = push(q.side, x)
		return
	}
	b := bits.Len32(r ^ q.last)
	q.buckets[b] = append(q.buckets[b], x)
	q.n++
}

func (q *radixQueue) pop() (uint64, bool) {
	if q.pos == len(q.cur) && q.n > 0 {
		b := 1
		for len(q.buckets[b]) == 0 {
			b++
		}
		bk := q.buckets[b]
		m := uint32(bk[0] >> 32)
		for _, x := range bk[1:] {
			m = min(m, uint32(x>>32))
		}
		q.last, q.cur, q.pos = m, q.cur[:0], 0
		for _, x := range bk {
			if r := uint32(x >> 32); r == m {
				q.cur = append(q.cur, x)
			} else { // r > m: lands in a lower bucket
				nb := bits.Len32(r ^ m)
				q.buckets[nb] = append(q.buckets[nb], x)
			}
		}
		q.buckets[b] = bk[:0]
		q.n -= len(q.cur)
		slices.Sort(q.cur) // usually sorted already: pushed left to right
	}
	if len(q.side) > 0 && (q.pos == len(q.cur) || q.side[0] < q.cur[q.pos]) {
		x := q.side[0]
		last := len(q.side) - 1
		q.side[0] = q.side[last]
		q.side = q.side[:last]
		if last > 0 {
			siftDown(q.side, 0)
		}
		return x, true
	}
	if q.pos == len(q.cur) {
		return 0, false
	}
	q.pos++
	return q.cur[q.pos-1], true
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// mergeLarge appends the tokens of p (len(p) >= 2) to dst using a heap.
// Node i is the part starting at byte i; next/prev link the live parts and
// rank[i] is the rank of merging part i with its successor.
func (v *vocab) mergeLarge(dst []int, p string, ms *mergeScratch, pc *pairCache) []int {
	n := len(p)
	ms.next = grow(ms.next, n)
	ms.prev = grow(ms.prev, n)
	ms.rank = grow(ms.rank, n)
	ms.tok = grow(ms.tok, n)
	q := &ms.q
	q.reset()
	next, prev, rank, tok := ms.next, ms.prev, ms.rank, ms.tok
	for i := 0; i < n; i++ {
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		rank[i] = noRank
		tok[i] = v.byte1[p[i]]
		if i+1 < n {
			rank[i] = v.pair2[uint16(p[i])<<8|uint16(p[i+1])]
			if rank[i] != noRank {
				q.push(uint64(rank[i])<<32 | uint64(i))
			}
		}
	}
	// end(i) is the start of the part after i (n at the end).
	pairRank := func(i int32) uint32 {
		j := next[i]
		if int(j) >= n {
			return noRank
		}
		e := next[j]
		return v.pairRank(pc, tok[i], tok[j], p[i:e])
	}
	for {
		top, ok := q.pop()
		if !ok {
			break
		}
		i, r := int32(uint32(top)), uint32(top>>32)
		if rank[i] != r { // stale: the part changed or was merged away
			continue
		}
		// merge i with its successor j
		j := next[i]
		nj := next[j]
		next[i] = nj
		if int(nj) < n {
			prev[nj] = i
		}
		rank[j] = noRank
		tok[i] = r
		rank[i] = pairRank(i)
		if rank[i] != noRank {
			q.push(uint64(rank[i])<<32 | uint64(i))
		}
		if pi := prev[i]; pi >= 0 {
			rank[pi] = pairRank(pi)
			if rank[pi] != noRank {
				q.push(uint64(rank[pi])<<32 | uint64(pi))
			}
		}
	}
	for i := int32(0); int(i) < n; i = next[i] {
		dst = append(dst, int(tok[i]))
	}
	return dst
}

// The heap is 8-ary: the 8 children of node k are 8k+1..8k+8, one 64-byte
// cache line, which makes it about half as deep as a binary heap and far
// kinder to the cache on the megabyte-long pieces it exists for.
const heapD = 8

func push(h []uint64, x uint64) []uint64 {
	h = append(h, x)
	k := len(h) - 1
	for k > 0 {
		parent := (k - 1) / heapD
		if h[parent] <= x {
			break
		}
		h[k] = h[parent]
		k = parent
	}
	h[k] = x
	return h
}

func siftDown(h []uint64, k int) {
	n := len(h)
	x := h[k]
	for {
		c := heapD*k + 1
		if c >= n {
			break
		}
		end := min(c+heapD, n)
		m := c
		for j := c + 1; j < end; j++ {
			if h[j] < h[m] {
				m = j
			}
		}
		if x <= h[m] {
			break
		}
		h[k] = h[m]
		k = m
	}
	h[k] = x
}
