package actors

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestAwaitWhile(t *testing.T) {
	// The answer comes first.
	v, err := awaitWhile(func() (any, error) { return 7, nil }, func() bool { return true }, time.Millisecond)
	if err != nil || v != 7 {
		t.Fatalf("got %v, %v", v, err)
	}
	// The node is declared dead while the request waits: give up at once,
	// not at the future's timeout.
	var gone atomic.Bool
	time.AfterFunc(30*time.Millisecond, func() { gone.Store(true) })
	release, ended := make(chan struct{}), make(chan struct{})
	defer func() { close(release); <-ended }() // the future's timeout, early
	t0 := time.Now()
	_, err = awaitWhile(func() (any, error) {
		defer close(ended)
		select {
		case <-release:
		case <-time.After(2 * time.Second):
		}
		return nil, errors.New("future: timeout")
	}, func() bool { return !gone.Load() }, 5*time.Millisecond)
	if !errors.Is(err, errNodeGone) {
		t.Fatalf("got %v, want errNodeGone", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("gave up after %v", d)
	}
	// A node that stays answers with its error (timeout) as before.
	_, err = awaitWhile(func() (any, error) { time.Sleep(20 * time.Millisecond); return nil, errors.New("future: timeout") },
		func() bool { return true }, time.Millisecond)
	if err == nil || errors.Is(err, errNodeGone) {
		t.Fatalf("got %v, want the future's error", err)
	}
}
