package route

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// labelled is one question of testdata/questions.jsonl: its tier as a
// person judges it, and how many earlier messages its conversation had
// (synthesised: the set is about the question).
type labelled struct {
	Tier    string `json:"tier"`
	Query   string `json:"query"`
	History int    `json:"history"`
}

// accuracyFloor is the share of the labelled set Classify must get
// right. The rules reach a little above it; the labels were written
// before the rules were tuned and are not changed to suit them.
const accuracyFloor = 0.85

func loadLabelled(t testing.TB) []labelled {
	t.Helper()
	f, err := os.Open("testdata/questions.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []labelled
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var q labelled
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			t.Fatalf("questions.jsonl:%d: %v", n, err)
		}
		if q.Tier != Simple && q.Tier != Standard && q.Tier != Complex {
			t.Fatalf("questions.jsonl:%d: tier %q", n, q.Tier)
		}
		out = append(out, q)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// history synthesises n earlier messages of a conversation.
func history(n int) []stagework.Message {
	var h []stagework.Message
	for i := range n {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		h = append(h, stagework.Message{Role: role, Content: strings.Repeat(fmt.Sprintf("Earlier message %d of this conversation. ", i), 8)})
	}
	return h
}

func TestLabelledAccuracy(t *testing.T) {
	qs := loadLabelled(t)
	if len(qs) < 300 {
		t.Fatalf("the labelled set has %d questions, want at least 300", len(qs))
	}
	idx := map[string]int{Simple: 0, Standard: 1, Complex: 2}
	var confusion [3][3]int
	right := 0
	for _, q := range qs {
		d := Classify(q.Query, history(q.History))
		confusion[idx[q.Tier]][idx[d.Tier]]++
		if d.Tier == q.Tier {
			right++
		} else if testing.Verbose() {
			t.Logf("want %-8s got %-8s %q %v", q.Tier, d.Tier, firstLine(q.Query), d.Reasons)
		}
	}
	acc := float64(right) / float64(len(qs))
	var b strings.Builder
	fmt.Fprintf(&b, "accuracy %.3f (%d/%d); confusion (rows: label, columns: classified):\n", acc, right, len(qs))
	fmt.Fprintf(&b, "%10s %8s %8s %8s\n", "", Simple, Standard, Complex)
	for i, tier := range stagework.Tiers {
		fmt.Fprintf(&b, "%10s %8d %8d %8d\n", tier, confusion[i][0], confusion[i][1], confusion[i][2])
	}
	t.Log(b.String())
	if acc < accuracyFloor {
		t.Errorf("accuracy %.3f is below the floor %.2f", acc, accuracyFloor)
	}
	// The costly mistakes: a complex question answered by the simple
	// tier's profile, and the reverse.
	if confusion[2][0] > len(qs)/50 {
		t.Errorf("%d complex questions classified simple (at most %d)", confusion[2][0], len(qs)/50)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func TestClassifyExamples(t *testing.T) {
	for _, c := range []struct {
		query  string
		hist   int
		tier   string
		reason string
	}{
		{"hi", 0, Simple, "greeting"},
		{"What is the capital of France?", 0, Simple, "8 tokens"},
		{"Why is the sky blue?", 0, Standard, "asks for an explanation"},
		{"Fix this:\n```go\nfunc f() { for {} }\n```", 0, Complex, "code block"},
		{"Prove that sqrt(2) is irrational.", 0, Complex, "formal mathematics"},
		{"What is X? What is Y? And what is Z?", 0, Complex, "3 parts"},
		{"And the last step?", 20, Standard, "20 earlier messages"},
		{strings.Repeat("word ", 400), 0, Complex, "500 tokens"},
	} {
		d := Classify(c.query, history(c.hist))
		if d.Tier != c.tier {
			t.Errorf("Classify(%q) = %s %v, want %s", firstLine(c.query), d.Tier, d.Reasons, c.tier)
		}
		found := false
		for _, r := range d.Reasons {
			found = found || r == c.reason
		}
		if !found {
			t.Errorf("Classify(%q) reasons %v lack %q", firstLine(c.query), d.Reasons, c.reason)
		}
	}
}

func TestApproxTokens(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int
	}{{"", 0}, {"abcd", 1}, {"abcde", 2}, {"日本語", 3}, {"привет", 3}} {
		if got := approxTokens(c.s); got != c.want {
			t.Errorf("approxTokens(%q) = %d, want %d", c.s, got, c.want)
		}
	}
}

// FuzzClassify: no panic, the same decision for the same input, a known
// tier, and at least one reason (the length).
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"hi", "```\ncode\n", "1. a\n2. b\n3. c", "∫ x dx ???", "日本の首都は？", "\xff\xfe", ""} {
		f.Add(s, 0)
	}
	f.Fuzz(func(t *testing.T, q string, n int) {
		n = min(max(n, 0), 40)
		h := history(n)
		a, b := Classify(q, h), Classify(q, h)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("not deterministic: %+v vs %+v", a, b)
		}
		if a.Tier != Simple && a.Tier != Standard && a.Tier != Complex {
			t.Fatalf("tier %q", a.Tier)
		}
		if len(a.Reasons) == 0 || a.Features.Parts < 1 || a.Features.Tokens < 0 {
			t.Fatalf("decision %+v", a)
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	qs := loadLabelled(b)
	bytes := 0
	for _, q := range qs {
		bytes += len(q.Query)
	}
	b.ReportAllocs()
	b.SetBytes(int64(bytes / len(qs)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := qs[i%len(qs)]
		Classify(q.Query, nil)
	}
}
