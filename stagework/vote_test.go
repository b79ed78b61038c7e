package stagework

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestLabel(t *testing.T) {
	var got strings.Builder
	for i := range MaxParallel {
		got.WriteString(Label(i))
	}
	if got.String() != "ABCDEFGHIJKLMNOP" {
		t.Errorf("labels = %q", got.String())
	}
	if Label(25) != "Z" || Label(26) != "" || Label(-1) != "" {
		t.Errorf("Label(25, 26, -1) = %q %q %q", Label(25), Label(26), Label(-1))
	}
}

// rankingText writes a well-formed ranker output for the permutation perm.
func rankingText(eval string, perm []int) string {
	var b strings.Builder
	b.WriteString(eval)
	b.WriteString("\n\nFINAL RANKING:\n")
	for k, i := range perm {
		fmt.Fprintf(&b, "%d. Response %s\n", k+1, Label(i))
	}
	return b.String()
}

func TestParseRanking(t *testing.T) {
	tests := []struct {
		name string
		text string
		n    int
		want []int // nil: an error
	}{
		{"canonical", "Response A is thorough.\nResponse B is wrong about X.\nResponse C is best.\n\nFINAL RANKING:\n1. Response C\n2. Response A\n3. Response B", 3, []int{2, 0, 1}},
		{"bold header", "Evaluation...\n\n**FINAL RANKING:**\n1. Response B\n2. Response A", 2, []int{1, 0}},
		{"bold header colon outside", "**Final Ranking**:\n1. Response B\n2. Response C\n3. Response A", 3, []int{1, 2, 0}},
		{"markdown heading without colon", "## Evaluation\n...\n\n## Final Ranking\n\n1. **Response C**\n2. **Response A**\n3. **Response B**\n", 3, []int{2, 0, 1}},
		{"lower case header", "final ranking:\n1. response c\n2. Response A\n3. Response B", 3, []int{0, 1, 2}}, // "response c" is no label; A, B then C appended
		{"parenthesised header", "FINAL RANKING (best to worst):\n1) Response D\n2) Response A\n3) Response C\n4) Response B", 4, []int{3, 0, 2, 1}},
		{"paren numbers", "FINAL RANKING:\n1) C\n2) A\n3) B", 3, []int{2, 0, 1}},
		{"bare letters", "FINAL RANKING:\n1. C\n2. B\n3. A", 3, []int{2, 1, 0}},
		{"bare letters with notes", "FINAL RANKING:\n1. C - most complete\n2. A: accurate but thin\n3. B (has an error)", 3, []int{2, 0, 1}},
		{"bullets", "FINAL RANKING:\n- Response B\n- Response A\n* Response C", 3, []int{1, 0, 2}},
		{"unicode bullets", "FINAL RANKING:\n• Response B\n• Response C\n• Response A", 3, []int{1, 2, 0}},
		{"plain lines", "FINAL RANKING:\nResponse B\nResponse A\nResponse C", 3, []int{1, 0, 2}},
		{"item with reason", "FINAL RANKING:\n1. Response C — clearest and correct\n2. Response A — good but misses B's point\n3. Response B", 3, []int{2, 0, 1}},
		{"item naming another after its own", "FINAL RANKING:\n1. Response B (better than Response A)\n2. Response C\n3. Response A", 3, []int{1, 2, 0}},
		{"bold numbers", "FINAL RANKING:\n**1.** Response B\n**2.** Response A\n**3.** Response C", 3, []int{1, 0, 2}},
		{"inline list", "My evaluation... FINAL RANKING: 1. Response B 2. Response C 3. Response A", 3, []int{1, 2, 0}},
		{"inline arrows", "FINAL RANKING: C > A > B", 3, []int{2, 0, 1}},
		{"inline commas", "Final ranking: B, C, A.", 3, []int{1, 2, 0}},
		{"inline numbered letters", "FINAL RANKING: 1. C 2. A 3. B", 3, []int{2, 0, 1}},
		{"prose in section", "FINAL RANKING:\nResponse C is the best, followed by Response A, then Response B.", 3, []int{2, 0, 1}},
		{"one missing appended", "FINAL RANKING:\n1. Response C\n2. Response A", 3, []int{2, 0, 1}},
		{"two missing", "FINAL RANKING:\n1. Response C", 3, nil},
		{"n=2 one named", "FINAL RANKING:\n1. Response B", 2, []int{1, 0}},
		{"duplicates first wins", "FINAL RANKING:\n1. Response B\n2. Response B\n3. Response A\n4. Response C", 3, []int{1, 0, 2}},
		{"label beyond n", "FINAL RANKING:\n1. Response A\n2. Response D\n3. Response B", 3, nil},
		{"trailing text after the list", "FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B\n\nI hope this helps! Response A was close.", 3, []int{2, 0, 1}},
		{"header mentioned earlier in prose", "I will give my FINAL RANKING: at the end.\n\nResponse A: fine. Response B: weak.\n\nFINAL RANKING:\n1. Response A\n2. Response B", 2, []int{0, 1}},
		{"last header unusable, earlier used", "FINAL RANKING:\n1. Response B\n2. Response C\n3. Response A\n\n(That was my final ranking: done.)", 3, []int{1, 2, 0}},
		{"code fence around the list", "FINAL RANKING:\n```\n1. Response B\n2. Response A\n```", 2, []int{1, 0}},
		{"quoted list", "FINAL RANKING:\n> 1. Response B\n> 2. Response A", 2, []int{1, 0}},
		{"CRLF", "Eval.\r\n\r\nFINAL RANKING:\r\n1. Response C\r\n2. Response B\r\n3. Response A\r\n", 3, []int{2, 1, 0}},
		{"label in brackets", "FINAL RANKING:\n1. Response [B]\n2. Response (A)", 2, []int{1, 0}},
		{"response colon label", "FINAL RANKING:\n1. Response: B\n2. Response: A", 2, []int{1, 0}},
		{"sixteen", rankingText("", []int{15, 3, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}), 16, []int{15, 3, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}},
		{"article is no label", "FINAL RANKING:\n1. A strong answer overall is Response B\n2. Response A", 2, []int{1, 0}},
		{"no header: mentions in order", "Response B is the best answer. Response A is fine. Response C is wrong.", 3, []int{1, 0, 2}},
		{"no header: repeated mentions", "Response B beats Response A. Response B also beats Response C.", 3, []int{1, 0, 2}},
		{"no header: too few", "Response B is the best.", 3, nil},
		{"no header: beyond n", "Response B, Response A, Response E", 3, nil},
		{"no header, no labels", "I cannot rank these.", 2, nil},
		{"empty", "", 2, nil},
		{"header but nothing after", "Response A is good, Response B is bad.\n\nFINAL RANKING:", 2, nil},
		{"responses plural is no label", "FINAL RANKING:\nRESPONSES A and B tie\n1. Response B\n2. Response A", 2, []int{1, 0}},
		{"n=1", "FINAL RANKING:\n1. Response A", 1, []int{0}},
		{"n=1 nothing named", "Only one response.", 1, []int{0}},
		{"n=1 empty header", "FINAL RANKING:", 1, []int{0}},
		{"n=1 beyond", "FINAL RANKING:\n1. Response B", 1, nil},
		{"n=0", "FINAL RANKING:\n1. Response A", 0, nil},
		{"n=27", "FINAL RANKING:\n1. Response A", 27, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRanking(tt.text, tt.n)
			if tt.want == nil {
				if err == nil || !errors.Is(err, ErrUnparsable) || got != nil {
					t.Fatalf("ParseRanking = %v, %v; want an ErrUnparsable", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseRanking = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseRankingErrorsSayWhy(t *testing.T) {
	_, err := ParseRanking("FINAL RANKING:\n1. Response A\n2. Response F", 3)
	if err == nil || !strings.Contains(err.Error(), "Response F") || !strings.Contains(err.Error(), "3 responses") {
		t.Errorf("beyond n: %v", err)
	}
	_, err = ParseRanking("FINAL RANKING:\n1. Response A", 4)
	if err == nil || !strings.Contains(err.Error(), "1 of the 4") {
		t.Errorf("too few: %v", err)
	}
	_, err = ParseRanking("nothing", 2)
	if err == nil || !strings.Contains(err.Error(), "no FINAL RANKING header") {
		t.Errorf("no header: %v", err)
	}
}

func TestParseRankingRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= MaxParallel; n++ {
		for range 20 {
			perm := r.Perm(n)
			got, err := ParseRanking(rankingText("Evaluation of Response A and Response B.", perm), n)
			if err != nil || !slices.Equal(got, perm) {
				t.Fatalf("n=%d perm %v: got %v, %v", n, perm, got, err)
			}
		}
	}
}

func TestAggregateRanking(t *testing.T) {
	ids := []string{"m1", "m2", "m3", "m4"}
	labels := []string{"A", "B", "C", "D"}
	got := AggregateRanking(ids, labels, [][]int{
		{2, 0, 1},    // C 1, A 2, B 3
		{2, 1, 0},    // C 1, B 2, A 3
		{0, 2, 1},    // A 1, C 2, B 3
		{1, 1, 9, 2}, // B 1 (its repeat and 9 are skipped), C 2... at position 4
	})
	want := []RankEntry{
		{ID: "m3", Label: "C", AverageRank: 2, Votes: 4},    // (1+1+2+4)/4
		{ID: "m1", Label: "A", AverageRank: 2, Votes: 3},    // (2+3+1)/3: ties with C, fewer votes
		{ID: "m2", Label: "B", AverageRank: 2.25, Votes: 4}, // (3+2+3+1)/4
		{ID: "m4", Label: "D", AverageRank: 0, Votes: 0},    // never placed
	}
	if !slices.Equal(got, want) {
		t.Fatalf("AggregateRanking =\n%+v\nwant\n%+v", got, want)
	}
	// Ties in average and votes keep ids' order; unplaced ones keep theirs.
	got = AggregateRanking([]string{"x", "y", "z", "w"}, nil, [][]int{{1, 0}, {0, 1}})
	if g := fmt.Sprint(got); g != "[{x A 1.5 2} {y B 1.5 2} {z C 0 0} {w D 0 0}]" {
		t.Errorf("ties: %s", g)
	}
	if got := AggregateRanking(nil, nil, [][]int{{0}}); len(got) != 0 {
		t.Errorf("no ids: %v", got)
	}
	if got := AggregateRanking([]string{"a"}, []string{"A"}, nil); len(got) != 1 || got[0].Votes != 0 {
		t.Errorf("no rankings: %v", got)
	}
}

func TestFinalAnswer(t *testing.T) {
	tests := []struct {
		text string
		want string // "": no answer
	}{
		{"Let me think. 17*23 = 391.\n\nFinal answer: 391", "391"},
		{"Reasoning...\nFinal answer: 391.", "391"},
		{"**Final answer:** 391", "391"},
		{"**Final Answer**: **Paris**", "paris"},
		{"### Final answer\n: x", "x"},
		{"The final answer is 42.", "42"},
		{"The final answer is: $42$", "42"},
		{"Final answer: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"},
		{"So the answer is $\\boxed{7}$.", "7"},
		{"Final answer: \\BoXed{00", "00"}, // lower case first, then an unclosed box is read to the end
		{"Final answer: (B)", "b"},
		{"Final answer: B.", "b"},
		{"Final answer: \"The Quick  Brown\tFox\"", "the quick brown fox"},
		{"Final answer: -5", "-5"},
		{"Final answer: .5", ".5"},
		{"Final answer: f(x)", "f(x)"},
		{"Final answer: 50%.", "50%"},
		{"Final answer: (a) and (b)", "(a) and (b)"},
		{"Final answer:\n\n  **Trade-offs**  \n", "trade-offs"},
		{"Final answer: `O(n log n)`", "o(n log n)"},
		{"First guess. Final answer: 3\nOn reflection...\nFinal answer: 4", "4"},
		{"Final answer: 3\nmore text after", "3"},
		{"FINAL ANSWER = yes", "yes"},
		{"Final answer：是", "是"},
		{"No marker here.\nThe capital is Paris.\n\n", "the capital is paris"},
		{"Answer below\n```\n\n", "answer below"},
		{"", ""},
		{"   \n\t\n", ""},
		{"...\n---\n", ""},
		{"Final answer:", ""},
		{"Final answer: ***", ""},
		{"The finalanswer: 3", "the finalanswer: 3"}, // no marker: the last line, normalised
	}
	for _, tt := range tests {
		got, ok := FinalAnswer(tt.text)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("FinalAnswer(%q) = %q, %v; want %q", tt.text, got, ok, tt.want)
		}
	}
}

func TestMajority(t *testing.T) {
	tests := []struct {
		outputs       []string
		winner, votes int
		ok            bool
	}{
		{[]string{"Final answer: 4", "Final answer: 5", "Final answer: **4**."}, 0, 2, true},
		{[]string{"Final answer: 5", "Final answer: 4", "final answer: 4"}, 1, 2, true},
		{[]string{"Final answer: 1", "Final answer: 2", "Final answer: 3"}, 0, 1, true}, // a tie: the first answer
		{[]string{"", "Final answer: 2", "Final answer: 3", "Final answer: 3"}, 2, 2, true},
		{[]string{"Final answer: x", "Final answer: y", "Final answer: y", "Final answer: x"}, 0, 2, true}, // tie: x came first
		{[]string{"", "  ", "Final answer:"}, 0, 0, false},
		{nil, 0, 0, false},
	}
	for _, tt := range tests {
		w, v, ok := Majority(tt.outputs)
		if w != tt.winner || v != tt.votes || ok != tt.ok {
			t.Errorf("Majority(%q) = %d, %d, %v; want %d, %d, %v", tt.outputs, w, v, ok, tt.winner, tt.votes, tt.ok)
		}
	}
}

func TestParseChoice(t *testing.T) {
	tests := []struct {
		text string
		n    int
		want int // -1: an error
	}{
		{"Responses A and C agree on 4; B says 5.\n\nMost consistent: Response C", 3, 2},
		{"**Most consistent:** Response B", 3, 1},
		{"Most consistent: **Response B**", 3, 1},
		{"Most consistent response: Response A", 2, 0},
		{"The most consistent response is Response C.", 3, 2},
		{"The most consistent is B.", 3, 1},
		{"Most consistent: B", 3, 1},
		{"Most consistent: (B)", 3, 1},
		{"most consistent:\n\nResponse B", 3, 1},
		{"Response B is the most consistent with the others; Response C disagrees.\n\nMost consistent: Response B", 3, 1},
		{"Response A is most consistent", 3, 0},      // no label after the marker: the last mention
		{"I pick Response B over Response C.", 3, 2}, // no marker: the last mention
		{"Most consistent: Response A\n\n(Response C was close.)", 3, 0},
		{"Most consistent: Response D", 3, -1},
		{"Most consistent: Response A\nMost consistent: Response B", 3, 1},
		{"Most consistent: none of them", 3, -1},
		{"no idea", 3, -1},
		{"", 3, -1},
		{"Most consistent: Response A", 0, -1},
	}
	for _, tt := range tests {
		got, err := ParseChoice(tt.text, tt.n)
		if tt.want < 0 {
			if err == nil || !errors.Is(err, ErrUnparsable) {
				t.Errorf("ParseChoice(%q, %d) = %d, %v; want an ErrUnparsable", tt.text, tt.n, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseChoice(%q, %d) = %d, %v; want %d", tt.text, tt.n, got, err, tt.want)
		}
	}
}

// checkRanking asserts ParseRanking's invariants on one result.
func checkRanking(t *testing.T, got []int, err error, n int) {
	t.Helper()
	if err != nil {
		if got != nil || !errors.Is(err, ErrUnparsable) {
			t.Fatalf("error %v with result %v, or not ErrUnparsable", err, got)
		}
		return
	}
	if len(got) != n {
		t.Fatalf("ranking %v of %d responses", got, n)
	}
	seen := map[int]bool{}
	for _, i := range got {
		if i < 0 || i >= n || seen[i] {
			t.Fatalf("ranking %v: index %d out of range or repeated", got, i)
		}
		seen[i] = true
	}
}

// FuzzParseRanking checks that no text panics the parser, that a ranking
// it accepts is a permutation of the n responses, and that a well-formed
// FINAL RANKING appended to any text is read exactly.
func FuzzParseRanking(f *testing.F) {
	f.Add("FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B", uint8(3))
	f.Add("**Final Ranking:** C > A", uint8(3))
	f.Add("Response B beats Response A", uint8(2))
	f.Add("FINAL RANKING:\n1. Response Z", uint8(30))
	f.Fuzz(func(t *testing.T, text string, n8 uint8) {
		n := int(n8%30) - 1 // -1 to 28: also the invalid ones
		got, err := ParseRanking(text, n)
		checkRanking(t, got, err, n)
		if n < 1 || n > MaxParallel {
			return
		}
		perm := rand.New(rand.NewPCG(uint64(len(text)), uint64(n))).Perm(n)
		got, err = ParseRanking(rankingText(text, perm), n)
		if err != nil || !slices.Equal(got, perm) {
			t.Fatalf("text + ranking %v: got %v, %v", perm, got, err)
		}
	})
}

// FuzzFinalAnswer checks that an answer is normalised (trimmed, spaces
// collapsed, lower case), that normalising is idempotent, and that a
// "Final answer:" line appended to any text wins.
func FuzzFinalAnswer(f *testing.F) {
	f.Add("Final answer: 42")
	f.Add("**Final Answer:** (B).")
	f.Add("\\boxed{x}")
	f.Add("no marker\nlast line")
	f.Fuzz(func(t *testing.T, text string) {
		a, ok := FinalAnswer(text)
		if ok != (a != "") {
			t.Fatalf("FinalAnswer(%q) = %q, %v", text, a, ok)
		}
		if ok {
			if a != strings.Join(strings.Fields(a), " ") || strings.ContainsAny(a, "\n\r") {
				t.Fatalf("FinalAnswer(%q) = %q: not trimmed or collapsed", text, a)
			}
			if a != strings.ToLower(a) && strings.ToLower(a) == strings.ToLower(strings.ToLower(a)) {
				t.Fatalf("FinalAnswer(%q) = %q: not lower case", text, a)
			}
			if !strings.Contains(strings.ToLower(a), "final") {
				if again, _ := FinalAnswer("Final answer: " + a); again != a {
					t.Fatalf("not idempotent: %q → %q → %q", text, a, again)
				}
			}
		}
		if got, ok := FinalAnswer(text + "\nFinal answer: 42"); got != "42" || !ok {
			t.Fatalf("appended answer: %q, %v", got, ok)
		}
	})
}

// FuzzParseChoice checks that a choice is in range or a clean error, and
// that a "Most consistent:" line appended to any text wins.
func FuzzParseChoice(f *testing.F) {
	f.Add("Most consistent: Response B", uint8(3))
	f.Add("the most consistent is C", uint8(3))
	f.Add("Response A then Response Q", uint8(20))
	f.Fuzz(func(t *testing.T, text string, n8 uint8) {
		n := int(n8%30) - 1
		got, err := ParseChoice(text, n)
		if err != nil {
			if !errors.Is(err, ErrUnparsable) {
				t.Fatalf("error %v is not ErrUnparsable", err)
			}
		} else if got < 0 || got >= n {
			t.Fatalf("ParseChoice(%q, %d) = %d", text, n, got)
		}
		if n < 1 || n > MaxParallel {
			return
		}
		k := len(text) % n
		if got, err := ParseChoice(text+"\nMost consistent: Response "+Label(k), n); err != nil || got != k {
			t.Fatalf("appended choice %s: %d, %v", Label(k), got, err)
		}
	})
}
