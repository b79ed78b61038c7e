package tracing

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"sync"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Span is one span a Receiver got, flattened for tests.
type Span struct {
	TraceID, SpanID, ParentID string // hex; ParentID "" for a root span
	Name                      string
	Kind                      string // "server", "client", "internal", ...
	Service, Instance         string // the resource's service.name and service.instance.id
	Attrs                     map[string]any
	Error                     bool   // status ERROR
	Status                    string // the status message
}

// Receiver is a minimal OTLP trace receiver for tests, in a non-test file
// so any package's tests can run one: an http.Handler for OTLP/HTTP
// (protobuf, POST /v1/traces, optionally gzip) and a gRPC TraceService
// (register it with collectortrace.RegisterTraceServiceServer). Safe for
// concurrent use.
type Receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []Span
}

// ServeHTTP takes an OTLP/HTTP export request.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var m collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&m)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Export takes an OTLP/gRPC export request.
func (r *Receiver) Export(_ context.Context, m *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.add(m)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Spans returns a copy of every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

func (r *Receiver) add(m *collectortrace.ExportTraceServiceRequest) {
	var got []Span
	for _, rs := range m.ResourceSpans {
		res := attrMap(rs.GetResource().GetAttributes())
		service, _ := res["service.name"].(string)
		instance, _ := res["service.instance.id"].(string)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					Name: s.Name, Service: service, Instance: instance, Attrs: attrMap(s.Attributes),
					Error: s.GetStatus().GetCode() == 2, Status: s.GetStatus().GetMessage()}
				if len(s.ParentSpanId) > 0 {
					sp.ParentID = hex.EncodeToString(s.ParentSpanId)
				}
				switch s.Kind {
				case 1:
					sp.Kind = "internal"
				case 2:
					sp.Kind = "server"
				case 3:
					sp.Kind = "client"
				case 4:
					sp.Kind = "producer"
				case 5:
					sp.Kind = "consumer"
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
}

// attrMap flattens OTLP attributes: strings, int64s, float64s, bools and
// []any for arrays.
func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	}
	return nil
}

// CountSpans counts the spans in an OTLP/HTTP export request's protobuf
// body without decoding it (a benchmark's receiver, which must cost its
// process little): the spans of every ScopeSpans of every ResourceSpans.
func CountSpans(body []byte) (int, error) {
	n := 0
	err := eachField(body, 1, func(rs []byte) error { // resource_spans
		return eachField(rs, 2, func(ss []byte) error { // scope_spans
			return eachField(ss, 2, func([]byte) error { n++; return nil }) // spans
		})
	})
	return n, err
}

// eachField calls f with the content of every length-delimited field num
// of the message b.
func eachField(b []byte, num protowire.Number, f func([]byte) error) error {
	for len(b) > 0 {
		got, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if got == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if err := f(v); err != nil {
				return err
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(got, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}
