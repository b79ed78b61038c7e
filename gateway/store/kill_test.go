package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of the writer child of TestKill9Durability.
const (
	killEnvPath  = "QLC_STORE_KILL_WRITER_DB" // database path; set only in the child
	killEnvRound = "QLC_STORE_KILL_ROUND"     // run id prefix of this round
)

const (
	killRounds    = 3                // kills of the same file
	killConfirmed = 300              // confirmed commits before each kill
	killTimeout   = 90 * time.Second // per round, a bound for a hung child
	writerMaxRuns = 200000           // the child stops on its own after this many
)

// confirmedPrefix starts each line the writer prints after a commit.
const confirmedPrefix = "committed "

// TestKill9Durability re-executes the test binary as a writer child that
// commits usage records one after another, printing each run id once its
// commit returned. The parent SIGKILLs it after killConfirmed lines, reopens
// the database, and checks that every confirmed record is there exactly
// once, that nothing beyond the one in-flight run appeared, that the file
// passes integrity_check, and that writing continues. It does this
// killRounds times on the same file.
func TestKill9Durability(t *testing.T) {
	if path := os.Getenv(killEnvPath); path != "" {
		killWriter(t, path, os.Getenv(killEnvRound))
		return
	}
	path := filepath.Join(t.TempDir(), "kill.db")
	total := 0
	for round := range killRounds {
		prefix := fmt.Sprintf("k%d-", round)
		printed := runAndKill(t, path, prefix)

		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := s.IntegrityCheck(); err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		all, err := s.Usage("", time.Time{}, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		mine := 0
		for _, u := range all {
			count[u.RunID]++
			if strings.HasPrefix(u.RunID, prefix) {
				mine++
			}
		}
		for _, id := range printed {
			if count[id] != 1 {
				t.Errorf("round %d: confirmed run %s is present %d times, want once", round, id, count[id])
			}
		}
		// The run that was committing when the kill came may have made it
		// (committed but not printed); nothing else may appear.
		if mine < len(printed) || mine > len(printed)+1 {
			t.Errorf("round %d: %d records for %d confirmed commits", round, mine, len(printed))
		}
		for i := range mine {
			if id := runName(prefix, i); count[id] != 1 {
				t.Errorf("round %d: record %s present %d times; records are not a gap-free prefix", round, id, count[id])
			}
		}
		// At most the in-flight run's reservation is left open.
		open, err := s.OpenReservations("")
		if err != nil {
			t.Fatal(err)
		}
		if len(open) > 1 || (len(open) == 1 && open[0].RunID != runName(prefix, mine)) {
			t.Errorf("round %d: open reservations after kill: %+v (records: %d)", round, open, mine)
		}
		// Earlier rounds' records survived this kill too.
		if len(all) != total+mine {
			t.Errorf("round %d: %d records in total, want %d before the round plus %d", round, len(all), total, mine)
		}
		total += mine
		// Writing continues: settle the orphan and add a record.
		for _, r := range open {
			if ok, err := s.RecordUsage(usageOf(r.RunID, r.TenantID, r.At, 1)); err != nil || !ok {
				t.Errorf("round %d: settling orphan %s = %v, %v", round, r.RunID, ok, err)
			}
			total++
		}
		if ok, err := s.RecordUsage(usageOf(prefix+"parent", "t1", base, 1)); err != nil || !ok {
			t.Errorf("round %d: write after reopen = %v, %v", round, ok, err)
		}
		total++
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d confirmed, %d recorded, %d open reservation(s)", round, len(printed), mine, len(open))
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := s.Usage("", time.Time{}, time.Time{}, 0)
	if err != nil || len(all) != total {
		t.Errorf("final: %d records (%v), want %d", len(all), err, total)
	}
}

// runName is the run id of the writer's i-th run.
func runName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// runAndKill starts the writer child on path, SIGKILLs it after
// killConfirmed confirmed commits, and returns every run id it confirmed,
// including lines still in the pipe when it died.
func runAndKill(t *testing.T, path, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKill9Durability$", "-test.count=1")
	cmd.Env = append(os.Environ(), killEnvPath+"="+path, killEnvRound+"="+prefix)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var printed []string
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), confirmedPrefix)
		if !ok {
			continue
		}
		printed = append(printed, id)
		if len(printed) == killConfirmed && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !killed || !errors.As(err, &exit) {
		t.Fatalf("writer ended before %d commits (got %d): %v", killConfirmed, len(printed), err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("writer did not die of SIGKILL: %v", err)
	}
	for i, id := range printed {
		if id != runName(prefix, i) {
			t.Fatalf("writer printed %q as commit %d", id, i)
		}
	}
	return printed
}

// killWriter is the child: it reserves and settles runs one after another
// on the database at path, with some audit and tenant writes in between,
// and prints each run id once its RecordUsage has returned.
func killWriter(t *testing.T, path, prefix string) {
	s, err := Open(path)
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	deadline := time.Now().Add(killTimeout)
	for i := 0; i < writerMaxRuns && time.Now().Before(deadline); i++ {
		run := runName(prefix, i)
		now := time.Now()
		if err := s.Reserve(Reservation{RunID: run, TenantID: "t1", Profile: "fast", Tokens: 1000, At: now}); err != nil {
			t.Fatalf("writer: %v", err)
		}
		if i%10 == 0 {
			if err := s.Audit(AuditEntry{At: now, Actor: "k", Action: "tenant.update", Target: "t1", Detail: `{}`}); err != nil {
				t.Fatalf("writer: %v", err)
			}
			if _, err := s.PutTenant(Tenant{ID: "t1", Name: run, UpdatedAt: now}); err != nil {
				t.Fatalf("writer: %v", err)
			}
		}
		ok, err := s.RecordUsage(usageOf(run, "t1", now, int64(i)))
		if err != nil || !ok {
			t.Fatalf("writer: RecordUsage(%s) = %v, %v", run, ok, err)
		}
		// os.Stdout is unbuffered: the line is in the pipe when Write returns.
		if _, err := fmt.Fprintf(os.Stdout, "%s%s\n", confirmedPrefix, run); err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	s.Close()
}
