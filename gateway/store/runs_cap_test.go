package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A tenant's kept runs are capped: RecordRun deletes its oldest beyond
// the cap, and another tenant's runs stay. On the old store one tenant's
// runs piled up for 7 days, however many.
func TestRecordRunCapsRunsPerTenant(t *testing.T) {
	s := openTemp(t)
	s.SetRunsPerTenant(3)
	record := func(id, tenant string, ended time.Duration) {
		t.Helper()
		run := &FinishedRun{RunID: id, TenantID: tenant, Profile: "p", Query: "q", CreatedAt: at(0), EndedAt: at(ended), Log: []byte{1}}
		if ok, err := s.RecordRun(usageOf(id, tenant, at(0), 1), run); err != nil || !ok {
			t.Fatalf("RecordRun %s: %v %v", id, ok, err)
		}
	}
	record("b1", "b", time.Second)
	record("b2", "b", 2*time.Second)
	for i := 1; i <= 6; i++ {
		record(fmt.Sprint("a", i), "a", time.Duration(10+i)*time.Second)
	}
	for id, kept := range map[string]bool{"a1": false, "a2": false, "a3": false, "a4": true, "a5": true, "a6": true, "b1": true, "b2": true} {
		_, err := s.Run(id)
		switch {
		case kept && err != nil:
			t.Errorf("run %s: %v, want kept", id, err)
		case !kept && !errors.Is(err, ErrNotFound):
			t.Errorf("run %s: %v, want deleted", id, err)
		}
	}
}
