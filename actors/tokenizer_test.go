package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/tokenizer"
)

// Concurrent requests for tokenizer actors leave in batches while one is in
// flight, and every answer is exact and goes to its own caller.
func TestTokenizerRequestsAreBatched(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) {
		c.Tokenizer = true
		c.Topology = &StaticTopology{Tokenizers: []string{"nonhost"}} // this process (no Remote)
		// A batch of 64 under -race on a loaded machine can take longer
		// than the default 250 ms; this test is about batching, not the
		// fallback.
		c.TokenizerTimeout = 10 * time.Second
	})
	enc, _ := tokenizer.Get(tokenizer.Cl100kBase)
	const n = 300
	// The first batch waits until every request is queued: the others must
	// leave in batches of at most maxTokenBatch, whatever the scheduling.
	hold := make(chan struct{})
	e.tokens.batch.mu.Lock()
	e.tokens.batch.hold = hold
	e.tokens.batch.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := strings.Repeat(fmt.Sprintf("request %d says hello; ", i), i%7+1)
			tc, err := e.Tokenizer().CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{text}})
			switch {
			case err != nil:
				errs <- err
			case tc.Counts[0] != int64(enc.Count(text)) || tc.ServedBy != e.Address():
				errs <- fmt.Errorf("request %d: %+v, want %d served by %s", i, tc, enc.Count(text), e.Address())
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		e.tokens.batch.mu.Lock()
		queued := e.tokens.batch.enqueued
		e.tokens.batch.mu.Unlock()
		if queued == n || time.Now().After(deadline) {
			break
		}
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	batches := testutil.CollectAndCount(e.metrics.tokenizerBatches)
	if batches != 1 {
		t.Fatalf("histogram series: %d", batches)
	}
	m := &dtoHistogram{}
	m.read(t, e)
	// The first request leaves alone (nothing was in flight); the other
	// n-1 were all queued behind it.
	if most := 1 + (n-1+maxTokenBatch-1)/maxTokenBatch; m.sum != n || m.count > float64(most) {
		t.Fatalf("%v requests in %v batches: want all %d, in at most %d batches (of at most %d)", m.sum, m.count, n, most, maxTokenBatch)
	}
}

// A 100 KB prompt is fitted (counted, trimmed, counted again) with the real
// tokenizer: the latency a stage worker pays.
func BenchmarkFitPrompt100KB(b *testing.B) {
	counter, err := counterFor("gpt-4o")
	if err != nil {
		b.Fatal(err)
	}
	long := strings.Repeat("The refiner added detail about quorum intersection and leader leases. ", 1500) // ~100 KB
	spec := stagework.StageSpec{Stage: stagework.StageCurator, Model: "gpt-4o", MaxTokens: 1000}
	in := stagework.PromptInput{Query: "How does Raft stay safe?", Outputs: map[stagework.Stage]string{
		stagework.StageGenerator: long[:20000], stagework.StageRefiner: long, stagework.StageValidator: long[:10000]}}
	b.SetBytes(int64(len(long) + 30000))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, notes, err := stagework.FitPrompt(spec, in, 16000, counter); err != nil || len(notes) == 0 {
			b.Fatal(err, notes)
		}
	}
}

// dtoHistogram reads the batch-size histogram's sum and count.
type dtoHistogram struct{ sum, count float64 }

func (d *dtoHistogram) read(t *testing.T, e *Engine) {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	e.metrics.tokenizerBatches.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	d.sum, d.count = m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
}

func TestFitToBudget(t *testing.T) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 200)
	for _, onActors := range []bool{true, false} {
		e, _ := newTestEngine(t, func(c *Config) { c.Tokenizer = onActors })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ref, err := tokenizer.Get(tokenizer.Cl100kBase)
		if err != nil {
			t.Fatal(err)
		}
		full := int64(ref.Count(text))
		// Fits: unchanged.
		ft, err := e.Tokenizer().FitToBudget(ctx, &messages.FitToBudget{Model: "gpt-4", Text: text, MaxTokens: full})
		if err != nil || ft.Truncated || ft.Text != text || ft.Tokens != full || ft.Encoding != tokenizer.Cl100kBase {
			t.Fatalf("fitting text: %+v %v", ft, err)
		}
		wantServer := "local-fallback"
		if onActors {
			wantServer = e.Address()
		}
		if ft.ServedBy != wantServer {
			t.Fatalf("served by %q; want %q", ft.ServedBy, wantServer)
		}
		// Cut: a prefix at a token boundary, as long as the budget allows.
		ft, err = e.Tokenizer().FitToBudget(ctx, &messages.FitToBudget{Encoding: tokenizer.Cl100kBase, Text: text, MaxTokens: 101})
		if err != nil || !ft.Truncated || ft.OriginalTokens != full || ft.Tokens != 101 || !strings.HasPrefix(text, ft.Text) ||
			int64(ref.Count(ft.Text)) != ft.Tokens {
			t.Fatalf("cut to 101 tokens: %+v %v", ft, err)
		}
		ids := ref.EncodeOrdinary(text)
		if want, err := ref.Decode(ids[:101]); err != nil || ft.Text != string(want) {
			t.Fatalf("the cut is not at the 101st token's end: %q", ft.Text[len(ft.Text)-20:])
		}
		for _, bad := range []*messages.FitToBudget{
			{Encoding: "nope", Text: "x", MaxTokens: 1},
			{Encoding: tokenizer.Cl100kBase, Text: "x", MaxTokens: -1},
		} {
			if _, err := e.Tokenizer().FitToBudget(ctx, bad); !errors.Is(err, ErrTokenize) {
				t.Fatalf("%+v: err %v; want ErrTokenize", bad, err)
			}
		}
	}
}
