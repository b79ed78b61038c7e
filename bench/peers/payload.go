package main

import (
	"bytes"
	"strconv"
	"time"
)

// frame is what the benchmark needs of one event's JSON: QLC's run event
// (docs/api.md: "seq", "from_seq" when coalesced, "type", "time") or the
// same fields in the payload the Centrifugo publisher sends, which a
// uni_sse reader gets wrapped in a push: {"channel":…,"pub":{"data":{…}}}.
//
// It is found by scanning for the keys, not by decoding the JSON: the
// client shares two cores with the servers it measures, and a full decode
// of every event would cost more than the servers' own work per delivery.
// Keys inside string values cannot match (their quotes are escaped), and
// the first occurrence is the one used (QLC's events and the payload put
// these keys before any nested object).
type frame struct {
	Type    []byte // "token_delta", "run_completed", …; nil when absent
	Seq     uint64 // 0 when absent
	FromSeq uint64 // first seq of a coalesced span; Seq otherwise
	Time    time.Time
	HasTime bool
	// Part is set on a part of a delta too long for one event
	// ("part":{"offset","end","size"}): only its last part (end == size)
	// counts the delta, so a split delta is delivered once.
	Part, LastPart bool
}

// Tokens is how many log entries (tokens, for token deltas) the frame
// carries: seq - from_seq + 1.
func (f frame) Tokens() uint64 {
	if f.Seq == 0 || f.FromSeq > f.Seq || (f.Part && !f.LastPart) {
		return 0
	}
	return f.Seq - f.FromSeq + 1
}

var (
	keySeq     = []byte(`"seq":`)
	keyFromSeq = []byte(`"from_seq":`)
	keyType    = []byte(`"type":"`)
	keyTime    = []byte(`"time":"`)
	keyPart    = []byte(`"part":{`)
	keyEnd     = []byte(`"end":`)
	keySize    = []byte(`"size":`)
	tokenDelta = []byte("token_delta")
)

// parseFrame reads the fields of f from an event's data.
func parseFrame(data []byte) frame {
	var f frame
	if v, ok := uintAfter(data, keySeq); ok {
		f.Seq, f.FromSeq = v, v
	}
	if v, ok := uintAfter(data, keyFromSeq); ok && v <= f.Seq {
		f.FromSeq = v
	}
	if i := bytes.Index(data, keyPart); i >= 0 {
		part := data[i+len(keyPart):]
		if j := bytes.IndexByte(part, '}'); j >= 0 {
			part = part[:j]
		}
		end, okEnd := uintAfter(part, keyEnd)
		size, okSize := uintAfter(part, keySize)
		f.Part, f.LastPart = true, okEnd && okSize && end == size
	}
	f.Type = stringAfter(data, keyType)
	if s := stringAfter(data, keyTime); s != nil {
		if t, err := time.Parse(time.RFC3339Nano, string(s)); err == nil {
			f.Time, f.HasTime = t, true
		}
	}
	return f
}

// uintAfter parses the unsigned integer right after the first key.
func uintAfter(data, key []byte) (uint64, bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return v, err == nil
}

// stringAfter returns the raw (unescaped) string value after the first key
// (which ends with its opening quote), nil if the key or the closing quote
// is missing. The values read here (types, RFC 3339 times) hold no escapes.
func stringAfter(data, key []byte) []byte {
	i := bytes.Index(data, key)
	if i < 0 {
		return nil
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 64 {
		return nil
	}
	return rest[:j]
}

// pushKind classifies a Centrifugo uni_sse message (the JSON of a protocol
// Push, one per "data:" line): connect (the reader is subscribed to the
// channels of its token), disconnect (e.g. 3008 "slow"), a publication, or
// other (an empty {} ping, anything else).
type pushKind int

const (
	pushOther pushKind = iota
	pushConnect
	pushDisconnect
	pushPub
)

var (
	prefixConnect    = []byte(`{"connect":`)
	prefixDisconnect = []byte(`{"disconnect":`)
	keyPub           = []byte(`"pub":`)
)

func classifyPush(data []byte) pushKind {
	switch {
	case bytes.HasPrefix(data, prefixConnect):
		return pushConnect
	case bytes.HasPrefix(data, prefixDisconnect):
		return pushDisconnect
	case bytes.Contains(data, keyPub):
		return pushPub
	}
	return pushOther
}
