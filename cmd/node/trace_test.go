package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/internal/tracing"
)

// postTraced starts a six-proposer run (max_tokens 500 per step), with the
// client's traceparent when it is not empty, and returns the run's id and
// trace id as the run resource shows them.
func postTraced(t *testing.T, base, traceparent string) (id, traceID string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/runs", strings.NewReader(`{"query":"How do vector clocks work?","profile":"moa6","max_tokens":500}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		ID      string `json:"id"`
		TraceID string `json:"trace_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %v", resp.StatusCode, err)
	}
	return v.ID, v.TraceID
}

// With the standard OTEL_* variables pointing every process at an OTLP/HTTP
// receiver, each run is one trace: the gateway's request span (under the
// client's traceparent when it sent one), admission and placement, the
// coordinator's run on one node, its steps, and the provider calls (each
// step's one attempt) on the nodes that ran them — at least two node processes (the
// three-node stage cluster spreads a six-proposer run over all three).
// Every span's parent is in the trace, and the provider spans carry the
// GenAI attributes.
func TestOneTracePerRunAcrossProcesses(t *testing.T) {
	rcv := &tracing.Receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: spans reach the receiver soon after they end
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
	c := startStageCluster(t)

	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	runs := map[string]string{} // run id -> trace id
	id, tid := postTraced(t, c.gw, "00-"+clientTrace+"-"+clientSpan+"-01")
	if tid != clientTrace {
		t.Errorf("the run's trace id is %q, want the client's %q", tid, clientTrace)
	}
	runs[id] = tid
	id2, tid2 := postTraced(t, c.gw, "")
	if tid2 == "" || tid2 == clientTrace {
		t.Errorf("a run without a traceparent has trace id %q", tid2)
	}
	runs[id2] = tid2
	for id := range runs {
		if last := streamEvents(t, c.gw, id, nil); last["type"] != "run_completed" {
			t.Fatalf("run %s ended with %v", id, last)
		}
	}

	byTrace := func() map[string][]tracing.Span {
		m := map[string][]tracing.Span{}
		for _, s := range rcv.Spans() {
			m[s.TraceID] = append(m[s.TraceID], s)
		}
		return m
	}
	// Complete: the run span (ended with the run) and the seven steps'
	// provider calls have been exported.
	complete := func(spans []tracing.Span) bool {
		run, chats, server := false, 0, false
		for _, s := range spans {
			switch {
			case s.Name == "qlc.run":
				run = true
			case strings.HasPrefix(s.Name, "chat "):
				chats++
			case s.Kind == "server" && s.Service == "qlc-gateway":
				server = true
			}
		}
		return run && server && chats >= 7
	}
	waitUntil(t, 20*time.Second, "every run's spans at the receiver", func() bool {
		m := byTrace()
		for _, tid := range runs {
			if !complete(m[tid]) {
				return false
			}
		}
		return true
	})

	m := byTrace()
	for id, tid := range runs {
		t.Run(id, func(t *testing.T) {
			spans := m[tid]
			ids := map[string]bool{}
			for _, s := range spans {
				ids[s.SpanID] = true
			}
			nodes, names := map[string]bool{}, map[string]int{}
			roots := 0
			for _, s := range spans {
				names[strings.Fields(s.Name)[0]]++
				if s.Service == "qlc-node" {
					nodes[s.Instance] = true
				}
				if rid, ok := s.Attrs["qlc.run.id"]; ok && rid != id {
					t.Errorf("span %s of run %v is in run %s's trace", s.Name, rid, id)
				}
				switch {
				case s.ParentID == "":
					roots++
				case tid == clientTrace && s.ParentID == clientSpan:
					if s.Kind != "server" || s.Service != "qlc-gateway" {
						t.Errorf("the client's span is the parent of %s (%s), want only the gateway's server span", s.Name, s.Service)
					}
				case !ids[s.ParentID]:
					t.Errorf("span %s (%s %s) has parent %s, not in the trace", s.Name, s.Service, s.Instance, s.ParentID)
				}
				if s.Error {
					t.Errorf("span %s failed: %s", s.Name, s.Status)
				}
			}
			if want := map[bool]int{true: 0, false: 1}[tid == clientTrace]; roots != want {
				t.Errorf("%d root spans, want %d", roots, want)
			}
			if len(nodes) < 2 {
				t.Errorf("spans from %d node processes (%v), want at least 2", len(nodes), nodes)
			}
			for _, n := range []string{"POST", "qlc.admission", "qlc.placement", "qlc.run", "qlc.step", "chat"} {
				if names[n] == 0 {
					t.Errorf("no %s span; spans: %v", n, names)
				}
			}
			// No step retried, fell back or hedged: each step's one attempt
			// is its provider call, the step's child (on the node that ran
			// it), with no qlc.attempt span between them.
			if names["qlc.attempt"] != 0 {
				t.Errorf("%d qlc.attempt spans in a run without retries, fallbacks or hedges", names["qlc.attempt"])
			}
			byID := map[string]tracing.Span{}
			for _, s := range spans {
				byID[s.SpanID] = s
			}
			for _, s := range spans {
				if strings.HasPrefix(s.Name, "chat ") && !strings.HasPrefix(byID[s.ParentID].Name, "qlc.step ") {
					t.Errorf("%s's parent is %q, want its step", s.Name, byID[s.ParentID].Name)
				}
			}
			models := map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true, "f": true, "agg": true}
			for _, s := range spans {
				switch {
				case strings.HasPrefix(s.Name, "chat "):
					if s.Kind != "client" {
						t.Errorf("%s is a %s span, want client", s.Name, s.Kind)
					}
					checkAttrs(t, s, map[string]any{
						"gen_ai.operation.name": "chat", "gen_ai.provider.name": "sim", "gen_ai.request.max_tokens": int64(500),
						"gen_ai.response.finish_reasons": []any{"stop"},
					})
					for _, k := range []string{"gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"} {
						if _, ok := s.Attrs[k]; !ok {
							t.Errorf("%s has no %s: %v", s.Name, k, s.Attrs)
						}
					}
					if m, _ := s.Attrs["gen_ai.request.model"].(string); !models[m] || s.Name != "chat "+m {
						t.Errorf("%s: gen_ai.request.model %v", s.Name, s.Attrs["gen_ai.request.model"])
					}
					if _, ok := s.Attrs["gen_ai.input.messages"]; ok {
						t.Errorf("%s records the prompt without the operator's opt-in", s.Name)
					}
				}
			}
		})
	}
}

func checkAttrs(t *testing.T, s tracing.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(s.Attrs[k]) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v", s.Name, k, s.Attrs[k], v)
		}
	}
}
