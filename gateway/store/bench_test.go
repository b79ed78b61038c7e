package store

import (
	"database/sql"
	"fmt"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkReserveRecordUsage measures the durable cost of one admitted run:
// a Reserve and a RecordUsage, two commits to the WAL. "serial" is one
// caller; "parallel" is GOMAXPROCS callers sharing the write connection.
func BenchmarkReserveRecordUsage(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s := openTemp(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			benchRun(b, s, i)
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	})
	b.Run("parallel", func(b *testing.B) {
		s := openTemp(b)
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				benchRun(b, s, int(next.Add(1)))
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	})
}

// benchRun reserves and settles the i-th run.
func benchRun(b *testing.B, s *Store, i int) {
	run := "r" + strconv.Itoa(i)
	now := base.Add(time.Duration(i) * time.Millisecond)
	if err := s.Reserve(Reservation{RunID: run, TenantID: "t1", Profile: "fast", Tokens: 4000, At: now}); err != nil {
		b.Fatal(err)
	}
	if ok, err := s.RecordUsage(usageOf(run, "t1", now, 1234)); err != nil || !ok {
		b.Fatalf("RecordUsage = %v, %v", ok, err)
	}
}

// BenchmarkLedgerSince measures a limiter rebuild of a tenant whose ledger
// holds rows runs (one in twenty still open) spread over 30 days, with as
// many runs of another tenant beside it. "since=1h" asks for the last hour
// (rows/720 entries); "since=all" returns every row. Both also sum the
// settled tokens of the current month (13 of the 30 days).
func BenchmarkLedgerSince(b *testing.B) {
	for _, rows := range []int{1000, 10000} {
		s := openTemp(b)
		span := 30 * 24 * time.Hour
		step := span / time.Duration(rows)
		start := base.Add(-span)
		if err := s.withTx(func(tx *sql.Tx) error {
			for _, tenant := range []string{"t1", "t2"} {
				for i := range rows {
					u := usageOf(fmt.Sprintf("%s-%06d", tenant, i), tenant, start.Add(time.Duration(i)*step), 1000)
					if i%20 == 0 {
						if _, err := tx.Exec(`INSERT INTO reservations (run_id, tenant_id, profile, tokens, at) VALUES (?, ?, ?, ?, ?)`,
							u.RunID, tenant, u.Profile, 4000, u.AdmittedAt.UnixNano()); err != nil {
							return err
						}
						continue
					}
					args, err := usageArgs(u)
					if err != nil {
						return err
					}
					if _, err := tx.Exec(`INSERT INTO usage (`+usageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		period := Limits{BudgetPeriod: PeriodMonth}.PeriodStart(base)
		for _, c := range []struct {
			name  string
			since time.Time
		}{
			{"since=1h", base.Add(-time.Hour)},
			{"since=all", time.Time{}},
		} {
			b.Run(fmt.Sprintf("rows=%d/%s", rows, c.name), func(b *testing.B) {
				b.ReportAllocs()
				var entries int
				for b.Loop() {
					recent, sum, err := s.LedgerSince("t1", c.since, period)
					if err != nil || sum == 0 {
						b.Fatalf("LedgerSince = %d entries, sum %d, %v", len(recent), sum, err)
					}
					entries = len(recent)
				}
				b.ReportMetric(float64(entries), "entries")
			})
		}
	}
}

// BenchmarkRecordRun is what a gateway writes at the end of every run it
// admitted: its usage and its kept log (20 KB, an 880-token run) in one
// transaction, with the tenant already holding kept runs (its cap is
// DefaultRunsPerTenant).
func BenchmarkRecordRun(b *testing.B) {
	log := make([]byte, 20<<10)
	for _, kept := range []int{0, 4000} {
		b.Run(fmt.Sprintf("kept=%d", kept), func(b *testing.B) {
			s := openTemp(b)
			i := 0
			record := func() {
				run := "r" + strconv.Itoa(i)
				now := base.Add(time.Duration(i) * time.Millisecond)
				u := usageOf(run, "t1", now, 1234)
				fr := &FinishedRun{RunID: run, TenantID: "t1", Profile: "fast", Query: "q", CreatedAt: now, EndedAt: u.EndedAt, Log: log}
				if ok, err := s.RecordRun(u, fr); err != nil || !ok {
					b.Fatalf("RecordRun = %v, %v", ok, err)
				}
				i++
			}
			for range kept {
				record()
			}
			b.ReportAllocs()
			for b.Loop() {
				record()
			}
		})
	}
}

// BenchmarkRecordRunConcurrent is a gateway under load settling many runs
// at once: 16×GOMAXPROCS goroutines each call RecordRun with a usage record
// and a 3 KB log, every run id distinct ("parallel"); "serial" is one
// caller, the latency of a run settled alone. cpu-µs/run is the process's
// CPU time (user+system, getrusage) per run: what the gateway pays, less
// sensitive than ns/op to other load on the machine. runs/tx is how many
// records the group commit put in one transaction, on average.
func BenchmarkRecordRunConcurrent(b *testing.B) {
	log := make([]byte, 3<<10)
	for i := range log {
		log[i] = byte(i * 7)
	}
	record := func(b *testing.B, s *Store, i int) {
		run := "r" + strconv.Itoa(i)
		now := base.Add(time.Duration(i) * time.Millisecond)
		u := usageOf(run, "t"+strconv.Itoa(i%8), now, 1234)
		fr := &FinishedRun{RunID: run, TenantID: u.TenantID, Profile: "fast", Query: "q", CreatedAt: now, EndedAt: u.EndedAt, Log: log}
		if ok, err := s.RecordRun(u, fr); err != nil || !ok {
			b.Fatalf("RecordRun = %v, %v", ok, err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		s := openTemp(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(log)))
		cpu0 := cpuTime(b)
		i := 0
		for b.Loop() {
			record(b, s, i)
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
		b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/run")
	})
	b.Run("parallel=16", func(b *testing.B) {
		s := openTemp(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(log)))
		b.SetParallelism(16)
		cpu0 := cpuTime(b)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				record(b, s, int(next.Add(1)))
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
		b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/run")
		b.ReportMetric(float64(b.N)/float64(max(1, s.groups.Load())), "runs/tx")
	})
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
