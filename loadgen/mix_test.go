package loadgen

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	items, err := ParseMix([]byte(`# a comment
{"profile": "fast", "query_words": 50, "weight": 3}

{profile: moa, query: "What is Raft?", name: raft}
{model: gpt-4o-mini, weight: 0}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || items[0].Name != "fast/50w" || items[0].Weight != 3 || items[1].Name != "raft" || items[1].Weight != 1 ||
		items[1].Query != "What is Raft?" || items[2].Name != "gpt-4o-mini" || items[2].Weight != 0 {
		t.Fatalf("items %+v", items)
	}
	for _, bad := range []string{
		``, `# nothing`, `{profile: x, wieght: 2}`, `{weight: -1}`, `{weight: .inf}`, `{weight: 0}`,
		`{query: q, query_words: 3}`, `{query_words: 1000000}`, `[1, 2]`, `{max_tokens: -1}`, `{profile: [a]}`,
	} {
		if _, err := ParseMix([]byte(bad)); !errors.Is(err, ErrBadMix) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// The example mix in the repository parses.
	data, err := os.ReadFile("testdata/mix.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseMix(data); err != nil {
		t.Fatal(err)
	}
}

func TestMakeQuery(t *testing.T) {
	a, b := makeQuery(30, 1), makeQuery(30, 2)
	if a == b || len(strings.Fields(a)) != 30+4 || !strings.HasSuffix(a, "?") {
		t.Fatalf("%q / %q", a, b)
	}
	if makeQuery(30, 1) != a {
		t.Fatal("not reproducible")
	}
}

// FuzzParseMix: no input panics, and what parses is usable: weights
// finite and ≥ 0 with a positive sum, every item named.
func FuzzParseMix(f *testing.F) {
	f.Add([]byte(`{"profile":"fast","query_words":50,"weight":3}`))
	f.Add([]byte("{profile: moa, query: hi}\n# c\n{model: m, weight: 0.5}"))
	f.Add([]byte(`{weight: 1e308}` + "\n" + `{weight: 1e308}`))
	f.Add([]byte(`{name: "", weight: .nan}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := ParseMix(data)
		if err != nil {
			if !errors.Is(err, ErrBadMix) {
				t.Fatalf("error not ErrBadMix: %v", err)
			}
			return
		}
		var sum float64
		for _, it := range items {
			if !(it.Weight >= 0) || it.Name == "" || it.QueryWords < 0 || it.QueryWords > maxQueryWords {
				t.Fatalf("bad item %+v", it)
			}
			sum += it.Weight
		}
		if !(sum > 0) || math.IsInf(sum, 0) {
			t.Fatalf("weights add up to %v", sum)
		}
	})
}
