package cluster

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	k32 := bytes.Repeat([]byte{0xab}, 32)
	k16 := []byte("0123456789abcdef")
	ok := map[string][]byte{
		hex.EncodeToString(k32):                             k32,
		" " + base64.StdEncoding.EncodeToString(k16) + "\n": k16,
		base64.RawURLEncoding.EncodeToString(k32):           k32,
		base64.StdEncoding.EncodeToString(k32[:24]):         k32[:24],
	}
	for in, want := range ok {
		got, err := ParseKey(in)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", in, err)
		}
		if want != nil && !bytes.Equal(got, want) {
			t.Fatalf("ParseKey(%q) = %x", in, got)
		}
		if len(got) != 16 && len(got) != 24 && len(got) != 32 {
			t.Fatalf("len %d", len(got))
		}
	}
	for _, in := range []string{"", "   ", "zz", hex.EncodeToString(k16[:10]), base64.StdEncoding.EncodeToString(k16[:15]), "not a key at all!", "0123456789abcdef0123456789abcdeg"} {
		_, err := ParseKey(in)
		if !errors.Is(err, ErrBadKey) {
			t.Fatalf("ParseKey(%q): %v, want ErrBadKey", in, err)
		}
		if in != "" && len(in) > 4 && strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Fatalf("error echoes the key: %v", err)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := meta{Load: 300, Features: 0b1011, RemoteAddr: "10.1.2.3:8090", Version: "v0.1.0", Kinds: []string{"coordinator", "tokenizer"}}
	b := m.encode()
	got, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Load != m.Load || got.Features != m.Features || got.RemoteAddr != m.RemoteAddr || got.Version != m.Version || !slices.Equal(got.Kinds, m.Kinds) {
		t.Fatalf("round trip: %+v", got)
	}
	// A later version may append fields.
	b2 := append(append([]byte{}, b...), 9, 9, 9)
	b2[0] = 2
	if got, err := decodeMeta(b2); err != nil || got.RemoteAddr != m.RemoteAddr {
		t.Fatalf("forward compatibility: %v", err)
	}
	// b ends with the flags, three pressure numbers, two stage numbers and
	// the load sequence, one byte each here.
	v1 := len(b) - 7
	for i := range b[:len(b)-1] { // every truncation fails cleanly...
		// ...but without the load sequence (the stage numbers, the pressure, the flags) it is an older format
		older := i == v1 || i == v1+1 || i == v1+4 || i == v1+6
		if _, err := decodeMeta(b[:i]); (err == nil) != older {
			t.Fatalf("truncated to %d bytes: err %v", i, err)
		}
	}
	if got, err := decodeMeta(b[:v1]); err != nil || got.Draining || got.Limit != 0 || got.RemoteAddr != m.RemoteAddr {
		t.Fatalf("metadata without flags: %+v %v", got, err)
	}
	m.Draining = true
	if got, err := decodeMeta(m.encode()); err != nil || !got.Draining {
		t.Fatalf("draining flag lost: %+v %v", got, err)
	}
	m.Limit, m.Queued, m.LatencyMs = 48, 7, 1234
	if got, err := decodeMeta(m.encode()); err != nil || got.Limit != 48 || got.Queued != 7 || got.LatencyMs != 1234 || !got.Draining {
		t.Fatalf("pressure lost: %+v %v", got, err)
	}
	m.StageActive, m.StageLimit = 300, 96
	if got, err := decodeMeta(m.encode()); err != nil || got.StageActive != 300 || got.StageLimit != 96 || got.Limit != 48 {
		t.Fatalf("stage load lost: %+v %v", got, err)
	}
	if got, err := decodeMeta(m.encode()[:len(m.encode())-4]); err != nil || got.StageActive != 0 || got.StageLimit != 0 || got.LatencyMs != 1234 {
		t.Fatalf("an older node's metadata (no stage load): %+v %v", got, err)
	}
	m.LoadSeq = 1_765_000_000_000_000_000 // wall-clock nanoseconds, as announced
	if got, err := decodeMeta(m.encode()); err != nil || got.LoadSeq != m.LoadSeq || got.StageLimit != 96 || got.Load != 300 {
		t.Fatalf("load sequence lost: %+v %v", got, err)
	}
	if got, err := decodeMeta(m.encode()[:len(m.encode())-9]); err != nil || got.LoadSeq != 0 || got.StageLimit != 96 {
		t.Fatalf("an older node's metadata (no load sequence): %+v %v", got, err)
	}
	if names := featureNames(localFeatures([]string{"avx2"})); slices.Contains(names, "avx2") {
		t.Fatal("disabled feature still present")
	}
}

