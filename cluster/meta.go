package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/cpuid/v2"
)

// metaVersion is the first byte of the metadata. Decoders accept any version >= 1 and ignore bytes after
// the v1 fields, so a later version may append fields without breaking older members.
const metaVersion = 1

// errMeta is wrapped by every metadata decoding error.
var errMeta = errors.New("cluster: bad member metadata")

// knownFeatures is the fixed, append-only table of CPU features announced as a bitmask (bit i = entry i).
var knownFeatures = []struct {
	name string
	id   cpuid.FeatureID
}{
	{"sse4.2", cpuid.SSE42}, {"popcnt", cpuid.POPCNT}, {"avx", cpuid.AVX}, {"avx2", cpuid.AVX2},
	{"fma3", cpuid.FMA3}, {"bmi1", cpuid.BMI1}, {"bmi2", cpuid.BMI2},
	{"avx512f", cpuid.AVX512F}, {"avx512bw", cpuid.AVX512BW}, {"avx512vl", cpuid.AVX512VL},
	{"avx512dq", cpuid.AVX512DQ}, {"avx512cd", cpuid.AVX512CD}, {"avx512vbmi", cpuid.AVX512VBMI},
	{"avx512vnni", cpuid.AVX512VNNI}, {"aesni", cpuid.AESNI}, {"sha", cpuid.SHA},
	{"asimd", cpuid.ASIMD},
}

// KnownFeatures lists the CPU feature names members can announce (lower case, as in Member.Features).
func KnownFeatures() []string {
	out := make([]string, len(knownFeatures))
	for i, f := range knownFeatures {
		out[i] = f.name
	}
	return out
}

func featureBit(name string) int {
	for i, f := range knownFeatures {
		if f.name == name {
			return i
		}
	}
	return -1
}

// localFeatures returns the bitmask of this CPU's features minus disabled.
func localFeatures(disabled []string) uint64 {
	var mask uint64
	for i, f := range knownFeatures {
		if cpuid.CPU.Supports(f.id) {
			mask |= 1 << i
		}
	}
	for _, d := range disabled {
		if b := featureBit(strings.ToLower(d)); b >= 0 {
			mask &^= 1 << b
		}
	}
	return mask
}

func featureNames(mask uint64) []string {
	var out []string
	for i, f := range knownFeatures {
		if mask&(1<<i) != 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// meta is what a member announces. Encoded form (v1): version byte, uvarint load, uvarint feature mask,
// then length-prefixed (uvarint) strings remote address and version, uvarint kind count and that many
// length-prefixed kinds.
type meta struct {
	Load       int
	Features   uint64
	RemoteAddr string
	Version    string
	Kinds      []string
	Draining   bool // flags bit 0; the flags come after the v1 fields, so older readers ignore them
	// Pressure (issue 18), after the flags (older readers ignore it): the adaptive limit on Load
	// (0: none), the runs queued for a run slot, and recent stage attempts' mean duration in ms.
	Limit, Queued, LatencyMs int
	// Stage attempts (issue 14), after the pressure (older readers ignore
	// them): the parallel steps' attempts running and the adaptive limit
	// on them (0: none).
	StageActive, StageLimit int
	// LoadSeq (issue 17), after the stage attempts (older readers ignore it): the sequence of the load
	// above, as in load messages (load.go); 0 from older members. A member's load is whichever of this
	// snapshot and its load messages has the higher sequence.
	LoadSeq uint64
}

func (m meta) encode() []byte {
	b := make([]byte, 0, 64)
	b = append(b, metaVersion)
	load := m.Load
	if load < 0 {
		load = 0
	}
	b = binary.AppendUvarint(b, uint64(load))
	b = binary.AppendUvarint(b, m.Features)
	b = appendString(b, m.RemoteAddr)
	b = appendString(b, m.Version)
	b = binary.AppendUvarint(b, uint64(len(m.Kinds)))
	for _, k := range m.Kinds {
		b = appendString(b, k)
	}
	var flags uint64
	if m.Draining {
		flags |= 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(max(m.Limit, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.Queued, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.LatencyMs, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.StageActive, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.StageLimit, 0)))
	return binary.AppendUvarint(b, m.LoadSeq)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeMeta parses encoded metadata. It never panics on any input (FuzzDecodeMeta).
func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", errMeta)
	}
	if b[0] < 1 {
		return m, fmt.Errorf("%w: version %d", errMeta, b[0])
	}
	r := metaReader{b: b[1:]}
	load := r.uvarint()
	if load > 1<<31-1 {
		return m, fmt.Errorf("%w: load %d out of range", errMeta, load)
	}
	m.Load = int(load)
	m.Features = r.uvarint()
	m.RemoteAddr = r.str()
	m.Version = r.str()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) { // each kind takes >= 1 byte
		return meta{}, fmt.Errorf("%w: %d kinds in %d bytes", errMeta, n, len(r.b))
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m.Kinds = append(m.Kinds, r.str())
	}
	if r.err == nil && len(r.b) > 0 { // flags, absent in older encodings
		m.Draining = r.uvarint()&1 != 0
	}
	if r.err == nil && len(r.b) > 0 { // pressure, absent in older encodings
		for _, p := range []*int{&m.Limit, &m.Queued, &m.LatencyMs} {
			v := r.uvarint()
			if v > 1<<31-1 {
				return meta{}, fmt.Errorf("%w: pressure %d out of range", errMeta, v)
			}
			*p = int(v)
		}
	}
	if r.err == nil && len(r.b) > 0 { // stage attempts, absent in older encodings
		for _, p := range []*int{&m.StageActive, &m.StageLimit} {
			v := r.uvarint()
			if v > 1<<31-1 {
				return meta{}, fmt.Errorf("%w: stage load %d out of range", errMeta, v)
			}
			*p = int(v)
		}
	}
	if r.err == nil && len(r.b) > 0 { // load sequence, absent in older encodings
		m.LoadSeq = r.uvarint()
	}
	if r.err != nil {
		return meta{}, r.err
	}
	return m, nil
}

type metaReader struct {
	b   []byte
	err error
}

func (r *metaReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: truncated number", errMeta)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: string of %d bytes, %d left", errMeta, n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// memberFromMeta builds a Member from a node's name, gossip address and metadata. Undecodable metadata
// gives a member with no kinds (it is listed but never chosen for placement).
// It also returns the sequence of the metadata's load (0 if absent or undecodable).
func memberFromMeta(name, addr string, raw []byte) (Member, uint64, error) {
	m := Member{Name: name, GossipAddr: addr}
	md, err := decodeMeta(raw)
	if err != nil {
		return m, 0, err
	}
	m.RemoteAddr, m.Version, m.Load, m.Draining = md.RemoteAddr, md.Version, md.Load, md.Draining
	m.Limit, m.Queued, m.StageLatency = md.Limit, md.Queued, time.Duration(md.LatencyMs)*time.Millisecond
	m.StageLoad, m.StageLimit = md.StageActive, md.StageLimit
	m.Kinds = slices.Clone(md.Kinds)
	m.Features = featureNames(md.Features)
	return m, md.LoadSeq, nil
}
