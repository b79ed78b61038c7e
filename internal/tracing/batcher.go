package tracing

import (
	"context"
	"strconv"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// batcher is the span processor: the SDK's batch span processor without
// its wake-up per span. The SDK's hands every ended span to its goroutine
// through a channel, waking it once per span; on a run's path that is a
// goroutine switch per span, which on a small machine shows in the TTFT.
// Here an ended span is appended to a slice under a mutex, and the
// exporting goroutine wakes on its timer (OTEL_BSP_SCHEDULE_DELAY), when a
// batch is full (a capacity-1 channel, non-blocking send: once per
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans), on ForceFlush and on Shutdown.
// The queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE): spans beyond it are
// dropped and counted, never blocking the caller. Each export is bounded by
// OTEL_BSP_EXPORT_TIMEOUT.
type batcher struct {
	exp      sdktrace.SpanExporter
	delay    time.Duration
	timeout  time.Duration
	maxQueue int
	maxBatch int
	onError  func(error)

	// mu guards queue and dropped.
	mu      sync.Mutex
	queue   []sdktrace.ReadOnlySpan
	dropped int64

	wake     chan struct{}      // capacity 1: a batch is full
	flush    chan chan struct{} // ForceFlush: export all, then close
	stop     chan struct{}      // closed by Shutdown
	done     chan struct{}      // closed when the goroutine has exported the rest and ended
	stopOnce sync.Once
}

// envMillis reads a millisecond count (the OTEL_BSP_* unit), def when unset or bad.
func envMillis(getenv func(string) string, key string, def time.Duration) time.Duration {
	if n, err := strconv.Atoi(getenv(key)); err == nil && n > 0 {
		return time.Duration(n) * time.Millisecond
	}
	return def
}

func envInt(getenv func(string) string, key string, def int) int {
	if n, err := strconv.Atoi(getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}

// newBatcher starts the exporting goroutine; Shutdown stops it. The
// defaults are the OpenTelemetry specification's.
func newBatcher(exp sdktrace.SpanExporter, getenv func(string) string, onError func(error)) *batcher {
	b := &batcher{
		exp:      exp,
		delay:    envMillis(getenv, "OTEL_BSP_SCHEDULE_DELAY", 5*time.Second),
		timeout:  envMillis(getenv, "OTEL_BSP_EXPORT_TIMEOUT", 30*time.Second),
		maxQueue: envInt(getenv, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
		maxBatch: envInt(getenv, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
		onError:  onError,
		wake:     make(chan struct{}, 1),
		flush:    make(chan chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	b.maxBatch = min(b.maxBatch, b.maxQueue)
	go b.loop()
	return b
}

// OnStart does nothing (sdktrace.SpanProcessor).
func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span; it never blocks on the exporter.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if len(b.queue) >= b.maxQueue {
		b.dropped++
		b.mu.Unlock()
		return
	}
	b.queue = append(b.queue, s)
	full := len(b.queue) == b.maxBatch
	b.mu.Unlock()
	if full {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

func (b *batcher) loop() {
	defer close(b.done)
	t := time.NewTimer(b.delay)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			b.exportAll()
			return
		case <-t.C:
			b.exportAll()
			t.Reset(b.delay)
		case <-b.wake:
			b.exportAll()
		case ch := <-b.flush:
			b.exportAll()
			close(ch)
		}
	}
}

// exportAll exports the queue in batches of at most maxBatch.
func (b *batcher) exportAll() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			b.mu.Unlock()
			return
		}
		batch := make([]sdktrace.ReadOnlySpan, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		err := b.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil && b.onError != nil {
			b.onError(err)
		}
	}
}

// ForceFlush exports every queued span (sdktrace.SpanProcessor).
func (b *batcher) ForceFlush(ctx context.Context) error {
	ch := make(chan struct{})
	select {
	case b.flush <- ch:
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports the rest and shuts the exporter down; idempotent
// (sdktrace.SpanProcessor).
func (b *batcher) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() { close(b.stop) })
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.exp.Shutdown(ctx)
}

// Dropped is how many spans found the queue full.
func (b *batcher) Dropped() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