func TestWireRoundTrip(t *testing.T) {
	n := fenceNotice{Target: "old", accusation: accusation{Accuser: "a", AccuserCount: 3, AccuserMin: "a"}}
	got, err := decodeFenceNotice(n.encode())
	if err != nil || got.Target != "old" || got.Accuser != "a" || got.AccuserCount != 3 || got.AccuserMin != "a" {
		t.Fatalf("notice: %+v %v", got, err)
	}
	s := pushState{Sender: "a", Count: 2, Min: "a", Dead: []string{"x", "y"}, Loads: []loadMsg{{Sender: "a", Seq: 9, Load: 3}, {Sender: "b", Seq: 1 << 60, StageLimit: 4}}}
	gs, err := decodePushState(s.encode())
	if err != nil || gs.Sender != "a" || gs.Count != 2 || !slices.Equal(gs.Dead, s.Dead) || !slices.Equal(gs.Loads, s.Loads) {
		t.Fatalf("state: %+v %v", gs, err)
	}
	// An older member's state ends after the tombstones: no loads.
	s.Loads = nil
	older := s.encode()
	older = older[:len(older)-1] // the zero load count
	if gs, err := decodePushState(older); err != nil || gs.Loads != nil || !slices.Equal(gs.Dead, s.Dead) {
		t.Fatalf("older state: %+v %v", gs, err)
	}
	if _, err := decodePushState(n.encode()); err == nil {
		t.Fatal("notice decoded as state")
	}
	l := loadMsg{Sender: "node-a", Seq: 1 << 62, Load: 7, Limit: 48, Queued: 3, LatencyMs: 1234, StageActive: 300, StageLimit: 96}
	gl, err := decodeLoad(l.encode())
	if err != nil || gl != l {
		t.Fatalf("load: %+v %v", gl, err)
	}
	// The tag tells the user messages apart: neither decodes as the other.
	if _, err := decodeLoad(n.encode()); err == nil {
		t.Fatal("notice decoded as load")
	}
	if _, err := decodeFenceNotice(l.encode()); err == nil {
		t.Fatal("load decoded as notice")
	}
	// A later version may append fields; every truncation fails cleanly.
	if gl, err := decodeLoad(append(l.encode(), 9, 9)); err != nil || gl != l {
		t.Fatalf("load with appended fields: %+v %v", gl, err)
	}
	for i := range len(l.encode()) {
		if _, err := decodeLoad(l.encode()[:i]); err == nil {
			t.Fatalf("load truncated to %d bytes decoded", i)
		}
	}
	if _, err := decodeLoad(loadMsg{Seq: 1}.encode()); err == nil {
		t.Fatal("load without a sender decoded")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(meta{Load: 1, Features: 3, RemoteAddr: "h:1", Version: "v", Kinds: []string{"k"}}.encode())
	f.Add([]byte{1, 0, 0, 0, 0, 200})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes to the same value.
		m2, err := decodeMeta(m.encode())
		if err != nil || m2.Load != m.Load || m2.RemoteAddr != m.RemoteAddr || !slices.Equal(m2.Kinds, m.Kinds) {
			t.Fatalf("re-encode mismatch: %+v vs %+v (%v)", m, m2, err)
		}
	})
}

