package openai

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// A request's own key (Request.APIKey, a tenant's key) replaces the
// endpoint's key and an Authorization header of the config, and an error
// body that echoes it is redacted, in the stream's opening and mid-stream.
func TestRequestKeyReplacesTheEndpointKey(t *testing.T) {
	const tenantKey = "sk-tenant-own-key-0123456789"
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		got = append(got, auth)
		switch {
		case strings.HasSuffix(auth, "bad"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","code":"invalid_api_key"}}`, strings.TrimPrefix(auth, "Bearer "))
		case strings.HasSuffix(auth, "mid"):
			sseHeaders(w)
			fmt.Fprintf(w, "data: {\"error\":{\"message\":\"key %s revoked\",\"code\":\"invalid_api_key\"}}\n\n", strings.TrimPrefix(auth, "Bearer "))
		default:
			sseHeaders(w)
			fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
		}
	}))
	defer srv.Close()
	p := newProvider(t, srv.URL, func(c *Config) { c.Headers = map[string]string{"Authorization": "Bearer from-headers"} })

	req := testRequest()
	req.APIKey = tenantKey
	s, err := p.Stream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := drain(s); !errors.Is(err, io.EOF) {
		t.Fatalf("drain: %v", err)
	}
	s.Close()
	if got[0] != "Bearer "+tenantKey {
		t.Fatalf("Authorization %q, want the request's key", got[0])
	}

	for _, key := range []string{tenantKey + "-bad", tenantKey + "-mid"} {
		req.APIKey = stagework.Secret(key)
		s, err := p.Stream(context.Background(), req)
		if err == nil {
			_, _, err = drain(s)
			s.Close()
		}
		pe := mustKind(t, err, stagework.ErrAuth)
		if strings.Contains(pe.Error(), key) || !strings.Contains(pe.Message, "[redacted]") {
			t.Fatalf("error not redacted: %v", pe)
		}
	}

	// Without a request key, the config's (here its Authorization header) is sent.
	req.APIKey = ""
	if s, err := p.Stream(context.Background(), req); err == nil {
		_, _, _ = drain(s)
		s.Close()
	}
	if last := got[len(got)-1]; last != "Bearer from-headers" {
		t.Fatalf("without a request key: %q", last)
	}
}
