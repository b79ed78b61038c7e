package openai

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMockStreamsItsTokens(t *testing.T) {
	m := &Mock{Tokens: 7}
	srv := httptest.NewUnstartedServer(m)
	srv.Config.ConnState = m.ConnState
	srv.Start()
	defer srv.Close()
	p := newProvider(t, srv.URL+"/v1")
	for range 3 {
		s, err := p.Stream(context.Background(), testRequest())
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		n := 0
		for {
			ch, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			text.WriteString(ch.Text)
			n++
		}
		u, ok := s.Usage()
		s.Close()
		if n != 7 || text.String() != " t0 t1 t2 t3 t4 t5 t6" || !ok || u.CompletionTokens != 7 || u.TotalTokens != 27 {
			t.Fatalf("got %d chunks %q, usage %+v %v", n, text.String(), u, ok)
		}
	}
	if m.Requests() != 3 || m.Conns() != 1 {
		t.Fatalf("%d requests on %d connections; want 3 on 1 (kept alive)", m.Requests(), m.Conns())
	}
}
