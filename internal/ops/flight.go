package ops

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a recording is written, the values of qlc_flight_recordings_total's
// reason label.
const (
	ReasonTTFT  = "ttft"  // a run's first token came later than SlowTTFT
	ReasonStage = "stage" // a stage attempt took longer than SlowStage
)

// FlightConfig configures a FlightRecorder.
type FlightConfig struct {
	// Dir receives the recordings, made if missing. Required when a
	// threshold is set.
	Dir string
	// SlowTTFT: a run whose first token delta comes later than this after
	// the run started triggers a recording. 0: off.
	SlowTTFT time.Duration
	// SlowStage: a stage attempt that takes longer than this, from its start
	// to its completion, triggers a recording. 0: off.
	SlowStage time.Duration
	// Window is how far back a recording reaches (the trace window's
	// minimum age). Default 10 s: a TTFT or a stage past a threshold of a
	// few seconds still has its start in the window.
	Window time.Duration
	// MaxBytes bounds the trace window's memory (it wins over Window).
	// Default 64 MiB: about 10 s of a busy two-core process.
	MaxBytes uint64
	// Keep is how many recordings stay in Dir; the oldest go first. Default
	// 10: recordings are several MB each.
	Keep int
	// MinInterval is the least time between two recordings: a slow spell
	// makes one recording, not one per slow run. Default 30 s.
	MinInterval time.Duration
	// Registerer receives qlc_flight_recordings_total. Nil: not registered.
	Registerer prometheus.Registerer
	// Logger notes each recording. Default slog.Default().
	Logger *slog.Logger
}

// DefaultFlightConfig returns the defaults, every threshold off.
func DefaultFlightConfig() FlightConfig {
	return FlightConfig{Window: 10 * time.Second, MaxBytes: 64 << 20, Keep: 10, MinInterval: 30 * time.Second}
}

// Enabled reports whether a threshold is set.
func (c FlightConfig) Enabled() bool { return c.SlowTTFT > 0 || c.SlowStage > 0 }

func (c *FlightConfig) validate() error {
	d := DefaultFlightConfig()
	switch {
	case c.SlowTTFT < 0 || c.SlowStage < 0:
		return errors.New("ops: negative flight recorder threshold")
	case c.Enabled() && c.Dir == "":
		return errors.New("ops: the flight recorder needs a directory (-trace-dir)")
	case c.Window < 0 || c.Keep < 0 || c.MinInterval < 0:
		return errors.New("ops: negative flight recorder window, keep or interval")
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.Keep == 0 {
		c.Keep = d.Keep
	}
	if c.MinInterval == 0 {
		c.MinInterval = d.MinInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// FlightRecorder keeps the last seconds of the process's execution trace
// and writes them to a file when a run is slow. A nil *FlightRecorder does
// nothing. FirstToken and StageDone may be called concurrently and never
// block.
type FlightRecorder struct {
	cfg        FlightConfig
	fr         *trace.FlightRecorder
	recordings *prometheus.CounterVec // reason
	wake       chan string            // capacity 1: the reason of a pending recording
	last       atomic.Int64           // unix ns of the last trigger accepted (rate bound)
	stop       chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
}

// NewFlightRecorder starts the trace window and the writer. With no
// threshold set it returns nil (a recorder that does nothing) and no error.
// Only one flight recorder may run in a process (runtime/trace's rule).
func NewFlightRecorder(cfg FlightConfig) (*FlightRecorder, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("ops: trace dir: %w", err)
	}
	r := &FlightRecorder{
		cfg: cfg,
		fr:  trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: cfg.Window, MaxBytes: cfg.MaxBytes}),
		recordings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_flight_recordings_total", Help: "Execution traces of the last seconds written because a run was slow, by reason: ttft (first token later than -trace-slow-ttft), stage (a stage attempt longer than -trace-slow-stage).",
		}, []string{"reason"}),
		wake: make(chan string, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, reason := range []string{ReasonTTFT, ReasonStage} {
		r.recordings.WithLabelValues(reason) // both series from the start, at 0
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.recordings); err != nil {
			return nil, err
		}
	}
	if err := r.fr.Start(); err != nil {
		if cfg.Registerer != nil {
			cfg.Registerer.Unregister(r.recordings)
		}
		return nil, fmt.Errorf("ops: flight recorder: %w", err)
	}
	go r.writer()
	return r, nil
}

// FirstToken is told a run's time from its start to its first token delta.
func (r *FlightRecorder) FirstToken(d time.Duration) {
	if r != nil && r.cfg.SlowTTFT > 0 && d > r.cfg.SlowTTFT {
		r.trigger(ReasonTTFT)
	}
}

// StageDone is told a completed stage attempt's duration.
func (r *FlightRecorder) StageDone(d time.Duration) {
	if r != nil && r.cfg.SlowStage > 0 && d > r.cfg.SlowStage {
		r.trigger(ReasonStage)
	}
}

// trigger asks the writer for a recording, unless one was asked less than
// MinInterval ago.
func (r *FlightRecorder) trigger(reason string) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if last != 0 && now-last < int64(r.cfg.MinInterval) {
		return
	}
	if !r.last.CompareAndSwap(last, now) {
		return // another trigger won the race
	}
	select {
	case r.wake <- reason:
	default: // one is pending already
	}
}

func (r *FlightRecorder) writer() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case reason := <-r.wake:
			r.prune(r.cfg.Keep - 1) // room for this one first: never more than Keep files
			path, err := r.write(reason)
			if err != nil {
				r.cfg.Logger.Warn("flight recorder: could not write the trace", "reason", reason, "error", err)
				continue
			}
			r.recordings.WithLabelValues(reason).Inc()
			r.cfg.Logger.Info("flight recorder: slow run, trace of the last seconds written (go tool trace FILE)", "reason", reason, "file", path)
		}
	}
}

// FilePrefix and FileSuffix frame a recording's file name; between them is
// its UTC time (sortable) and reason.
const (
	FilePrefix = "flight-"
	FileSuffix = ".trace"
)

func (r *FlightRecorder) write(reason string) (string, error) {
	var buf bytes.Buffer
	if _, err := r.fr.WriteTo(&buf); err != nil {
		return "", err
	}
	name := FilePrefix + time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + reason + FileSuffix
	path := filepath.Join(r.cfg.Dir, name)
	// Written under a temporary name and renamed: a reader never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// prune deletes all but the newest keep recordings.
func (r *FlightRecorder) prune(keep int) {
	files, err := Recordings(r.cfg.Dir)
	if err != nil || len(files) <= keep {
		return
	}
	for _, f := range files[:len(files)-keep] {
		if err := os.Remove(f); err != nil {
			r.cfg.Logger.Warn("flight recorder: could not delete an old trace", "file", f, "error", err)
		}
	}
}

// Recordings lists the recordings in dir, oldest first.
func Recordings(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, FilePrefix) && strings.HasSuffix(n, FileSuffix) && e.Type().IsRegular() {
			out = append(out, filepath.Join(dir, n))
		}
	}
	slices.Sort(out) // names start with a fixed-width UTC time
	return out, nil
}

// Close stops the writer and the trace window. Idempotent; nil-safe.
func (r *FlightRecorder) Close() {
	if r == nil {
		return
	}
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		r.fr.Stop()
	})
}
