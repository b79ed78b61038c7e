package cli

import (
	"flag"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/internal/ops"
)

// OpsFlags are the flight recorder's flags, the same on every command.
type OpsFlags struct {
	dir                     *string
	slowTTFT, slowStage     *time.Duration
	keep                    *int
	minInterval, windowSize *time.Duration
}

// AddOpsFlags defines the flight recorder's flags on fs: -trace-slow-ttft,
// -trace-slow-stage (0 = off, the default), -trace-dir, -trace-keep,
// -trace-interval and -trace-window.
func AddOpsFlags(fs *flag.FlagSet) *OpsFlags {
	d := ops.DefaultFlightConfig()
	return &OpsFlags{
		slowTTFT:    fs.Duration("trace-slow-ttft", EnvDuration("QLC_TRACE_SLOW_TTFT", 0), "flight recorder: write the last seconds' execution trace when a run's first token comes later than this after it started; 0 = off (QLC_TRACE_SLOW_TTFT)"),
		slowStage:   fs.Duration("trace-slow-stage", EnvDuration("QLC_TRACE_SLOW_STAGE", 0), "flight recorder: write the last seconds' execution trace when a stage attempt takes longer than this; 0 = off (QLC_TRACE_SLOW_STAGE)"),
		dir:         fs.String("trace-dir", Env("QLC_TRACE_DIR", ".qlc/traces"), "folder of the flight recorder's traces (go tool trace FILE) (QLC_TRACE_DIR)"),
		keep:        fs.Int("trace-keep", EnvInt("QLC_TRACE_KEEP", d.Keep), "flight recorder: traces kept in -trace-dir, the oldest deleted first (QLC_TRACE_KEEP)"),
		minInterval: fs.Duration("trace-interval", EnvDuration("QLC_TRACE_INTERVAL", d.MinInterval), "flight recorder: least time between two traces (QLC_TRACE_INTERVAL)"),
		windowSize:  fs.Duration("trace-window", EnvDuration("QLC_TRACE_WINDOW", d.Window), "flight recorder: how far back a trace reaches (QLC_TRACE_WINDOW)"),
	}
}

// StartFlightRecorder starts the flight recorder the flags ask for, if any
// threshold is set, and makes it cfg.Slow. Call the returned stop (never
// nil) at exit.
func (f *OpsFlags) StartFlightRecorder(cfg *actors.Config, reg prometheus.Registerer, logger *slog.Logger) (stop func(), err error) {
	c := ops.DefaultFlightConfig()
	c.Dir, c.SlowTTFT, c.SlowStage = *f.dir, *f.slowTTFT, *f.slowStage
	c.Keep, c.MinInterval, c.Window = *f.keep, *f.minInterval, *f.windowSize
	c.Registerer, c.Logger = reg, logger
	r, err := ops.NewFlightRecorder(c)
	if err != nil || r == nil {
		return func() {}, err
	}
	cfg.Slow = r
	logger.Info("flight recorder on", "slow_ttft", c.SlowTTFT, "slow_stage", c.SlowStage, "dir", c.Dir, "keep", c.Keep, "interval", c.MinInterval)
	return r.Close, nil
}
