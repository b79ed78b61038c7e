package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordOf returns run id's usage record (tenant t1) and its kept run with
// a log naming it.
func recordOf(id string) (Usage, *FinishedRun) {
	u := usageOf(id, "t1", at(0), 100)
	return u, &FinishedRun{RunID: id, TenantID: "t1", Profile: "fast", Query: "q " + id,
		CreatedAt: u.AdmittedAt, EndedAt: u.EndedAt, Log: []byte("log of " + id)}
}

// reserve reserves run id (tenant t1).
func reserve(t *testing.T, s *Store, id string) {
	t.Helper()
	if err := s.Reserve(Reservation{RunID: id, TenantID: "t1", Profile: "fast", Tokens: 1000, At: at(0)}); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitAnswered waits for wg, failing the test (a caller hangs) after 30 s.
func waitAnswered(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a RecordRun caller got no answer in 30 s")
	}
}

// holdWriter takes the write connection in a transaction, so the record
// writer waits for it, and queues one record ("blocker") that the writer
// takes as a group of its own; it returns once the writer has taken it.
// The returned release lets the writer go on; the blocker's answer arrives
// on the returned channel.
func holdWriter(t *testing.T, s *Store) (release func(), blocker <-chan recordResult) {
	t.Helper()
	tx, err := s.w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	groups := s.groups.Load()
	answer := make(chan recordResult, 1)
	go func() {
		u, run := recordOf("blocker")
		ok, err := s.RecordRun(u, run)
		answer <- recordResult{ok, err}
	}()
	waitUntil(t, "the writer took the blocker", func() bool { return s.groups.Load() == groups+1 })
	return func() { tx.Rollback() }, answer
}

// Concurrent RecordRun calls each land exactly once: distinct runs are all
// inserted with their logs and their reservations dropped, and of callers
// racing with the same run id exactly one is told inserted.
func TestRecordRunConcurrentCallsLandOnce(t *testing.T) {
	s := openTemp(t)
	const goroutines, perG, dupIDs, dupCallers = 16, 40, 20, 8
	for g := range goroutines {
		for i := range perG {
			reserve(t, s, fmt.Sprintf("g%02d-%03d", g, i))
		}
	}
	for d := range dupIDs {
		reserve(t, s, fmt.Sprintf("dup%02d", d))
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		inserted = map[string]int{} // run id -> callers told inserted
		answers  = map[string]int{}
		start    = make(chan struct{})
	)
	answer := func(id string, ok bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("RecordRun(%s): %v", id, err)
		}
		answers[id]++
		if ok {
			inserted[id]++
		}
	}
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range perG {
				id := fmt.Sprintf("g%02d-%03d", g, i)
				u, run := recordOf(id)
				ok, err := s.RecordRun(u, run)
				answer(id, ok, err)
			}
		})
	}
	for c := range dupCallers {
		wg.Go(func() {
			<-start
			for d := range dupIDs {
				id := fmt.Sprintf("dup%02d", (d+c)%dupIDs)
				u, run := recordOf(id)
				ok, err := s.RecordRun(u, run)
				answer(id, ok, err)
			}
		})
	}
	close(start)
	waitAnswered(t, &wg)

	want := goroutines*perG + dupIDs
	if len(inserted) != want {
		t.Errorf("%d runs told inserted, want %d", len(inserted), want)
	}
	for id, n := range inserted {
		if n != 1 {
			t.Errorf("run %s: %d of %d callers told inserted, want 1", id, n, answers[id])
		}
	}
	got := allUsage(t, s)
	seen := map[string]int{}
	for _, u := range got {
		seen[u.RunID]++
	}
	if len(got) != want || len(seen) != want {
		t.Errorf("%d usage records of %d runs, want %d of %d", len(got), len(seen), want, want)
	}
	for id := range inserted {
		if r, err := s.Run(id); err != nil || string(r.Log) != "log of "+id {
			t.Errorf("kept run %s: %q, %v", id, r.Log, err)
		}
	}
	if open, err := s.OpenReservations(""); err != nil || len(open) != 0 {
		t.Errorf("open reservations left: %d (%v)", len(open), err)
	}
	t.Logf("%d records in %d transactions (%d groups redone)", goroutines*perG+dupIDs*dupCallers, s.groups.Load(), s.redoneGroups.Load())
}

