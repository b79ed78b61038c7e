package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConcurrentReserveAndRecord runs 8 goroutines of 200 mixed operations
// each (reserve then settle, settle twice, reserve twice, reserve then drop)
// against one store, with readers alongside, and checks that every settled
// run is recorded exactly once and no reservation is left behind. Run it
// with -race.
func TestConcurrentReserveAndRecord(t *testing.T) {
	s := openTemp(t)
	const goroutines, perG = 8, 200
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		settled  = map[string]int64{} // run id -> total tokens, as written
		failures = make(chan error, goroutines*perG)
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := fmt.Sprintf("t%d", g%3)
			for i := range perG {
				run := fmt.Sprintf("g%d-r%03d", g, i)
				admitted := at(time.Duration(g*perG+i) * time.Millisecond)
				if err := s.Reserve(Reservation{RunID: run, TenantID: tenant, Profile: "fast", Tokens: 1000, At: admitted}); err != nil {
					failures <- err
					continue
				}
				switch i % 4 {
				case 0: // denied: dropped, never settled
					if err := s.DropReservation(run); err != nil {
						failures <- err
					}
					continue
				case 1: // a retried admission is refused
					if err := s.Reserve(Reservation{RunID: run, TenantID: tenant, Tokens: 1, At: admitted}); !errors.Is(err, ErrExists) {
						failures <- fmt.Errorf("second Reserve(%s) = %v, want ErrExists", run, err)
					}
				}
				total := int64(g*1000 + i)
				ok, err := s.RecordUsage(usageOf(run, tenant, admitted, total))
				if err != nil || !ok {
					failures <- fmt.Errorf("RecordUsage(%s) = %v, %v", run, ok, err)
					continue
				}
				if i%4 == 2 { // a retried settlement inserts nothing
					if ok, err := s.RecordUsage(usageOf(run, tenant, admitted, total+1)); err != nil || ok {
						failures <- fmt.Errorf("second RecordUsage(%s) = %v, %v", run, ok, err)
					}
				}
				mu.Lock()
				settled[run] = total
				mu.Unlock()
				if i%16 == 3 { // readers interleave with the writers
					if _, _, err := s.LedgerSince(tenant, time.Time{}, time.Time{}); err != nil {
						failures <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}

	got := allUsage(t, s)
	seen := map[string]int{}
	for _, u := range got {
		seen[u.RunID]++
		if want, ok := settled[u.RunID]; !ok || u.TotalTokens != want {
			t.Errorf("record %s has %d tokens; settled as %d (%v)", u.RunID, u.TotalTokens, want, ok)
		}
	}
	if want := goroutines * perG * 3 / 4; len(settled) != want {
		t.Errorf("%d runs settled, want %d", len(settled), want)
	}
	for run := range settled {
		if seen[run] != 1 {
			t.Errorf("run %s recorded %d times, want once", run, seen[run])
		}
	}
	if len(got) != len(settled) {
		t.Errorf("%d usage records for %d settled runs", len(got), len(settled))
	}
	if open, err := s.OpenReservations(""); err != nil || len(open) != 0 {
		t.Errorf("open reservations left: %d (%v)", len(open), err)
	}
	if err := s.IntegrityCheck(); err != nil {
		t.Error(err)
	}
}
