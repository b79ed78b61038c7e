package discover

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The model lists below are what each server writes (trimmed to the
// fields that matter and a few that do not).
const (
	ollamaTagsJSON = `{"models":[
	 {"name":"llama3.1:8b","model":"llama3.1:8b","modified_at":"2025-01-01T00:00:00Z","size":4920753328,"details":{"format":"gguf","family":"llama","parameter_size":"8.0B","quantization_level":"Q4_K_M"}},
	 {"name":"nomic-embed-text:latest","model":"nomic-embed-text:latest","size":274302450,"details":{"family":"nomic-bert","parameter_size":"137M"}},
	 {"name":"qwen2.5:14b","model":"qwen2.5:14b","size":8988124069,"details":{"family":"qwen2","parameter_size":"14.8B"}}]}`
	llamaCppJSON = `{"models":[{"name":"Qwen2.5-7B-Instruct-Q4_K_M.gguf","model":"Qwen2.5-7B-Instruct-Q4_K_M.gguf","type":"model","capabilities":["completion"]}],
	 "object":"list","data":[{"id":"Qwen2.5-7B-Instruct-Q4_K_M.gguf","object":"model","created":1761004800,"owned_by":"llamacpp",
	 "meta":{"vocab_type":2,"n_vocab":152064,"n_ctx_train":32768,"n_embd":3584,"n_params":7615616512,"size":4677120000}}]}`
	vllmJSON = `{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","created":1761004800,"owned_by":"vllm",
	 "root":"meta-llama/Llama-3.1-8B-Instruct","parent":null,"max_model_len":8192,"permission":[{"id":"modelperm-x","object":"model_permission"}]}]}`
	lmStudioJSON = `{"data":[{"id":"qwen2.5-7b-instruct","object":"model","owned_by":"organization_owner"},
	 {"id":"text-embedding-nomic-embed-text-v1.5","object":"model","owned_by":"organization_owner"}],"object":"list"}`
	qlcModelsJSON = `{"object":"list","data":[{"id":"qlc-balanced","object":"model","created":0,"owned_by":"qlc"}]}`
)

// listing serves path → JSON body; any other path is a 404.
func listing(routes map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := routes[r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	})
}

