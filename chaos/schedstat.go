package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Where a refusal's time goes (issue 18: every refusal in ≤ 5 ms). The
// overload scenario reads, before and after its overload phase, how long
// the gateway's threads and this program's (the load generator's) waited
// for a CPU in the kernel's run queue (/proc/PID/task/*/schedstat, the
// second field: run_delay), and the gateway's own timing of its refusals
// (qlc_refusal_seconds: handler entry to the answer written). A refusal
// slow at the client and fast in the gateway was waiting for a CPU.

// schedStat is a process's CPU time and run-queue wait, summed over its
// threads.
type schedStat struct{ cpu, wait time.Duration }

// readSchedStat reads pid's threads' schedstat ("self" for this process);
// zero where /proc does not have it.
func readSchedStat(pid string) schedStat {
	var s schedStat
	tasks, _ := filepath.Glob(filepath.Join("/proc", pid, "task", "*", "schedstat"))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		cpu, err1 := strconv.ParseInt(f[0], 10, 64)
		wait, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			s.cpu += time.Duration(cpu)
			s.wait += time.Duration(wait)
		}
	}
	return s
}

func (s schedStat) sub(o schedStat) schedStat { return schedStat{s.cpu - o.cpu, s.wait - o.wait} }

// describe says what a process did over wall: its CPU and its wait for one.
func (s schedStat) describe(wall time.Duration) string {
	if s == (schedStat{}) {
		return "not measured (no /proc schedstat)"
	}
	return fmt.Sprintf("CPU %.1f s (%.0f %% of a core), waited for a CPU %.1f s (%.0f %% of the time, summed over threads)",
		s.cpu.Seconds(), 100*s.cpu.Seconds()/wall.Seconds(), s.wait.Seconds(), 100*s.wait.Seconds()/wall.Seconds())
}

// histogram is a Prometheus histogram's cumulative buckets (upper bound →
// count), summed over its label sets.
type histogram map[float64]float64

// readHistogram reads name's buckets from a Prometheus text exposition,
// of the label sets that contain every one of match (e.g. `at="door"`).
func readHistogram(text, name string, match ...string) histogram {
	h := histogram{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), name+"_bucket{")
		if !ok {
			continue
		}
		i := strings.Index(line, `le="`)
		if i < 0 || slices.ContainsFunc(match, func(m string) bool { return !strings.Contains(line, m) }) {
			continue
		}
		rest := line[i+4:]
		j := strings.IndexByte(rest, '"')
		if j < 0 {
			continue
		}
		le, err := strconv.ParseFloat(rest[:j], 64)
		if rest[:j] == "+Inf" {
			le, err = math.Inf(1), nil
		}
		f := strings.Fields(rest[j:])
		if err != nil || len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			h[le] += v
		}
	}
	return h
}

// sub is h minus an earlier reading.
func (h histogram) sub(o histogram) histogram {
	out := histogram{}
	for le, v := range h {
		out[le] = v - o[le]
	}
	return out
}

// quantile is the upper bound of the bucket holding quantile q (+Inf past
// the last finite bound), and the count; 0, 0 when empty.
func (h histogram) quantile(q float64) (float64, float64) {
	les := make([]float64, 0, len(h))
	for le := range h {
		les = append(les, le)
	}
	slices.Sort(les)
	if len(les) == 0 || h[les[len(les)-1]] <= 0 {
		return 0, 0
	}
	total := h[les[len(les)-1]]
	for _, le := range les {
		if h[le] >= q*total {
			return le, total
		}
	}
	return math.Inf(1), total
}

// atMost is the count of observations in buckets whose bound is ≤ bound.
func (h histogram) atMost(bound float64) float64 {
	best, n := math.Inf(-1), 0.0
	for le, v := range h {
		if le <= bound && le > best {
			best, n = le, v
		}
	}
	return n
}

// metricsText is the whole /metrics at url (the admin key sent, as
// metrics does); "" on any error.
func metricsText(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if k, _ := metricsKey.Load().(string); k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return string(b)
}
