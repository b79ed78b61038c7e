package store

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them (a store
// left open, a query's rows not closed). Nothing is ignored: the SQLite
// driver (modernc.org/sqlite, pure Go) starts no goroutine of its own that
// outlives a closed database.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
