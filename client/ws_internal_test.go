package client

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/qlc-project/qlc/client/clienttest"
)

// Both transports, their connection dropped every few events while the run
// goes on, rebuild every step's text exactly: each resumes from the last
// event it returned.
func TestStreamsResumeAfterEveryDrop(t *testing.T) {
	g := clienttest.Start(t, "")
	c, err := New(Config{BaseURL: g.URL, APIKey: g.TenantKey, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ws := range []bool{false, true} {
		run, err := c.CreateRun(ctx, RunRequest{Query: "what is QUIC?", Profile: "slowmoa"})
		if err != nil {
			t.Fatal(err)
		}
		s := c.Events(ctx, run.ID, "")
		if ws {
			s = c.EventsWS(ctx, run.ID, "")
		}
		f := NewFold()
		n, drops := 0, 0
		for {
			ev, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("ws=%v after %d events: %v", ws, n, err)
			}
			f.Add(ev)
			if n++; n%7 == 0 && s.src != nil {
				s.drop() // as if the connection broke here
				drops++
			}
		}
		got, err := c.GetRun(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		if drops < 3 || f.Status != "completed" || f.Answer() != got.Answer || got.Answer == "" {
			t.Fatalf("ws=%v: %d drops, status %s, answer %q, want %q", ws, drops, f.Status, f.Answer(), got.Answer)
		}
		for _, st := range got.Steps {
			if f.Steps[st.ID].Text.String() != st.Output {
				t.Fatalf("ws=%v: step %s differs", ws, st.ID)
			}
		}
	}
}
