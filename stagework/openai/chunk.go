package openai

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// chunkInfo is what a stream needs from one chat.completion.chunk:
//
//	{"choices":[{"delta":{"content":"..."},"finish_reason":null}],"usage":{...},"error":{...},"object":"..."}
//
// Everything else (id, model, logprobs, provider, timings, ...) is checked
// for JSON syntax and skipped.
type chunkInfo struct {
	content      string // choices[0].delta.content
	finishReason string // choices[0].finish_reason
	usage        stagework.Usage
	hasUsage     bool // "usage" is an object
	errField     bool // "error" is a non-empty object or a non-empty string
	objectError  bool // "object":"error" (older vLLM's error shape)
	choices      int  // len(choices)
}

func (c *chunkInfo) hasError() bool { return c.errField || c.objectError }

var (
	// errJSONSyntax is returned for input that is not JSON.
	errJSONSyntax = errors.New("openai: invalid JSON")
	// errJSONType is returned for JSON whose known members have the wrong
	// type (choices not an array, content not a string, ...).
	errJSONType = errors.New("openai: chunk has a member of the wrong type")
)

// maxJSONDepth is encoding/json's nesting limit; deeper input is rejected.
const maxJSONDepth = 10000

// parseChunk reads one chunk's JSON into out. It is the per-token hot path,
// so instead of encoding/json (several allocations and ~5 µs per chunk) it
// is a small single-pass scanner that allocates only the content string.
// Its meaning is pinned to encoding/json's by FuzzParseChunk: the input must
// be valid JSON (RFC 8259 as encoding/json reads it, invalid UTF-8 in
// strings coerced to U+FFFD); a repeated member counts only in its last
// occurrence; known members must have the types above (or null).
func parseChunk(data []byte, out *chunkInfo) error {
	*out = chunkInfo{}
	s := scanner{b: data}
	s.ws()
	var bad bool
	var err error
	if s.peek() == 'n' {
		err = s.literal("null")
	} else if s.peek() != '{' {
		bad = true
		err = s.skip()
	} else {
		bad, err = s.top(out)
	}
	if err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errJSONSyntax
	}
	if bad {
		*out = chunkInfo{}
		return errJSONType
	}
	return nil
}

// scanner walks a JSON text. Every method that reads a value expects s.i at
// the value's first byte and leaves it just after the value.
type scanner struct {
	b     []byte
	i     int
	depth int
	key   []byte // scratch for keys with escapes
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return // the common case: compact JSON
	}
	b, i := s.b, s.i
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	s.i = i
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return nil
	}
	return errJSONSyntax
}

func (s *scanner) enter() error {
	s.depth++
	if s.depth > maxJSONDepth {
		return errJSONSyntax
	}
	return nil
}

// firstKey is called just after '{'. It returns the first member's key (s.i
// then at its value) or more=false for an empty object.
func (s *scanner) firstKey() (key []byte, more bool, err error) {
	s.ws()
	if s.eat('}') {
		s.depth--
		return nil, false, nil
	}
	return s.readKey()
}

// nextKey is called after a member's value.
func (s *scanner) nextKey() (key []byte, more bool, err error) {
	s.ws()
	if s.eat(',') {
		s.ws()
		return s.readKey()
	}
	if s.eat('}') {
		s.depth--
		return nil, false, nil
	}
	return nil, false, errJSONSyntax
}

func (s *scanner) readKey() ([]byte, bool, error) {
	if s.peek() != '"' {
		return nil, false, errJSONSyntax
	}
	raw, escaped, err := s.str()
	if err != nil {
		return nil, false, err
	}
	key := raw
	if escaped {
		// Unescaped keys are compared as they are: invalid UTF-8 in one
		// could not match a known (ASCII) name after decoding either.
		s.key = unquote(s.key[:0], raw)
		key = s.key
	}
	s.ws()
	if !s.eat(':') {
		return nil, false, errJSONSyntax
	}
	s.ws()
	return key, true, nil
}

// firstElem is called just after '['.
func (s *scanner) firstElem() (bool, error) {
	s.ws()
	if s.eat(']') {
		s.depth--
		return false, nil
	}
	return true, nil
}

// nextElem is called after an element.
func (s *scanner) nextElem() (bool, error) {
	s.ws()
	if s.eat(',') {
		s.ws()
		return true, nil
	}
	if s.eat(']') {
		s.depth--
		return false, nil
	}
	return false, errJSONSyntax
}

