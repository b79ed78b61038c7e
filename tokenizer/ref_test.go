package tokenizer

import (
	"sync"
	"testing"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// The reference is github.com/pkoukk/tiktoken-go with its offline loader:
// a regexp2 port of tiktoken that gave the same ids as tiktoken's Rust core
// on a 39 MB corpus. It uses Go's Unicode 15 tables, so texts holding code
// points whose class changed in Unicode 16 are compared elsewhere
// (TestUnicode16Pieces), not against it.

var (
	refOnce sync.Once
	refEnc  map[string]*tiktoken.Tiktoken
	refErr  error
)

func reference(t testing.TB, name string) *tiktoken.Tiktoken {
	t.Helper()
	refOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader())
		refEnc = map[string]*tiktoken.Tiktoken{}
		for _, n := range []string{Cl100kBase, O200kBase} {
			var e *tiktoken.Tiktoken
			if e, refErr = tiktoken.GetEncoding(n); refErr != nil {
				return
			}
			refEnc[n] = e
		}
	})
	if refErr != nil {
		t.Fatalf("reference: %v", refErr)
	}
	return refEnc[name]
}

func mustLoad(t testing.TB, name string, generic bool) *Encoding {
	t.Helper()
	e, err := Load(Config{Encoding: name, Generic: generic})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
