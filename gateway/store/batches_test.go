package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func batchOf(id, tenant string, n int, created time.Time) (Batch, []BatchItem) {
	items := make([]BatchItem, n)
	for i := range items {
		items[i] = BatchItem{BatchID: id, Index: i, CustomID: fmt.Sprint("c", i), Query: fmt.Sprint("q", i), Profile: "p", Seed: int64(i)}
	}
	return Batch{ID: id, TenantID: tenant, Total: n, CreatedAt: created}, items
}

func TestBatchesLifeCycle(t *testing.T) {
	s := openTemp(t)
	b, items := batchOf("b1", "t", 5, at(0))
	if err := s.CreateBatch(b, items, 2); err != nil {
		t.Fatal(err)
	}
	got, err := s.Batch("b1")
	if err != nil || got.TenantID != "t" || got.Total != 5 || !got.CreatedAt.Equal(at(0)) || !got.EndedAt.IsZero() || !got.CancelledAt.IsZero() {
		t.Fatalf("Batch = %+v, %v", got, err)
	}
	if _, err := s.Batch("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing batch: %v", err)
	}
	// The tenant's open batches are bounded, in the same transaction.
	b2, items2 := batchOf("b2", "t", 1, at(time.Second))
	if err := s.CreateBatch(b2, items2, 2); err != nil {
		t.Fatal(err)
	}
	b3, items3 := batchOf("b3", "t", 1, at(2*time.Second))
	if err := s.CreateBatch(b3, items3, 2); !errors.Is(err, ErrLimit) {
		t.Fatalf("third open batch: %v", err)
	}
	if _, err := s.Batch("b3"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a refused batch was written")
	}
	other, itemsOther := batchOf("b4", "u", 1, at(0))
	if err := s.CreateBatch(other, itemsOther, 2); err != nil {
		t.Fatalf("another tenant's batch: %v", err)
	}
	dup, itemsDup := batchOf("b5", "u", 2, at(0))
	itemsDup[1].CustomID = itemsDup[0].CustomID
	if err := s.CreateBatch(dup, itemsDup, 0); err == nil {
		t.Fatal("duplicate custom_id stored")
	}

	// The queue: the lowest queued index, claimed once.
	it, err := s.NextQueuedItem("b1")
	if err != nil || it.Index != 0 || it.Query != "q0" || it.Status != ItemQueued {
		t.Fatalf("NextQueuedItem = %+v, %v", it, err)
	}
	claim := BatchItem{BatchID: "b1", Index: 0, Status: ItemStarting}
	if ok, err := s.MoveBatchItem(claim, ItemQueued, 0); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if ok, _ := s.MoveBatchItem(claim, ItemQueued, 0); ok {
		t.Fatal("an item was claimed twice")
	}
	run := BatchItem{BatchID: "b1", Index: 0, Status: ItemRunning, RunID: "r0", StartedAt: at(time.Second)}
	if ok, err := s.MoveBatchItem(run, ItemStarting, 1); !ok || err != nil {
		t.Fatalf("start: %v %v", ok, err)
	}
	if it, _ := s.NextQueuedItem("b1"); it.Index != 1 {
		t.Fatalf("next after a claim: %d", it.Index)
	}
	act, err := s.ActiveItems("b1")
	if err != nil || len(act) != 1 || act[0].RunID != "r0" || act[0].Attempts != 1 {
		t.Fatalf("ActiveItems = %+v, %v", act, err)
	}
	end := BatchItem{BatchID: "b1", Index: 0, Status: ItemCompleted, RunID: "r0", Answer: strings.Repeat("a", 100), EndedAt: at(2 * time.Second)}
	if ok, err := s.MoveBatchItem(end, ItemRunning, 0); !ok || err != nil {
		t.Fatalf("end: %v %v", ok, err)
	}
	page, more, err := s.BatchItems("b1", -1, 10, 0)
	if err != nil || more || len(page) != 5 || page[0].Answer != end.Answer || !page[0].StartedAt.Equal(at(time.Second)) ||
		!page[0].EndedAt.Equal(at(2*time.Second)) || page[0].Query != "" {
		t.Fatalf("BatchItems = %+v %v %v", page, more, err)
	}
	// Pages: by limit, after an index, and by bytes (never empty).
	if page, more, _ := s.BatchItems("b1", 0, 2, 0); len(page) != 2 || page[0].Index != 1 || !more {
		t.Fatalf("after 0, limit 2: %+v %v", page, more)
	}
	if page, more, _ := s.BatchItems("b1", 2, 2, 0); len(page) != 2 || page[1].Index != 4 || more {
		t.Fatalf("after 2, limit 2: %+v %v", page, more)
	}
	if page, more, _ := s.BatchItems("b1", -1, 10, 50); len(page) != 1 || !more {
		t.Fatalf("a 50-byte page: %d items, more %v", len(page), more)
	}
	if idx, err := s.BatchItemIndex("b1", "c3"); err != nil || idx != 3 {
		t.Fatalf("BatchItemIndex = %d %v", idx, err)
	}
	if _, err := s.BatchItemIndex("b1", "zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown custom_id: %v", err)
	}

	// Cancel: the queued items, once; a starting one is left to its owner.
	if ok, _ := s.MoveBatchItem(BatchItem{BatchID: "b1", Index: 1, Status: ItemStarting}, ItemQueued, 0); !ok {
		t.Fatal("claim 1")
	}
	n, err := s.CancelBatch("b1", at(3*time.Second), "cancelled", "with its batch")
	if err != nil || n != 3 {
		t.Fatalf("CancelBatch = %d %v", n, err)
	}
	if n, _ := s.CancelBatch("b1", at(4*time.Second), "cancelled", "again"); n != 0 {
		t.Fatalf("cancel again cancelled %d", n)
	}
	counts, err := s.BatchCounts("b1")
	if err != nil || counts[ItemCompleted] != 1 || counts[ItemStarting] != 1 || counts[ItemCancelled] != 3 {
		t.Fatalf("BatchCounts = %v %v", counts, err)
	}
	if got, _ := s.Batch("b1"); !got.CancelledAt.Equal(at(3 * time.Second)) {
		t.Fatalf("cancelled_at = %v", got.CancelledAt)
	}
	if _, err := s.NextQueuedItem("b1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("queued after cancel: %v", err)
	}

	// Ending frees a place among the open batches; pruning deletes ended ones.
	if err := s.EndBatch("b1", at(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.EndBatch("b1", at(9*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Batch("b1"); !got.EndedAt.Equal(at(5 * time.Second)) {
		t.Fatalf("ended_at = %v", got.EndedAt)
	}
	if err := s.CreateBatch(b3, items3, 2); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	open, err := s.OpenBatches()
	if err != nil || len(open) != 3 {
		t.Fatalf("OpenBatches = %+v %v", open, err)
	}
	list, err := s.TenantBatches("t", 0)
	if err != nil || len(list) != 3 || list[0].ID != "b3" || list[2].ID != "b1" {
		t.Fatalf("TenantBatches = %+v %v", list, err)
	}
	if n, err := s.PruneBatches(at(5 * time.Second)); err != nil || n != 0 {
		t.Fatalf("prune at its end: %d %v", n, err)
	}
	if n, err := s.PruneBatches(at(6 * time.Second)); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if _, err := s.Batch("b1"); !errors.Is(err, ErrNotFound) {
		t.Fatal("pruned batch still there")
	}
	if counts, _ := s.BatchCounts("b1"); len(counts) != 0 {
		t.Fatalf("pruned batch's items: %v", counts)
	}
}
