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

// Under a large cap the trim runs every cap/64 runs of the tenant (its
// scan walks cap index entries): the tenant holds its cap, plus at most
// cap/64 runs kept since the last trim.
func TestRecordRunTrimsEveryCapOver64Runs(t *testing.T) {
	s := openTemp(t)
	s.SetRunsPerTenant(256) // a trim every 4 runs
	for i := 0; i < 300; i++ {
		id := fmt.Sprint("r", i)
		run := &FinishedRun{RunID: id, TenantID: "a", Profile: "p", Query: "q", CreatedAt: at(0), EndedAt: at(time.Duration(i) * time.Second), Log: []byte{1}}
		if ok, err := s.RecordRun(usageOf(id, "a", at(0), 1), run); err != nil || !ok {
			t.Fatalf("RecordRun %s: %v %v", id, ok, err)
		}
	}
	var kept int
	if err := s.r.QueryRow(`SELECT count(*) FROM runs WHERE tenant_id = 'a'`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept < 256 || kept > 256+4 {
		t.Fatalf("kept %d runs, want 256 to 260", kept)
	}
	if _, err := s.Run("r299"); err != nil {
		t.Fatalf("the newest run: %v", err)
	}
	if _, err := s.Run("r0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the oldest run: %v, want trimmed", err)
	}
}
