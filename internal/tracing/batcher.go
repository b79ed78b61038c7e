package tracing

import (
	"context"
	"strconv"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// queue is the batch export of ended spans (of the SDK's, or of QLC's
// compact spans, compact.go): the SDK's batch span processor without its
// wake-up per span. The SDK's hands every ended span to its goroutine
// through a channel, waking it once per span; on a run's path that is a
// goroutine switch per span, which on a small machine shows in the TTFT.
// Here an ended span is appended to a slice under a mutex, and the
// exporting goroutine wakes on its timer (OTEL_BSP_SCHEDULE_DELAY), when a
// batch is full (a capacity-1 channel, non-blocking send: once per
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans), on ForceFlush and on Shutdown.
// The queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE): spans beyond it are
// dropped and counted, never blocking the caller. Each export is bounded by
// OTEL_BSP_EXPORT_TIMEOUT.
type queue[T any] struct {
	export   func(context.Context, []T) error // called by the queue's goroutine only
	shutdown func(context.Context) error      // the exporter's, after the last export
	delay    time.Duration
	timeout  time.Duration
	maxQueue int
	maxBatch int
	onError  func(error)

	// mu guards items and dropped.
	mu      sync.Mutex
	items   []T
	dropped int64

	wake     chan struct{}      // capacity 1: a batch is full
	flush    chan chan struct{} // ForceFlush: export all, then close
	stop     chan struct{}      // closed by Shutdown
	done     chan struct{}      // closed when the goroutine has exported the rest and ended
	stopOnce sync.Once
}

// batcher is the queue as the SDK's span processor, in front of an SDK
// exporter (OTLP over gRPC, or any protocol when the console's span store
// is on: Setup's SDK path).
type batcher struct {
	*queue[sdktrace.ReadOnlySpan]
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

// newQueue starts the exporting goroutine; Shutdown stops it. The
// defaults are the OpenTelemetry specification's.
func newQueue[T any](export func(context.Context, []T) error, shutdown func(context.Context) error,
	getenv func(string) string, onError func(error)) *queue[T] {
	q := &queue[T]{
		export:   export,
		shutdown: shutdown,
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
	q.maxBatch = min(q.maxBatch, q.maxQueue)
	go q.loop()
	return q
}

// newBatcher is the queue in front of an SDK exporter.
func newBatcher(exp sdktrace.SpanExporter, getenv func(string) string, onError func(error)) *batcher {
	return &batcher{newQueue(exp.ExportSpans, exp.Shutdown, getenv, onError)}
}

// OnStart does nothing (sdktrace.SpanProcessor).
func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span; it never blocks on the exporter.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.push(s)
}

// push queues an ended span, or drops it when the queue is full; it never
// blocks on the exporter.
func (q *queue[T]) push(s T) {
	q.mu.Lock()
	if len(q.items) >= q.maxQueue {
		q.dropped++
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, s)
	full := len(q.items) == q.maxBatch
	q.mu.Unlock()
	if full {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *queue[T]) loop() {
	defer close(q.done)
	t := time.NewTimer(q.delay)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			q.exportAll()
			return
		case <-t.C:
			q.exportAll()
			t.Reset(q.delay)
		case <-q.wake:
			q.exportAll()
		case ch := <-q.flush:
			q.exportAll()
			close(ch)
		}
	}
}

// exportAll exports the queue in batches of at most maxBatch.
func (q *queue[T]) exportAll() {
	for {
		q.mu.Lock()
		n := min(len(q.items), q.maxBatch)
		if n == 0 {
			q.mu.Unlock()
			return
		}
		batch := make([]T, n)
		copy(batch, q.items)
		q.items = append(q.items[:0], q.items[n:]...)
		q.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
		err := q.export(ctx, batch)
		cancel()
		if err != nil && q.onError != nil {
			q.onError(err)
		}
	}
}

// ForceFlush exports every queued span (sdktrace.SpanProcessor).
func (q *queue[T]) ForceFlush(ctx context.Context) error {
	ch := make(chan struct{})
	select {
	case q.flush <- ch:
	case <-q.done:
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
func (q *queue[T]) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if q.shutdown == nil {
		return nil
	}
	return q.shutdown(ctx)
}

// Dropped is how many spans found the queue full.
func (q *queue[T]) Dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}