// Records queued together commit in one transaction; a record whose
// statement fails (a trigger refuses run ids "bad…") fails alone: its
// group is redone record by record, the others commit, and each caller
// gets the answer it would have got alone (of two calls for one run id,
// one inserted).
func TestGroupCommitFailureFailsOnlyItsRecord(t *testing.T) {
	for _, withBad := range []bool{false, true} {
		t.Run(fmt.Sprintf("bad=%v", withBad), func(t *testing.T) {
			s := openTemp(t)
			if _, err := s.w.Exec(`CREATE TRIGGER refuse_bad BEFORE INSERT ON usage WHEN NEW.run_id GLOB 'bad*'
				BEGIN SELECT RAISE(ABORT, 'test: run refused'); END`); err != nil {
				t.Fatal(err)
			}
			ids := []string{"a", "b", "c", "dup", "dup", "d", "e"}
			if withBad {
				ids = append(ids[:3:3], append([]string{"bad1"}, ids[3:]...)...)
			}
			for _, id := range ids {
				if id != "dup" {
					reserve(t, s, id)
				}
			}
			reserve(t, s, "dup")

			release, blocker := holdWriter(t, s)
			groups := s.groups.Load()
			type answer struct {
				id string
				recordResult
			}
			answers := make(chan answer, len(ids))
			for _, id := range ids {
				go func() {
					u, run := recordOf(id)
					ok, err := s.RecordRun(u, run)
					answers <- answer{id, recordResult{ok, err}}
				}()
			}
			waitUntil(t, "every record is queued", func() bool { return len(s.records) == len(ids) })
			release()
			if b := <-blocker; !b.inserted || b.err != nil {
				t.Fatalf("blocker: %v, %v", b.inserted, b.err)
			}
			dupInserted := 0
			for range ids {
				a := <-answers
				switch {
				case strings.HasPrefix(a.id, "bad"):
					if a.err == nil || !strings.Contains(a.err.Error(), "test: run refused") || a.inserted {
						t.Errorf("RecordRun(%s) = %v, %v; want the trigger's error", a.id, a.inserted, a.err)
					}
				case a.err != nil:
					t.Errorf("RecordRun(%s): %v", a.id, a.err)
				case a.id == "dup":
					if a.inserted {
						dupInserted++
					}
				case !a.inserted:
					t.Errorf("RecordRun(%s) = false, want inserted", a.id)
				}
			}
			if dupInserted != 1 {
				t.Errorf("of two RecordRun(dup), %d told inserted, want 1", dupInserted)
			}
			wantRedone := int64(0)
			if withBad {
				wantRedone = 1
			}
			if g, r := s.groups.Load()-groups, s.redoneGroups.Load(); g != 1 || r != wantRedone {
				t.Errorf("%d groups, %d redone; want the %d queued records in 1 group, %d redone", g, r, len(ids), wantRedone)
			}

			open, err := s.OpenReservations("")
			if err != nil {
				t.Fatal(err)
			}
			var openIDs []string
			for _, r := range open {
				openIDs = append(openIDs, r.RunID)
			}
			if want := map[bool]string{false: "[]", true: "[bad1]"}[withBad]; fmt.Sprint(openIDs) != want {
				t.Errorf("open reservations %v, want %s (a refused run keeps its reservation)", openIDs, want)
			}
			if _, err := s.Run("bad1"); withBad && !errors.Is(err, ErrNotFound) {
				t.Errorf("refused run kept: %v", err)
			}
			got, err := s.Usage("", time.Time{}, time.Time{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := 1 + 6; len(got) != want { // blocker, a..e, dup once
				t.Errorf("%d usage records, want %d", len(got), want)
			}
		})
	}
}

// Close with records queued answers every caller: the queued records are
// committed before the database closes (more than one group's worth), and
// a RecordRun after Close returns ErrClosed. Reopened, the file holds
// every record a caller was told inserted.
func TestCloseCommitsQueuedRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // if the test stops early; Close is idempotent
	const n = 2*maxGroup + 5
	release, blocker := holdWriter(t, s)
	var wg sync.WaitGroup
	results := make([]recordResult, n)
	for i := range n {
		wg.Go(func() {
			u, run := recordOf(fmt.Sprintf("q%03d", i))
			results[i].inserted, results[i].err = s.RecordRun(u, run)
		})
	}
	waitUntil(t, "every record is queued", func() bool { return len(s.records) == n })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitUntil(t, "Close refuses new records", func() bool {
		s.recordMu.RLock()
		defer s.recordMu.RUnlock()
		return s.recordsClosed
	})
	if _, err := s.RecordRun(recordOf("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("RecordRun during Close: %v, want ErrClosed", err)
	}
	release()
	waitAnswered(t, &wg)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b := <-blocker; !b.inserted || b.err != nil {
		t.Errorf("blocker: %v, %v", b.inserted, b.err)
	}
	for i, r := range results {
		if !r.inserted || r.err != nil {
			t.Errorf("queued record %d: %v, %v; want committed", i, r.inserted, r.err)
		}
	}
	if _, err := s.RecordRun(recordOf("after")); !errors.Is(err, ErrClosed) {
		t.Errorf("RecordRun after Close: %v, want ErrClosed", err)
	}

	s = reopen(t, path)
	got := allUsage(t, s)
	if len(got) != n+1 {
		t.Errorf("reopened: %d usage records, want %d", len(got), n+1)
	}
}

// Close while callers keep recording: every call returns, either committed
// (and then in the file when reopened) or with ErrClosed (and then not).
func TestCloseWhileRecording(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // if the test stops early; Close is idempotent
	const callers = 16
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		committed = map[string]bool{}
		refused   = map[string]bool{}
	)
	for c := range callers {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("c%02d-%05d", c, i)
				ok, err := s.RecordRun(recordOf(id))
				mu.Lock()
				switch {
				case errors.Is(err, ErrClosed):
					refused[id] = true
				case err != nil || !ok:
					t.Errorf("RecordRun(%s) = %v, %v", id, ok, err)
				default:
					committed[id] = true
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	waitUntil(t, "some records are committed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(committed) >= 200
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitAnswered(t, &wg)

	s = reopen(t, path)
	got := allUsage(t, s)
	for _, u := range got {
		if !committed[u.RunID] {
			t.Errorf("run %s is in the file, but its caller was not told it committed", u.RunID)
		}
	}
	if len(got) != len(committed) || len(refused) != callers {
		t.Errorf("%d records in the file, %d committed, %d refused (want %d: one per caller)", len(got), len(committed), len(refused), callers)
	}
}

// allUsage is every usage record s holds.
func allUsage(t testing.TB, s *Store) []Usage {
	t.Helper()
	got, err := s.Usage("", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// reopen opens the store file at path again, closed when the test ends.
func reopen(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
