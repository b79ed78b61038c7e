package actors

import "testing"

// TestRetryBudget: a full bucket allows a burst of retries, then retries
// are allowed at the earned ratio only (one per ten first-try successes at
// 0.1), and never more than the burst is saved up.
func TestRetryBudget(t *testing.T) {
	b := newRetryBudget(3, 0.1)
	for i := range 3 {
		if !b.spend() {
			t.Fatalf("retry %d of the burst refused", i+1)
		}
	}
	if b.spend() {
		t.Fatal("retry beyond the burst allowed with nothing earned")
	}
	for range 9 {
		b.earn()
	}
	if b.spend() {
		t.Fatal("retry allowed after 9 successes at ratio 0.1")
	}
	b.earn()
	if !b.spend() {
		t.Fatal("retry refused after 10 successes at ratio 0.1")
	}
	for range 1000 {
		b.earn()
	}
	n := 0
	for b.spend() {
		n++
	}
	if n != 3 {
		t.Fatalf("%d retries saved up, want the burst 3", n)
	}
}
