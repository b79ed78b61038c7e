package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestCutProbeSeesTheCut: the probe's last answer is from before the moment
// the port stopped answering, and it reports the cut.
func TestCutProbeSeesTheCut(t *testing.T) {
	var cut atomic.Bool
	var firstUnanswered atomic.Pointer[time.Time]
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.Load() {
			now := time.Now()
			firstUnanswered.CompareAndSwap(nil, &now)
			<-release // no answer: the interface is gone
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	defer close(release)
	pr := startCutProbe(srv.URL)
	time.Sleep(20 * time.Millisecond)
	cut.Store(true) // a request already past the check is still answered
	last, seen := pr.stop(5 * time.Second)
	if !seen {
		t.Fatal("the probe did not see the cut")
	}
	cutAt := firstUnanswered.Load()
	if last.IsZero() || cutAt == nil || last.After(*cutAt) {
		t.Fatalf("last answer at %v, the first unanswered request at %v", last, cutAt)
	}
}

// TestCutProbeNoCut: a port that keeps answering is not reported as cut.
func TestCutProbeNoCut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	pr := startCutProbe(srv.URL)
	if _, seen := pr.stop(50 * time.Millisecond); seen {
		t.Fatal("a port that answers every request was reported cut")
	}
}
