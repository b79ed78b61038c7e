package actors

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// randomText strings pieces that stress a BPE pre-tokenizer at a cut:
// whitespace runs, punctuation, digits, multi-byte characters, specials.
func randomText(rng *rand.Rand, n int) string {
	pieces := []string{"a", "ab", " ", "  ", "\n", "\n\n", "\t", "é", "東京", "🌸", "'s", "'", "123", "4", ".", ",", "?", "<", ">", "-", "x y", "The", " the", "<|endoftext|>", "{", "}"}
	var b strings.Builder
	for range rng.IntN(n) {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	return b.String()
}

// TestCutCountBound: cutting a text in two never lowers the sum of the
// pieces' counts by more than boundarySlack below the whole's count.
func TestCutCountBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, model := range []string{"gpt-4o", "gpt-4", "llama-3.1-70b"} {
		c, err := counterFor(model)
		if err != nil {
			t.Fatal(err)
		}
		for range 20000 {
			a, b := randomText(rng, 12), randomText(rng, 12)
			if whole, parts := c.Count(a+b), c.Count(a)+c.Count(b); whole > parts+boundarySlack {
				t.Fatalf("%s: %q + %q is %d tokens, the pieces %d (+%d slack)", model, a, b, whole, parts, boundarySlack)
			}
		}
	}
}

// TestReservationBoundsTheExactCount: the reservation counted in pieces is
// never below the one counted whole, and not far above, for every
// built-in profile and random questions and histories.
func TestReservationBoundsTheExactCount(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) {
		c.Stages = stagework.DefaultConfig()
		p, err := BuildProviders(c.Stages, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.Providers = p
	})
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 300 {
		for _, profile := range e.Stages().ProfileNames() {
			req := RunRequest{Profile: profile, Query: "Q" + randomText(rng, 80)}
			if i%3 == 0 {
				req.History = []stagework.Message{{Role: "user", Content: randomText(rng, 40)}, {Role: "assistant", Content: req.Query}, {Role: "system", Content: randomText(rng, 20)}}
			}
			fast, err := e.Reservation(req)
			if err != nil {
				t.Fatal(err)
			}
			exact, err := e.reservation(req, true)
			if err != nil {
				t.Fatal(err)
			}
			if fast < exact || fast > exact+200 {
				t.Fatalf("%s, query %q: reservation %d, counted whole %d", profile, req.Query, fast, exact)
			}
		}
	}
}