// skip checks and passes over any value.
func (s *scanner) skip() error {
	switch c := s.peek(); {
	case c == '{':
		s.i++
		if err := s.enter(); err != nil {
			return err
		}
		_, more, err := s.firstKey()
		for more && err == nil {
			if err = s.skip(); err != nil {
				return err
			}
			_, more, err = s.nextKey()
		}
		return err
	case c == '[':
		s.i++
		if err := s.enter(); err != nil {
			return err
		}
		more, err := s.firstElem()
		for more && err == nil {
			if err = s.skip(); err != nil {
				return err
			}
			more, err = s.nextElem()
		}
		return err
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	}
	return errJSONSyntax
}

// str passes over a string at s.i and returns its raw contents (between the
// quotes) and whether they hold escapes.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	b, i := s.b, s.i+1 // locals: this loop is most of the scanner's time
	start := i
	for i < len(b) {
		c := b[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return b[start:i], escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return nil, false, errJSONSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if getu4(b[i:]) < 0 {
					return nil, false, errJSONSyntax
				}
				i += 6
			default:
				return nil, false, errJSONSyntax
			}
		default: // a control character
			return nil, false, errJSONSyntax
		}
	}
	return nil, false, errJSONSyntax
}

// text reads a string value as Go text.
func (s *scanner) text() (string, error) {
	raw, escaped, err := s.str()
	if err != nil {
		return "", err
	}
	if !escaped && utf8.Valid(raw) {
		return string(raw), nil
	}
	return string(unquote(make([]byte, 0, len(raw)+8), raw)), nil
}

// number passes over a number and returns its text.
func (s *scanner) number() ([]byte, error) {
	start := s.i
	s.eat('-')
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return nil, errJSONSyntax
	}
	if s.eat('.') {
		if !s.digits() {
			return nil, errJSONSyntax
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			return nil, errJSONSyntax
		}
	}
	return s.b[start:s.i], nil
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// top reads the members of the chunk object; s.i is at '{'.
func (s *scanner) top(out *chunkInfo) (bad bool, err error) {
	s.i++
	if err := s.enter(); err != nil {
		return false, err
	}
	var badChoices, badUsage bool
	key, more, err := s.firstKey()
	for more && err == nil {
		switch string(key) {
		case "choices":
			out.content, out.finishReason, out.choices = "", "", 0
			badChoices, err = s.choicesValue(out)
		case "usage":
			out.usage, out.hasUsage = stagework.Usage{}, false
			badUsage, err = s.usageValue(out)
		case "error":
			out.errField, err = s.errorValue()
		case "object":
			out.objectError, err = s.objectValue()
		default:
			err = s.skip()
		}
		if err != nil {
			return false, err
		}
		key, more, err = s.nextKey()
	}
	return badChoices || badUsage, err
}

// choicesValue reads "choices": null or an array whose first element is
// read as a choice and the rest skipped.
func (s *scanner) choicesValue(out *chunkInfo) (bad bool, err error) {
	switch s.peek() {
	case 'n':
		return false, s.literal("null")
	case '[':
	default:
		return true, s.skip()
	}
	s.i++
	if err := s.enter(); err != nil {
		return false, err
	}
	more, err := s.firstElem()
	for more && err == nil {
		if out.choices == 0 {
			bad, err = s.choiceValue(out)
		} else {
			err = s.skip()
		}
		if err != nil {
			return false, err
		}
		out.choices++
		more, err = s.nextElem()
	}
	return bad, err
}

// choiceValue reads one choice: null or {"delta":...,"finish_reason":...}.
func (s *scanner) choiceValue(out *chunkInfo) (bad bool, err error) {
	switch s.peek() {
	case 'n':
		return false, s.literal("null")
	case '{':
	default:
		return true, s.skip()
	}
	s.i++
	if err := s.enter(); err != nil {
		return false, err
	}
	var badDelta, badFinish bool
	key, more, err := s.firstKey()
	for more && err == nil {
		switch string(key) {
		case "delta":
			out.content = ""
			badDelta, err = s.deltaValue(out)
		case "finish_reason":
			out.finishReason = ""
			badFinish, err = s.nullableText(&out.finishReason)
		default:
			err = s.skip()
		}
		if err != nil {
			return false, err
		}
		key, more, err = s.nextKey()
	}
	return badDelta || badFinish, err
}

// deltaValue reads a delta: null or {"content":...}.
func (s *scanner) deltaValue(out *chunkInfo) (bad bool, err error) {
	switch s.peek() {
	case 'n':
		return false, s.literal("null")
	case '{':
	default:
		return true, s.skip()
	}
	s.i++
	if err := s.enter(); err != nil {
		return false, err
	}
	var badContent bool
	key, more, err := s.firstKey()
	for more && err == nil {
		if string(key) == "content" {
			out.content = ""
			badContent, err = s.nullableText(&out.content)
		} else {
			err = s.skip()
		}
		if err != nil {
			return false, err
		}
		key, more, err = s.nextKey()
	}
	return badContent, err
}

