package tokenizer

import "math/bits"

// The pre-tokenizer splits text into the pieces that tiktoken's regex would
// match, one leftmost-first match after another, without a regex engine. The
// regexes (tiktoken_ext/openai_public.py) are:
//
// cl100k_base:
//
//	'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
//
// o200k_base:
//
//	[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// Each alternative is decided here with the same backtracking outcome; the
// comments on next name which alternative a branch stands for. Runs of ASCII
// bytes are measured on the block masks (classify.go); code points >= 0x80 are
// decoded and looked up in the Unicode 16 class table.

type scanner struct {
	s     string
	n     int
	m     []blockMasks
	o200k bool
}

// run returns the end of the run of ASCII bytes of the given kind that
// starts at i <= n. Mask bits past n are all 0 (see classifyString), so a
// run never goes past the end of the text.
func (sc *scanner) run(kind int, i int) int {
	for i < sc.n {
		sh := uint(i & 63)
		if t := bits.TrailingZeros64(^(sc.m[i>>6][kind] >> sh)); t < 64-int(sh) {
			return i + t
		}
		i += 64 - int(sh)
	}
	return sc.n
}

// classRun extends a run of ASCII kind plus non-ASCII code points having any of want.
func (sc *scanner) classRun(kind int, want uint8, i int) int {
	for {
		i = sc.run(kind, i)
		if i >= sc.n || sc.s[i] < 0x80 {
			return i
		}
		c, sz := classAtHi(sc.s, i)
		if c&want == 0 {
			return i
		}
		i += sz
	}
}

// letters returns the end of the \p{L}+ run at i.
func (sc *scanner) letters(i int) int { return sc.classRun(mLetter, cL, i) }

// others returns the end of the [^\s\p{L}\p{N}]+ run at i.
func (sc *scanner) others(i int) int {
	for {
		i = sc.run(mOther, i)
		if i >= sc.n || sc.s[i] < 0x80 {
			return i
		}
		c, sz := classAtHi(sc.s, i)
		if c&(cL|cN|cWS) != 0 {
			return i
		}
		i += sz
	}
}

// digits returns the end of \p{N}{1,3} at i (i is a number).
func (sc *scanner) digits(i int) int {
	for k := 0; k < 3 && i < sc.n; k++ {
		c, sz := classAt(sc.s, i)
		if c&cN == 0 {
			break
		}
		i += sz
	}
	return i
}

// contraction returns the end of (?i:'s|'t|'re|'ve|'m|'ll|'d) at i, or i.
// Case folding is Unicode simple folding: only 's' gains a non-ASCII form, ſ (U+017F).
func (sc *scanner) contraction(i int) int {
	s, n := sc.s, sc.n
	if i+1 >= n || s[i] != '\'' {
		return i
	}
	switch s[i+1] | 0x20 {
	case 's', 't', 'm', 'd':
		if s[i+1] >= 'A' {
			return i + 2
		}
	case 'r', 'v':
		if s[i+1] >= 'A' && i+2 < n && s[i+2]|0x20 == 'e' {
			return i + 3
		}
	case 'l':
		if s[i+1] >= 'A' && i+2 < n && s[i+2]|0x20 == 'l' {
			return i + 3
		}
	case 0xC5 | 0x20:
		if s[i+1] == 0xC5 && i+2 < n && s[i+2] == 0xBF {
			return i + 3
		}
	}
	return i
}

// otherTail extends a run of others by [\r\n]* (cl100k) or [\r\n/]* (o200k).
func (sc *scanner) otherTail(i int) int {
	for i < sc.n {
		c := sc.s[i]
		if c == '\r' || c == '\n' || (c == '/' && sc.o200k) {
			i++
			continue
		}
		break
	}
	return i
}

// lastNL returns 1 + the position of the last \r or \n in s[a:e], or -1.
func (sc *scanner) lastNL(a, e int) int {
	for b := (e - 1) >> 6; b >= a>>6; b-- {
		m := sc.m[b][mNL]
		if hi := e - b<<6; hi < 64 {
			m &= 1<<uint(hi) - 1
		}
		if lo := a - b<<6; lo > 0 {
			m &^= 1<<uint(lo) - 1
		}
		if m != 0 {
			return b<<6 + 64 - bits.LeadingZeros64(m)
		}
	}
	return -1
}

// whitespace decides the \s alternatives at i, the start of a White_Space run.
func (sc *scanner) whitespace(i int) int {
	j, nl, last := i, -1, i
	for {
		e := sc.run(mSpace, j)
		if e > j {
			last = e - 1
			if p := sc.lastNL(j, e); p >= 0 {
				nl = p
			}
		}
		j = e
		if j >= sc.n || sc.s[j] < 0x80 {
			break
		}
		c, sz := classAtHi(sc.s, j)
		if c&cWS == 0 {
			break
		}
		last = j
		j += sz
	}
	if sc.o200k {
		switch {
		case nl > 0: // \s*[\r\n]+
			return nl
		case j == sc.n: // \s+(?!\S) at the end
			return j
		}
	} else {
		switch {
		case j == sc.n: // \s++$
			return j
		case nl > 0: // \s*[\r\n]
			return nl
		}
	}
	if last > i { // \s+(?!\S): all but the last white space
		return last
	}
	return j // \s (a single character)
}