// serve starts h on 127.0.0.1 and returns its port.
func serve(t *testing.T, h http.Handler) int {
	t.Helper()
	srv := httptest.NewServer(h) // binds 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// closedPort is a port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func discoverT(t *testing.T, cfg Config) Result {
	t.Helper()
	res, err := Discover(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestDiscoverEachServerKind(t *testing.T) {
	ollama := serve(t, listing(map[string]string{"/api/tags": ollamaTagsJSON}))
	llama := serve(t, listing(map[string]string{"/v1/models": llamaCppJSON}))
	vllm := serve(t, listing(map[string]string{"/v1/models": vllmJSON}))
	lms := serve(t, listing(map[string]string{"/v1/models": lmStudioJSON}))
	closed := closedPort(t)
	res := discoverT(t, Config{Targets: []Target{{Ollama, ollama}, {LlamaCpp, llama}, {LlamaCpp, closed}, {VLLM, vllm}, {LMStudio, lms}}})
	if len(res.Skipped) != 0 {
		t.Fatalf("skipped: %+v", res.Skipped)
	}
	want := []struct {
		kind    Kind
		port    int
		models  []Model
		ignored []string
	}{
		{Ollama, ollama, []Model{{ID: "llama3.1:8b", Params: 8}, {ID: "qwen2.5:14b", Params: 14.8}}, []string{"nomic-embed-text:latest"}},
		{LlamaCpp, llama, []Model{{ID: "Qwen2.5-7B-Instruct-Q4_K_M.gguf", Params: 7.615616512}}, nil},
		{VLLM, vllm, []Model{{ID: "meta-llama/Llama-3.1-8B-Instruct", Params: 8, ContextWindow: 8192}}, nil},
		{LMStudio, lms, []Model{{ID: "qwen2.5-7b-instruct", Params: 7}}, []string{"text-embedding-nomic-embed-text-v1.5"}},
	}
	if len(res.Servers) != len(want) {
		t.Fatalf("found %d servers, want %d (the closed port is not one): %+v", len(res.Servers), len(want), res.Servers)
	}
	for i, w := range want {
		s := res.Servers[i]
		addr := net.JoinHostPort("127.0.0.1", itoa(w.port))
		if s.Kind != w.kind || s.Addr != addr || s.BaseURL != "http://"+addr+"/v1" || !slices.Equal(s.Models, w.models) || !slices.Equal(s.Ignored, w.ignored) {
			t.Errorf("server %d:\n got %+v\nwant %+v", i, s, w)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// An Ollama that answers only the OpenAI API (a proxy in front of it, an
// old version) is still found; a server answering on the "wrong" port is
// named by what it says it is.
func TestDiscoverFallsBackToOpenAIListAndTrustsOwner(t *testing.T) {
	ollama := serve(t, listing(map[string]string{"/v1/models": `{"object":"list","data":[{"id":"gemma3:4b","object":"model","created":1,"owned_by":"library"}]}`}))
	vllmOn8080 := serve(t, listing(map[string]string{"/v1/models": vllmJSON}))
	res := discoverT(t, Config{Targets: []Target{{Ollama, ollama}, {LlamaCpp, vllmOn8080}}})
	if len(res.Servers) != 2 || res.Servers[0].Kind != Ollama || res.Servers[0].Models[0] != (Model{ID: "gemma3:4b", Params: 4}) ||
		res.Servers[1].Kind != VLLM {
		t.Fatalf("%+v (skipped %+v)", res.Servers, res.Skipped)
	}
}

// A server slower than the timeout is skipped, and Discover does not wait
// for it: the whole look takes about one timeout, and the quick server is
// still found.
func TestDiscoverSkipsSlowServerQuickly(t *testing.T) {
	release := make(chan struct{})
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer close(release) // before the server's Close waits for the handler
	quick := serve(t, listing(map[string]string{"/v1/models": vllmJSON}))
	start := time.Now()
	res := discoverT(t, Config{Targets: []Target{{LlamaCpp, slow}, {VLLM, quick}}, Hosts: []string{"127.0.0.1"}, Timeout: 150 * time.Millisecond})
	took := time.Since(start)
	if took > time.Second {
		t.Fatalf("Discover took %v with a 150ms timeout", took)
	}
	if len(res.Servers) != 1 || res.Servers[0].Kind != VLLM {
		t.Fatalf("servers %+v", res.Servers)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, "no answer within 150ms") {
		t.Fatalf("skipped %+v", res.Skipped)
	}
}

// QLC's own gateway (or another QLC on this machine) is never taken for a
// model server: by its header, and by its model list if a proxy drops the
// header.
func TestDiscoverSkipsQLCItself(t *testing.T) {
	byHeader := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(QLCHeader, "qlc")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"missing API key","type":"invalid_request_error","code":"missing_api_key"}}`))
	}))
	byList := serve(t, listing(map[string]string{"/v1/models": qlcModelsJSON}))
	ollamaPortQLC := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(QLCHeader, "qlc")
		http.NotFound(w, r)
	}))
	res := discoverT(t, Config{Targets: []Target{{LlamaCpp, byHeader}, {LlamaCpp, byList}, {Ollama, ollamaPortQLC}}, Hosts: []string{"127.0.0.1"}})
	if len(res.Servers) != 0 {
		t.Fatalf("QLC taken for a model server: %+v", res.Servers)
	}
	if len(res.Skipped) != 3 {
		t.Fatalf("skipped %+v", res.Skipped)
	}
	for _, s := range res.Skipped {
		if s.Reason != "QLC itself" {
			t.Errorf("%+v", s)
		}
	}
	// SkipPorts leaves a port alone altogether (the caller's own listener).
	res = discoverT(t, Config{Targets: []Target{{LlamaCpp, byHeader}}, SkipPorts: []int{byHeader}})
	if len(res.Servers)+len(res.Skipped) != 0 {
		t.Fatalf("a skipped port was probed: %+v", res)
	}
}

func TestDiscoverSkipsServersItCannotUse(t *testing.T) {
	keyed := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
	}))
	notAList := serve(t, listing(map[string]string{"/v1/models": `<html>hello</html>`}))
	empty := serve(t, listing(map[string]string{"/v1/models": `{"object":"list","data":[{"id":"bge-m3","owned_by":"vllm"}]}`}))
	res := discoverT(t, Config{Targets: []Target{{VLLM, keyed}, {LlamaCpp, notAList}, {VLLM, empty}}, Hosts: []string{"127.0.0.1"}})
	if len(res.Servers) != 0 || len(res.Skipped) != 3 {
		t.Fatalf("%+v", res)
	}
	for i, want := range []string{"asks for an API key", "not a model list", "lists no chat model"} {
		if !strings.Contains(res.Skipped[i].Reason, want) {
			t.Errorf("skipped[%d] = %q, want %q", i, res.Skipped[i].Reason, want)
		}
	}
}

// Nothing beyond loopback is ever probed: a host that is not a loopback
// IP (or is a name) is refused before any probe, the client cannot dial
// anything else, and a redirect elsewhere is not followed.
func TestDiscoverRefusesNonLoopback(t *testing.T) {
	for _, h := range []string{"192.0.2.1", "10.0.0.1", "0.0.0.0", "::", "localhost", "example.com", "2001:db8::1", ""} {
		if _, err := Discover(context.Background(), Config{Hosts: []string{h}}); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("host %q: err %v, want ErrNotLoopback", h, err)
		}
	}
	for _, h := range []string{"127.0.0.1", "127.3.2.1", "::1"} {
		if _, err := Discover(context.Background(), Config{Hosts: []string{h}, Targets: []Target{}}); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	}
	c := newClient(time.Second)
	for _, u := range []string{"http://192.0.2.1:11434/api/tags", "http://[2001:db8::1]:8000/v1/models"} {
		if _, err := c.Get(u); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("GET %s: err %v, want ErrNotLoopback", u, err)
		}
	}
	redirect := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1:8000/v1/models", http.StatusFound)
	}))
	res := discoverT(t, Config{Targets: []Target{{VLLM, redirect}}, Hosts: []string{"127.0.0.1"}})
	if len(res.Servers) != 0 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, "redirects") {
		t.Fatalf("%+v", res)
	}
}

// The default targets are the well-known ports: with Ollama's port free,
// a fake Ollama bound to it is found by a zero Config.
func TestDiscoverDefaultPorts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:11434")
	if err != nil {
		t.Skipf("Ollama's port 11434 is not free here: %v", err)
	}
	srv := httptest.NewUnstartedServer(listing(map[string]string{"/api/tags": ollamaTagsJSON}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	res := discoverT(t, Config{})
	i := slices.IndexFunc(res.Servers, func(s Server) bool { return s.Addr == "127.0.0.1:11434" })
	if i < 0 || res.Servers[i].Kind != Ollama || res.Servers[i].BaseURL != "http://127.0.0.1:11434/v1" || len(res.Servers[i].Models) != 2 {
		t.Fatalf("the fake Ollama on 11434 was not found: %+v", res)
	}
	t.Logf("found on this machine: %+v; skipped: %+v", res.Servers, res.Skipped)
}

func TestParamsFromName(t *testing.T) {
	for name, want := range map[string]float64{
		"llama3.1:8b": 8, "qwen2.5:14b": 14, "Llama-3.1-70B-Instruct": 70, "mistral-7b-instruct-v0.2.Q4_K_M.gguf": 7,
		"gemma3:270m": 0.27, "qwen2.5:0.5b": 0.5, "phi4": 0, "gpt-oss:20b": 20, "deepseek-r1": 0,
	} {
		if got := paramsFromName(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

func TestParseTargets(t *testing.T) {
	if got, err := ParseTargets(""); err != nil || !slices.Equal(got, DefaultTargets()) {
		t.Fatalf("empty: %v %v", got, err)
	}
	got, err := ParseTargets(" ollama:11500, VLLM:8001 ,")
	if err != nil || !slices.Equal(got, []Target{{Ollama, 11500}, {VLLM, 8001}}) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"ollama", "ollama:x", "ollama:0", "ollama:70000", "tgi:8080", ":8080", "10.0.0.1:8080"} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A server on ::1 only is found there; one on both loopbacks is one server.
func TestDiscoverIPv6LoopbackAndBoth(t *testing.T) {
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	port := ln6.Addr().(*net.TCPAddr).Port
	h := listing(map[string]string{"/v1/models": vllmJSON})
	go func() { _ = http.Serve(ln6, h) }()
	defer ln6.Close()
	res := discoverT(t, Config{Targets: []Target{{VLLM, port}}})
	want := "[::1]:" + strconv.Itoa(port)
	if len(res.Servers) != 1 || res.Servers[0].Addr != want || res.Servers[0].BaseURL != "http://"+want+"/v1" {
		t.Fatalf("%+v", res)
	}
	ln4, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Skipf("port %d is taken on 127.0.0.1: %v", port, err)
	}
	go func() { _ = http.Serve(ln4, h) }()
	defer ln4.Close()
	res = discoverT(t, Config{Targets: []Target{{VLLM, port}}})
	if len(res.Servers) != 1 || res.Servers[0].Addr != "127.0.0.1:"+strconv.Itoa(port) || len(res.Skipped) != 0 {
		t.Fatalf("%+v", res)
	}
}
