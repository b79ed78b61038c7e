package gateway

import (
	"net/http"
	"testing"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// A run that left a node's queue at its deadline (before any work) is
// answered like a refusal at the door: 503 cluster_saturated with a
// Retry-After; any other failure stays a 502 run_failed.
func TestQueueTimeoutIsARefusal(t *testing.T) {
	e := runFailedError(&messages.RunFailed{Code: actors.CodeQueueTimeout, Reason: "waited"})
	if e.Status != http.StatusServiceUnavailable || e.Code != "cluster_saturated" || e.RetryAfter < 1 {
		t.Fatalf("queue timeout answered %+v", e)
	}
	if e := runFailedError(&messages.RunFailed{Code: "provider_error", Reason: "x"}); e.Status != http.StatusBadGateway || e.RetryAfter != 0 {
		t.Fatalf("provider failure answered %+v", e)
	}
}