func FuzzDecodeWire(f *testing.F) {
	f.Add(fenceNotice{Target: "t", accusation: accusation{Accuser: "a", AccuserCount: 2, AccuserMin: "a"}}.encode())
	f.Add(pushState{Sender: "s", Count: 1, Min: "s", Dead: []string{"d"}}.encode())
	f.Add(pushState{Sender: "s", Count: 1, Min: "s", Loads: []loadMsg{{Sender: "s", Seq: 3, Load: 1}}}.encode())
	f.Add(loadMsg{Sender: "n", Seq: 5, Load: 1, Limit: 2, Queued: 3, LatencyMs: 4, StageActive: 5, StageLimit: 6}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := decodeFenceNotice(b); err == nil {
			if _, err := decodeFenceNotice(n.encode()); err != nil {
				t.Fatal(err)
			}
		}
		if s, err := decodePushState(b); err == nil {
			s2, err := decodePushState(s.encode())
			if err != nil || !slices.Equal(s2.Loads, s.Loads) {
				t.Fatalf("state re-encode: %+v vs %+v (%v)", s, s2, err)
			}
		}
		if l, err := decodeLoad(b); err == nil {
			// What decodes re-encodes to something that decodes to the same value.
			if l2, err := decodeLoad(l.encode()); err != nil || l2 != l {
				t.Fatalf("load re-encode mismatch: %+v vs %+v (%v)", l, l2, err)
			}
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef")
	f.Add("MDEyMzQ1Njc4OWFiY2RlZg==")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err == nil && len(k) != 16 && len(k) != 24 && len(k) != 32 {
			t.Fatalf("accepted a %d-byte key", len(k))
		}
	})
}

func TestDecide(t *testing.T) {
	view := func(ns ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, n := range ns {
			m[n] = struct{}{}
		}
		return m
	}
	cases := []struct {
		name  string
		view  map[string]struct{}
		a     accusation
		fence bool
	}{
		{"accuser alive in our view: one-sided, fence", view("c", "a", "b"), accusation{Accuser: "a", AccuserCount: 1, AccuserMin: "a"}, true},
		{"minority side fences", view("c"), accusation{Accuser: "a", AccuserCount: 2, AccuserMin: "a"}, true},
		{"majority side stays", view("a", "b"), accusation{Accuser: "c", AccuserCount: 1, AccuserMin: "c"}, false},
		{"tie: side without the smallest name fences", view("c", "d"), accusation{Accuser: "a", AccuserCount: 2, AccuserMin: "a"}, true},
		{"tie: side with the smallest name stays", view("a", "b"), accusation{Accuser: "c", AccuserCount: 2, AccuserMin: "c"}, false},
		{"unknown accuser counts as the other side", view("x", "y", "z"), accusation{Accuser: "new", AccuserCount: 1, AccuserMin: "new"}, false},
	}
	for _, tc := range cases {
		self := ""
		for n := range tc.view {
			if n != tc.a.Accuser {
				self = n
				break
			}
		}
		if got, _ := decide(self, tc.view, tc.a); got != tc.fence {
			t.Errorf("%s: fence=%v", tc.name, got)
		}
	}
}

// TestPickPrefersUnsaturated: of the two rendezvous choices, one at its announced limit loses to one
// with room, even with a lower load.
func TestPickPrefersUnsaturated(t *testing.T) {
	ms := []Member{
		{Name: "a", Kinds: []string{"coordinator"}, Load: 4, Limit: 4},
		{Name: "b", Kinds: []string{"coordinator"}, Load: 9, Limit: 20},
	}
	for i := range 50 {
		key := fmt.Sprintf("run-%d", i)
		if m, ok := pickLeastLoaded(ms, "coordinator", key, 2); !ok || m.Name != "b" {
			t.Fatalf("%s: picked %s, want b (a is saturated)", key, m.Name)
		}
	}
	if !ms[0].Saturated() || ms[1].Saturated() || (Member{Load: 9}).Saturated() {
		t.Fatal("Saturated")
	}
}
