package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework/openai"
)

// The gateway command finds a model server on this machine at start (here
// a fake llama.cpp server on a port given by -discover-ports), lists its
// profiles as local, and runs them: local-moa through the run API and
// local through the OpenAI endpoint, both answering with the server's
// text. With -discover-local=false it adds nothing.
func TestLocalModelsFoundByTheGatewayCommand(t *testing.T) {
	mock := &openai.Mock{Tokens: 3}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"big-8b.gguf","owned_by":"llamacpp"},{"id":"small-1b.gguf","owned_by":"llamacpp"}]}`))
	})
	mux.Handle("POST /v1/chat/completions", mock)
	fake := httptest.NewServer(mux)
	defer fake.Close()
	port := fake.Listener.Addr().(*net.TCPAddr).Port
	bin := buildGateway(t)

	dir := t.TempDir()
	p := startProc(t, bin, nil, "-local", "-ops-addr", "none", "-data-dir", dir, "-discover-ports", fmt.Sprintf("llamacpp:%d", port))
	base := "http://" + p.addrs.HTTP
	waitHealthy(t, http.DefaultClient, base+"/readyz")
	key := readDevKeys(t, dir).TenantKey
	local := localProfiles(t, base, key)
	if !strings.Contains(local["local"], "big-8b.gguf") || !strings.HasSuffix(local["local"], "(local)") || len(local) != 4 {
		t.Fatalf("local profiles: %v", local)
	}

	var run struct {
		ID, Status, Answer string
	}
	if code := doJSON(t, http.DefaultClient, "POST", base+"/v1/runs", key, `{"profile":"local-moa","query":"What runs here?"}`, &run); code != http.StatusCreated {
		t.Fatalf("POST /v1/runs: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for run.Status != "completed" {
		if run.Status == "failed" || run.Status == "cancelled" || time.Now().After(deadline) {
			t.Fatalf("local-moa run: %+v", run)
		}
		time.Sleep(20 * time.Millisecond)
		doJSON(t, http.DefaultClient, "GET", base+"/v1/runs/"+run.ID, key, "", &run)
	}
	if !strings.Contains(run.Answer, "t0 t1 t2") {
		t.Fatalf("local-moa answer %q", run.Answer)
	}
	var chat struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if code := doJSON(t, http.DefaultClient, "POST", base+"/v1/chat/completions", key,
		`{"model":"qlc-local","messages":[{"role":"user","content":"Hello?"}]}`, &chat); code != http.StatusOK ||
		len(chat.Choices) != 1 || !strings.Contains(chat.Choices[0].Message.Content, "t0 t1 t2") {
		t.Fatalf("qlc-local: %d %+v", code, chat)
	}
	if n := mock.Requests(); n != 3+4 { // moa: two proposers and the aggregator; local: four stages
		t.Errorf("the fake server answered %d requests, want 7", n)
	}

	dir2 := t.TempDir()
	p2 := startProc(t, bin, nil, "-local", "-ops-addr", "none", "-data-dir", dir2, "-discover-local=false", "-discover-ports", fmt.Sprintf("llamacpp:%d", port))
	base2 := "http://" + p2.addrs.HTTP
	waitHealthy(t, http.DefaultClient, base2+"/readyz")
	if local := localProfiles(t, base2, readDevKeys(t, dir2).TenantKey); len(local) != 0 {
		t.Fatalf("-discover-local=false still added %v", local)
	}
	if out, code := runToExit(t, bin, "-discover-local", "-nodes", "127.0.0.1:1", "-data-dir", filepath.Join(t.TempDir(), "d")); code == 0 ||
		!strings.Contains(out, "-discover-local") {
		t.Fatalf("-discover-local with -nodes: exit %d, %s", code, out)
	}
}

// localProfiles maps the gateway's local profiles to their descriptions.
func localProfiles(t *testing.T, base, key string) map[string]string {
	t.Helper()
	var list struct {
		Data []struct {
			Name, Description string
			Local             bool
		}
	}
	if code := doJSON(t, http.DefaultClient, "GET", base+"/v1/profiles", key, "", &list); code != http.StatusOK {
		t.Fatalf("GET /v1/profiles: %d", code)
	}
	out := map[string]string{}
	for _, p := range list.Data {
		if p.Local {
			out[p.Name] = p.Description
		}
	}
	return out
}
