package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// The OTLP trace protobuf (opentelemetry-proto, trace/v1 and common/v1),
// written directly: field numbers of the messages encoded here.
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest.resource_spans

	fRSResource   = 1 // ResourceSpans
	fRSScopeSpans = 2
	fRSSchemaURL  = 3

	fResAttributes = 1 // Resource

	fSSScope     = 1 // ScopeSpans
	fSSSpans     = 2
	fSSSchemaURL = 3

	fScopeName    = 1 // InstrumentationScope
	fScopeVersion = 2

	fSpanTraceID       = 1 // Span
	fSpanSpanID        = 2
	fSpanTraceState    = 3
	fSpanParentSpanID  = 4
	fSpanName          = 5
	fSpanKind          = 6
	fSpanStart         = 7
	fSpanEnd           = 8
	fSpanAttributes    = 9
	fSpanDroppedAttrs  = 10
	fSpanEvents        = 11
	fSpanDroppedEvents = 12
	fSpanLinks         = 13
	fSpanDroppedLinks  = 14
	fSpanStatus        = 15
	fSpanFlags         = 16

	fEventTime    = 1 // Span.Event
	fEventName    = 2
	fEventAttrs   = 3
	fEventDropped = 4

	fLinkTraceID    = 1 // Span.Link
	fLinkSpanID     = 2
	fLinkTraceState = 3
	fLinkAttrs      = 4
	fLinkDropped    = 5
	fLinkFlags      = 6

	fStatusMessage = 2 // Status
	fStatusCode    = 3

	fKVKey   = 1 // KeyValue
	fKVValue = 2

	fAnyString = 1 // AnyValue
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5
	fAnyKVList = 6
	fAnyBytes  = 7

	fArrayValues = 1 // ArrayValue and KeyValueList

	// Span.flags: the W3C trace flags in the low byte, and whether the
	// parent is known to be remote (SpanFlags).
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// beginMsg appends field num's tag and a one-byte length placeholder; the
// message's content follows, then endMsg with the returned offset.
func beginMsg(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

var zeros [10]byte // a varint is at most 10 bytes

// endMsg writes the length of the message begun at start, moving its
// content right if the length needs more than the placeholder's byte.
func endMsg(b []byte, start int) []byte {
	n := len(b) - start
	k := protowire.SizeVarint(uint64(n))
	if k == 1 {
		b[start-1] = byte(n)
		return b
	}
	b = append(b, zeros[:k-1]...)
	copy(b[start-1+k:], b[start:start+n])
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendUvarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

func appendID(b []byte, num protowire.Number, id []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, id)
}

func unixNano(t time.Time) uint64 { return uint64(max(0, t.UnixNano())) }

func clampCount(n int) uint64 { return uint64(min(max(n, 0), math.MaxUint32)) }

// appendKeyValues appends kvs as repeated KeyValue field num.
func appendKeyValues(b []byte, num protowire.Number, kvs []attribute.KeyValue) []byte {
	for _, kv := range kvs {
		var at int
		b, at = beginMsg(b, num)
		b = appendString(b, fKVKey, string(kv.Key))
		var vat int
		b, vat = beginMsg(b, fKVValue)
		b = appendAnyValue(b, kv.Value)
		b = endMsg(b, vat)
		b = endMsg(b, at)
	}
	return b
}

// appendAnyValue appends an AnyValue's content (its oneof) as the OTLP
// exporter's conversion does (tracetransform.Value).
func appendAnyValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		b = protowire.AppendTag(b, fAnyBool, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, fAnyInt, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, fAnyBytes, protowire.BytesType)
		return protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		return appendArray(b, len(v.AsBoolSlice()), func(b []byte, i int) []byte {
			return appendAnyValue(b, attribute.BoolValue(v.AsBoolSlice()[i]))
		})
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.Int64Value(s[i])) })
	case attribute.FLOAT64SLICE:
		s := v.AsFloat64Slice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.Float64Value(s[i])) })
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, attribute.StringValue(s[i])) })
	case attribute.SLICE:
		s := v.AsSlice()
		return appendArray(b, len(s), func(b []byte, i int) []byte { return appendAnyValue(b, s[i]) })
	case attribute.MAP:
		var at int
		b, at = beginMsg(b, fAnyKVList)
		b = appendKeyValues(b, fArrayValues, v.AsMap())
		return endMsg(b, at)
	case attribute.EMPTY:
		return b
	default:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		return protowire.AppendString(b, "INVALID")
	}
}

// appendArray appends an AnyValue's array_value of n values.
func appendArray(b []byte, n int, value func([]byte, int) []byte) []byte {
	var at int
	b, at = beginMsg(b, fAnyArray)
	for i := 0; i < n; i++ {
		var vat int
		b, vat = beginMsg(b, fArrayValues)
		b = value(b, i)
		b = endMsg(b, vat)
	}
	return endMsg(b, at)
}

// spanFlags is Span.flags (and Span.Link.flags): the trace flags, and
// whether the parent (the linked span) is remote.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasIsRemote
	if parent.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