// nullableText reads null (leaving *dst alone) or a string into *dst.
func (s *scanner) nullableText(dst *string) (bad bool, err error) {
	switch s.peek() {
	case 'n':
		return false, s.literal("null")
	case '"':
		*dst, err = s.text()
		return false, err
	}
	return true, s.skip()
}

// usageValue reads "usage": null or an object with integer token counts.
func (s *scanner) usageValue(out *chunkInfo) (bad bool, err error) {
	switch s.peek() {
	case 'n':
		return false, s.literal("null")
	case '{':
	default:
		return true, s.skip()
	}
	s.i++
	if err := s.enter(); err != nil {
		return false, err
	}
	out.hasUsage = true
	var badP, badC, badT bool
	key, more, err := s.firstKey()
	for more && err == nil {
		switch string(key) {
		case "prompt_tokens":
			out.usage.PromptTokens = 0
			badP, err = s.nullableInt(&out.usage.PromptTokens)
		case "completion_tokens":
			out.usage.CompletionTokens = 0
			badC, err = s.nullableInt(&out.usage.CompletionTokens)
		case "total_tokens":
			out.usage.TotalTokens = 0
			badT, err = s.nullableInt(&out.usage.TotalTokens)
		default:
			err = s.skip()
		}
		if err != nil {
			return false, err
		}
		key, more, err = s.nextKey()
	}
	return badP || badC || badT, err
}

// nullableInt reads null (leaving *dst alone) or an integer that fits an
// int64 (no fraction, no exponent) into *dst.
func (s *scanner) nullableInt(dst *int64) (bad bool, err error) {
	c := s.peek()
	if c == 'n' {
		return false, s.literal("null")
	}
	if c != '-' && (c < '0' || c > '9') {
		return true, s.skip()
	}
	lit, err := s.number()
	if err != nil {
		return false, err
	}
	n, ok := parseInt64(lit)
	if !ok {
		return true, nil
	}
	*dst = n
	return false, nil
}

// parseInt64 parses an integer literal as strconv.ParseInt(lit, 10, 64) would.
func parseInt64(lit []byte) (int64, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	if len(lit) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range lit {
		if c < '0' || c > '9' {
			return 0, false
		}
		if u > (1<<63)/10 { // u*10 would pass 1<<63
			return 0, false
		}
		u = u*10 + uint64(c-'0')
		if u > 1<<63 {
			return 0, false
		}
	}
	if neg {
		return -int64(u), true // -(1<<63) wraps to itself, which is right
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// errorValue reads "error": true for a non-empty object or string (what
// openai-python treats as an error), false for anything else.
func (s *scanner) errorValue() (bool, error) {
	switch s.peek() {
	case '{':
		j := s.i + 1
		for j < len(s.b) && (s.b[j] == ' ' || s.b[j] == '\t' || s.b[j] == '\n' || s.b[j] == '\r') {
			j++
		}
		nonEmpty := j < len(s.b) && s.b[j] != '}'
		return nonEmpty, s.skip()
	case '"':
		raw, _, err := s.str()
		return len(raw) > 0, err
	}
	return false, s.skip()
}

// objectValue reads "object": true if it is the string "error".
func (s *scanner) objectValue() (bool, error) {
	if s.peek() != '"' {
		return false, s.skip()
	}
	raw, escaped, err := s.str()
	if err != nil || !escaped {
		return string(raw) == "error", err // no allocation on the hot path
	}
	return string(unquote(nil, raw)) == "error", nil
}

// plain marks the bytes that stand for themselves inside a JSON string:
// all but '"', '\\' and control characters.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// getu4 decodes \uXXXX at the start of b, or returns -1.
func getu4(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// unquote appends the text of a checked string body (raw, between quotes)
// to dst, decoding escapes and coercing invalid UTF-8 and lone surrogates to
// U+FFFD exactly as encoding/json does.
func unquote(dst, raw []byte) []byte {
	for r := 0; r < len(raw); {
		c := raw[r]
		switch {
		case c == '\\':
			switch e := raw[r+1]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
				r += 2
			case 'b':
				dst, r = append(dst, '\b'), r+2
			case 'f':
				dst, r = append(dst, '\f'), r+2
			case 'n':
				dst, r = append(dst, '\n'), r+2
			case 'r':
				dst, r = append(dst, '\r'), r+2
			case 't':
				dst, r = append(dst, '\t'), r+2
			case 'u':
				rr := getu4(raw[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := getu4(raw[r:])
					if dec := utf16.DecodeRune(rr, rr1); dec != utf8.RuneError {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						break
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst
}
