package neardup

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

type pair struct {
	A, B string
	Same bool
}

func loadPairs(t *testing.T) []pair {
	t.Helper()
	f, err := os.Open("testdata/pairs.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ps []pair
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p pair
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		ps = append(ps, p)
	}
	return ps
}

// On the committed pairs: no contradiction (a negation, number, name or
// antonym changed) is ever a match; the paraphrases' hit rate is reported
// and must not fall below what it is.
func TestPairs(t *testing.T) {
	ps := loadPairs(t)
	var same, hits, diff int
	for _, p := range ps {
		a, b := Sign(p.A), Sign(p.B)
		m := Match(a, b)
		if Match(b, a) != m {
			t.Errorf("not symmetric: %q / %q", p.A, p.B)
		}
		if p.Same {
			same++
			if m {
				hits++
			} else {
				t.Logf("paraphrase missed (similarity %.2f, guards %q / %q): %q / %q", Similarity(a, b), a.Guard, b.Guard, p.A, p.B)
			}
			continue
		}
		diff++
		if m {
			t.Errorf("FALSE HIT (similarity %.2f): %q / %q", Similarity(a, b), p.A, p.B)
		}
	}
	rate := float64(hits) / float64(same)
	t.Logf("paraphrases: %d of %d matched (%.0f %%); contradictions: %d, false hits: 0 unless reported above", hits, same, 100*rate, diff)
	if same < 30 || diff < 30 {
		t.Fatalf("the set has %d paraphrases and %d contradictions, want at least 30 each", same, diff)
	}
	if rate < 0.85 {
		t.Fatalf("paraphrase hit rate %.2f, below the floor 0.85", rate)
	}
}

func TestIdenticalAndEmpty(t *testing.T) {
	a := Sign("How does Raft elect a leader?")
	if Similarity(a, a) != 1 || !Match(a, a) {
		t.Fatal("a question does not match itself")
	}
	e := Sign("?? !!")
	if Match(e, e) || Similarity(e, a) != 0 {
		t.Fatal("a question without words matches")
	}
}

func FuzzSign(f *testing.F) {
	for _, s := range []string{"How does Raft elect a leader?", "isn’t 3.5% of 1,000 France's?", "", "'''"} {
		f.Add(s, "What is the capital of France?")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		sa, sb := Sign(a), Sign(b)
		if Sign(a) != sa {
			t.Fatal("Sign is not deterministic")
		}
		if Match(sa, sb) != Match(sb, sa) {
			t.Fatal("Match is not symmetric")
		}
		if s := Similarity(sa, sb); s < 0 || s > 1 {
			t.Fatalf("similarity %v", s)
		}
	})
}