// appendSpan appends one ended span as a Span message (field num).
func appendSpan(b []byte, num protowire.Number, s *cspan) []byte {
	var at int
	b, at = beginMsg(b, num)
	tid, sid := s.sc.TraceID(), s.sc.SpanID()
	b = appendID(b, fSpanTraceID, tid[:])
	b = appendID(b, fSpanSpanID, sid[:])
	if ts := s.sc.TraceState(); ts.Len() > 0 {
		b = appendString(b, fSpanTraceState, ts.String())
	}
	if psid := s.parent.SpanID(); psid.IsValid() {
		b = appendID(b, fSpanParentSpanID, psid[:])
	}
	b = appendString(b, fSpanName, s.name)
	b = appendUvarint(b, fSpanKind, uint64(s.kind))
	b = appendFixed64(b, fSpanStart, unixNano(s.start))
	b = appendFixed64(b, fSpanEnd, unixNano(s.end))
	b = appendKeyValues(b, fSpanAttributes, s.attrs)
	b = appendUvarint(b, fSpanDroppedAttrs, clampCount(s.droppedAttrs))
	for _, e := range s.events {
		var eat int
		b, eat = beginMsg(b, fSpanEvents)
		b = appendFixed64(b, fEventTime, unixNano(e.time))
		b = appendString(b, fEventName, e.name)
		b = appendKeyValues(b, fEventAttrs, e.attrs)
		b = appendUvarint(b, fEventDropped, clampCount(e.dropped))
		b = endMsg(b, eat)
	}
	b = appendUvarint(b, fSpanDroppedEvents, clampCount(s.droppedEvents))
	for _, l := range s.links {
		var lat int
		b, lat = beginMsg(b, fSpanLinks)
		ltid, lsid := l.sc.TraceID(), l.sc.SpanID()
		b = appendID(b, fLinkTraceID, ltid[:])
		b = appendID(b, fLinkSpanID, lsid[:])
		if ts := l.sc.TraceState(); ts.Len() > 0 {
			b = appendString(b, fLinkTraceState, ts.String())
		}
		b = appendKeyValues(b, fLinkAttrs, l.attrs)
		b = appendUvarint(b, fLinkDropped, clampCount(l.dropped))
		b = appendFixed32(b, fLinkFlags, spanFlags(l.sc.TraceFlags(), l.sc))
		b = endMsg(b, lat)
	}
	b = appendUvarint(b, fSpanDroppedLinks, clampCount(s.droppedLinks))
	// Always a status, as the SDK's exporter sends (UNSET 0, OK 1, ERROR 2).
	var sat int
	b, sat = beginMsg(b, fSpanStatus)
	b = appendString(b, fStatusMessage, s.statusMsg)
	switch s.status {
	case codes.Ok:
		b = appendUvarint(b, fStatusCode, 1)
	case codes.Error:
		b = appendUvarint(b, fStatusCode, 2)
	}
	b = endMsg(b, sat)
	b = appendFixed32(b, fSpanFlags, spanFlags(s.sc.TraceFlags(), s.parent))
	return endMsg(b, at)
}

// encodeResource is a Resource message's content (its attributes).
func encodeResource(res *resource.Resource) []byte {
	if res == nil {
		return nil
	}
	return appendKeyValues(nil, fResAttributes, res.Attributes())
}

// encodeRequest appends an ExportTraceServiceRequest of spans (all of
// this process's resource, whose encoded attributes are res) to b: one
// ResourceSpans, a ScopeSpans per instrumentation scope.
func encodeRequest(b []byte, res []byte, schemaURL string, spans []*cspan) []byte {
	var at int
	b, at = beginMsg(b, fReqResourceSpans)
	var rat int
	b, rat = beginMsg(b, fRSResource)
	b = append(b, res...)
	b = endMsg(b, rat)
	// Scopes are few (a tracer per package): group by a scan per scope.
	var done []*compactTracer
	for i, s := range spans {
		t := s.tracer
		seen := false
		for _, d := range done {
			if d == t {
				seen = true
				break
			}
		}
		if seen {
			continue
		}
		done = append(done, t)
		var sat int
		b, sat = beginMsg(b, fRSScopeSpans)
		var scat int
		b, scat = beginMsg(b, fSSScope)
		b = appendString(b, fScopeName, t.scope.name)
		b = appendString(b, fScopeVersion, t.scope.version)
		b = endMsg(b, scat)
		for _, o := range spans[i:] {
			if o.tracer == t {
				b = appendSpan(b, fSSSpans, o)
			}
		}
		b = appendString(b, fSSSchemaURL, t.scope.schemaURL)
		b = endMsg(b, sat)
	}
	b = appendString(b, fRSSchemaURL, schemaURL)
	return endMsg(b, at)
}