// next returns the end of the piece that starts at i < n.
func (sc *scanner) next(i int) int {
	if sc.o200k {
		return sc.nextO200k(i)
	}
	return sc.nextCl100k(i)
}

func (sc *scanner) nextCl100k(i int) int {
	s, n := sc.s, sc.n
	b := s[i]
	c, sz := byteClass[b], 1
	if c&cHi != 0 {
		c, sz = classAtHi(s, i)
	} else if b == '\'' { // '(?i:[sdmt]|ll|ve|re)
		if e := sc.contraction(i); e > i {
			return e
		}
	}
	if c&cL != 0 { // \p{L}++
		return sc.letters(i + sz)
	}
	if c&cN != 0 { // \p{N}{1,3}+
		return sc.digits(i)
	}
	if b != '\r' && b != '\n' && i+sz < n { // [^\r\n\p{L}\p{N}]?+\p{L}++
		c2, sz2 := byteClass[s[i+sz]], 1
		if c2&cHi != 0 {
			c2, sz2 = classAtHi(s, i+sz)
		}
		if c2&cL != 0 {
			return sc.letters(i + sz + sz2)
		}
	}
	if c&cWS == 0 { // [^\s\p{L}\p{N}]++[\r\n]*+
		return sc.otherTail(sc.others(i + sz))
	}
	if b == ' ' && i+1 < n { //  ?[^\s\p{L}\p{N}]++[\r\n]*+
		if c2, sz2 := classAt(s, i+1); c2&(cL|cN|cWS) == 0 {
			return sc.otherTail(sc.others(i + 1 + sz2))
		}
	}
	return sc.whitespace(i)
}

// uRun returns the end of the [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]* run at i and
// the end of the last character in it that is also in W, or -1.
func (sc *scanner) uRun(i int) (int, int) {
	lastW := -1
	for {
		i = sc.run(mUpper, i)
		if i >= sc.n || sc.s[i] < 0x80 {
			return i, lastW
		}
		c, sz := classAtHi(sc.s, i)
		if c&cU == 0 {
			return i, lastW
		}
		i += sz
		if c&cW != 0 {
			lastW = i
		}
	}
}

// wRun returns the end of the [\p{Ll}\p{Lm}\p{Lo}\p{M}]* run at i.
func (sc *scanner) wRun(i int) int { return sc.classRun(mLower, cW, i) }

// matchUW matches U*W+ at i with backtracking: the W+ either follows the
// whole U run or is the last W character inside it. Returns -1 on no match.
func (sc *scanner) matchUW(i int) int {
	e, lastW := sc.uRun(i)
	if e < sc.n {
		c := byteClass[sc.s[e]]
		if c&cHi != 0 {
			c, _ = classAtHi(sc.s, e)
		}
		if c&cW != 0 {
			return sc.wRun(e)
		}
	}
	return lastW
}

// matchUplusW matches U+W* at i. Returns -1 on no match.
func (sc *scanner) matchUplusW(i int) int {
	e, _ := sc.uRun(i)
	if e == i {
		return -1
	}
	return sc.wRun(e)
}

func (sc *scanner) nextO200k(i int) int {
	s, n := sc.s, sc.n
	b := s[i]
	c, sz := byteClass[b], 1
	if c&cHi != 0 {
		c, sz = classAtHi(s, i)
	}
	isP := c&(cL|cN) == 0 && b != '\r' && b != '\n'
	// P? U* W+ C?
	if isP && i+sz < n {
		if e := sc.matchUW(i + sz); e >= 0 {
			return sc.contraction(e)
		}
	}
	if c&(cU|cW) != 0 {
		if e := sc.matchUW(i); e >= 0 {
			return sc.contraction(e)
		}
	}
	// P? U+ W* C?
	if isP && i+sz < n {
		if e := sc.matchUplusW(i + sz); e >= 0 {
			return sc.contraction(e)
		}
	}
	if c&cU != 0 {
		if e := sc.matchUplusW(i); e >= 0 {
			return sc.contraction(e)
		}
	}
	if c&cN != 0 { // \p{N}{1,3}
		return sc.digits(i)
	}
	if c&cWS == 0 { // [^\s\p{L}\p{N}]+[\r\n/]*
		return sc.otherTail(sc.others(i + sz))
	}
	if b == ' ' && i+1 < n { //  ?[^\s\p{L}\p{N}]+[\r\n/]*
		if c2, sz2 := classAt(s, i+1); c2&(cL|cN|cWS) == 0 {
			return sc.otherTail(sc.others(i + 1 + sz2))
		}
	}
	return sc.whitespace(i)
}
