// Command profileload drives bounded load against a QLC gateway for `make
// profile` (scripts/profile.sh): -c workers each start a run (POST
// /v1/runs), read its event stream to the end, and start the next, until
// -d is over; then it prints runs/s and the HTTP statuses seen.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	base := flag.String("base", "http://127.0.0.1:8080", "gateway URL")
	key := flag.String("key", os.Getenv("QLC_KEY"), "tenant API key (QLC_KEY)")
	profile := flag.String("profile", "instant", "run profile")
	conc := flag.Int("c", 8, "concurrent runs")
	dur := flag.Duration("d", 20*time.Second, "how long to drive load")
	flag.Parse()
	if err := run(*base, *key, *profile, *conc, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "profileload:", err)
		os.Exit(1)
	}
}

// result is one worker's tally.
type result struct {
	runs, completed int
	statuses        map[string]int
	ttft            []time.Duration // POST to the first token delta
}

func run(base, key, profile string, conc int, dur time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc * 2}}
	results := make([]result, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.statuses = map[string]int{}
			for ctx.Err() == nil {
				status, ttft, done := oneRun(ctx, client, base, key, profile)
				if !done && ctx.Err() != nil {
					break // cut by the end of the load, not refused
				}
				r.runs++
				r.statuses[status]++
				if done {
					r.completed++
					r.ttft = append(r.ttft, ttft)
				} else if ctx.Err() == nil && status != "201" {
					time.Sleep(50 * time.Millisecond) // refused (429, 503): back off a little
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	total, completed, statuses, ttfts := 0, 0, map[string]int{}, []time.Duration{}
	for _, r := range results {
		total, completed = total+r.runs, completed+r.completed
		for s, n := range r.statuses {
			statuses[s] += n
		}
		ttfts = append(ttfts, r.ttft...)
	}
	sort.Slice(ttfts, func(i, j int) bool { return ttfts[i] < ttfts[j] })
	var keys []string
	for s := range statuses {
		keys = append(keys, s)
	}
	sort.Strings(keys)
	var st []string
	for _, s := range keys {
		st = append(st, fmt.Sprintf("%s×%d", s, statuses[s]))
	}
	fmt.Printf("load: %d workers, %s, profile %s: %d runs started, %d completed (%.1f/s); statuses %s",
		conc, el.Round(time.Millisecond), profile, total, completed, float64(completed)/el.Seconds(), strings.Join(st, " "))
	if len(ttfts) > 0 {
		fmt.Printf("; TTFT p50 %v p99 %v", ttfts[len(ttfts)/2].Round(time.Microsecond), ttfts[len(ttfts)*99/100].Round(time.Microsecond))
	}
	fmt.Println()
	if completed == 0 {
		return errors.New("no run completed")
	}
	return nil
}

// oneRun starts a run and reads its event stream to the end. status is the
// POST's HTTP status (or "error"); done reports a run_completed.
func oneRun(ctx context.Context, c *http.Client, base, key, profile string) (status string, ttft time.Duration, done bool) {
	t0 := time.Now()
	body := fmt.Sprintf(`{"query":"How do B-trees stay balanced? (%d)","profile":%q}`, t0.UnixNano(), profile)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/runs", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "error", 0, false
	}
	var v struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if status = fmt.Sprint(resp.StatusCode); resp.StatusCode != http.StatusCreated || err != nil {
		return status, 0, false
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/v1/runs/"+v.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err = c.Do(req)
	if err != nil {
		return status, 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ev, ok := strings.CutPrefix(sc.Text(), "event: ")
		switch {
		case !ok:
		case ev == "token_delta" && ttft == 0:
			ttft = time.Since(t0)
		case ev == "run_completed":
			return status, ttft, true
		case ev == "run_failed" || ev == "run_cancelled":
			return status, ttft, false
		}
	}
	return status, ttft, false
}