// otlpHTTP posts compact spans to an OTLP/HTTP receiver as the SDK's
// otlptracehttp exporter does, from the variables it reads: the endpoint
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or
// OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; default
// https://localhost:4318/v1/traces), headers, timeout and gzip
// compression (each OTEL_EXPORTER_OTLP_TRACES_* first, then
// OTEL_EXPORTER_OTLP_*). TLS is the system's roots: a certificate
// variable sends Setup to the SDK. A 429, 502, 503 or 504 is retried
// (Retry-After, else 1 s doubling to 30 s) while the export's context
// lasts. Used by the queue's goroutine only.
type otlpHTTP struct {
	url       string
	headers   map[string]string
	timeout   time.Duration
	gzip      bool
	client    *http.Client
	res       []byte // the encoded resource
	schemaURL string
	backoff   time.Duration // the first wait before a retry without Retry-After

	// The request's buffers, kept from one export to the next unless the
	// transport may still read them (it had not closed the last body).
	buf  []byte
	zbuf bytes.Buffer
	zw   *gzip.Writer
}

// reqBody is a request body that says when the transport is done with it
// (it closes the body after writing it).
type reqBody struct {
	bytes.Reader
	closed chan struct{}
	once   sync.Once
}

func (b *reqBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// errOTLPConfig: the environment names an OTLP/HTTP setting this
// exporter does not parse (Setup then uses the SDK's).
var errOTLPConfig = errors.New("tracing: OTLP/HTTP setting for the SDK's exporter")

func otlpEnv(getenv func(string) string, key string) string {
	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_" + key)); v != "" {
		return v
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + key))
}

func newOTLPHTTP(getenv func(string) string, res *resource.Resource) (*otlpHTTP, error) {
	e := &otlpHTTP{timeout: 10 * time.Second, backoff: time.Second, headers: map[string]string{}, res: encodeResource(res)}
	if res != nil {
		e.schemaURL = res.SchemaURL()
	}
	switch {
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		e.url = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		e.url = strings.TrimRight(strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")), "/") + "/v1/traces"
	default:
		e.url = "https://localhost:4318/v1/traces"
	}
	u, err := url.Parse(e.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: endpoint %q", errOTLPConfig, e.url)
	}
	if h := otlpEnv(getenv, "HEADERS"); h != "" {
		for _, kv := range strings.Split(h, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k, kerr := url.PathUnescape(strings.TrimSpace(k))
			v, verr := url.PathUnescape(strings.TrimSpace(v))
			if !ok || k == "" || kerr != nil || verr != nil {
				return nil, fmt.Errorf("%w: headers", errOTLPConfig)
			}
			e.headers[k] = v
		}
	}
	if t := otlpEnv(getenv, "TIMEOUT"); t != "" {
		ms, err := strconv.Atoi(t)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("%w: timeout %q", errOTLPConfig, t)
		}
		e.timeout = time.Duration(ms) * time.Millisecond
	}
	switch c := strings.ToLower(otlpEnv(getenv, "COMPRESSION")); c {
	case "", "none":
	case "gzip":
		e.gzip = true
	default:
		return nil, fmt.Errorf("%w: compression %q", errOTLPConfig, c)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	e.client = &http.Client{Transport: tr}
	return e, nil
}

// export encodes spans and posts them (queue's export function).
func (e *otlpHTTP) export(ctx context.Context, spans []*cspan) error {
	e.buf = encodeRequest(e.buf[:0], e.res, e.schemaURL, spans)
	body := e.buf
	if e.gzip {
		e.zbuf.Reset()
		if e.zw == nil {
			e.zw = gzip.NewWriter(&e.zbuf)
		} else {
			e.zw.Reset(&e.zbuf)
		}
		_, _ = e.zw.Write(body)
		if err := e.zw.Close(); err != nil {
			return err
		}
		body = e.zbuf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	wait := e.backoff
	for {
		retry, released, err := e.post(ctx, body)
		if !released { // the transport may still read it: a new buffer next time
			if e.gzip {
				e.zbuf = bytes.Buffer{}
			} else {
				e.buf = nil
			}
		}
		if retry <= 0 {
			return err
		}
		if retry == time.Nanosecond { // no Retry-After: back off
			retry, wait = wait, min(2*wait, 30*time.Second)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// post sends one request; retry > 0 says to try again (after it, or with
// back-off when it is 1 ns); released, that the transport has closed
// (is done with) the body.
func (e *otlpHTTP) post(ctx context.Context, body []byte) (retry time.Duration, released bool, err error) {
	rb := &reqBody{closed: make(chan struct{})}
	rb.Reset(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, rb)
	if err != nil {
		return 0, true, err
	}
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if e.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.client.Do(req)
	defer func() {
		select {
		case <-rb.closed:
			released = true
		default:
		}
	}()
	if err != nil {
		return 0, false, fmt.Errorf("tracing: OTLP/HTTP export: %w", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc < 300:
		return 0, false, nil
	case sc == http.StatusTooManyRequests || sc == http.StatusBadGateway || sc == http.StatusServiceUnavailable || sc == http.StatusGatewayTimeout:
		retry = time.Nanosecond
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retry = time.Duration(s) * time.Second
		}
		return retry, false, fmt.Errorf("tracing: OTLP/HTTP export: %s", resp.Status)
	default:
		return 0, false, fmt.Errorf("tracing: OTLP/HTTP export: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
}

// shutdown closes the exporter's idle connections.
func (e *otlpHTTP) shutdown(context.Context) error {
	e.client.CloseIdleConnections()
	return nil
}
