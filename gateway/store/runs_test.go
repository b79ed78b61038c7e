package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRecordRunKeepsTheLogWithTheUsage(t *testing.T) {
	s := openTemp(t)
	if err := s.Reserve(Reservation{RunID: "r1", TenantID: "t", Profile: "p", Tokens: 10, At: at(0)}); err != nil {
		t.Fatal(err)
	}
	u := usageOf("r1", "t", at(0), 7)
	run := &FinishedRun{RunID: "r1", TenantID: "t", Profile: "p", Query: "why?", CreatedAt: at(0), EndedAt: at(time.Second), Log: []byte{1, 2, 3}}
	if ok, err := s.RecordRun(u, run); err != nil || !ok {
		t.Fatalf("RecordRun: %v %v", ok, err)
	}
	got, err := s.Run("r1")
	if err != nil || got.Query != "why?" || !bytes.Equal(got.Log, run.Log) || !got.EndedAt.Equal(run.EndedAt) || got.TenantID != "t" {
		t.Fatalf("Run = %+v, %v", got, err)
	}
	if open, _ := s.OpenReservations("t"); len(open) != 0 {
		t.Fatalf("the reservation survived RecordRun: %+v", open)
	}
	// A repeat changes nothing; a log of another run is refused.
	run2 := *run
	run2.Log = []byte{9}
	if ok, err := s.RecordRun(u, &run2); err != nil || ok {
		t.Fatalf("repeat: %v %v", ok, err)
	}
	if got, _ := s.Run("r1"); !bytes.Equal(got.Log, run.Log) {
		t.Fatal("a repeated RecordRun replaced the log")
	}
	bad := *run
	bad.RunID = "other"
	if _, err := s.RecordRun(usageOf("r2", "t", at(0), 1), &bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mismatched run: %v", err)
	}
	if _, err := s.Run("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing run: %v", err)
	}
	// Pruning drops old logs and keeps the usage.
	if n, err := s.PruneRuns(at(2 * time.Second)); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if _, err := s.Run("r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pruned run still there: %v", err)
	}
	if us, _ := s.Usage("t", time.Time{}, time.Time{}, 0); len(us) != 1 {
		t.Fatalf("pruning took the usage record: %d", len(us))
	}
}
