// Package cli holds what QLC's commands share: environment-variable
// defaults for flags, logger set-up and signal handling.
package cli

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/cpuid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
)

// Env returns the environment's value for key, or def.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// EnvInt returns key's integer value, or def if unset or not an integer.
func EnvInt(key string, def int) int {
	if v, ok := os.LookupEnv(key); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

// EnvDuration returns key's duration value (time.ParseDuration), or def.
func EnvDuration(key string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(key); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// EnvFloat returns key's floating-point value, or def if unset or not a number.
func EnvFloat(key string, def float64) float64 {
	if v, ok := os.LookupEnv(key); ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return def
}

// StageCapacity applies -stage-cpu-target to cfg: above 1 is an error;
// 0 or below keeps the stage slots fixed; else the share of GOMAXPROCS
// the process may use before it takes fewer stage attempts.
func StageCapacity(cfg *actors.Config, target float64) error {
	switch {
	case target > 1:
		return fmt.Errorf("-stage-cpu-target must be at most 1 (a share of GOMAXPROCS), got %v", target)
	case target > 0:
		cfg.AdaptiveStageSlots, cfg.StageCapacity.TargetCPU = true, target
	}
	return nil
}

// EnvBool returns key's boolean value (strconv.ParseBool), false if unset.
func EnvBool(key string) bool {
	b, _ := strconv.ParseBool(os.Getenv(key))
	return b
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NewLogger makes the process's logger: format "json" or "text" (empty:
// text when local, else json), level "debug", "info", "warn" or "error".
func NewLogger(format, level string, local bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "" {
		format = "json"
		if local {
			format = "text"
		}
	}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("bad log format %q (json or text)", format)
}

// HealthCheck is the `healthcheck URL` subcommand of QLC's binaries: images
// are FROM scratch (no curl), so a container's health check runs the binary
// itself. It returns nil if GET url answers 200 within 2 s.
func HealthCheck(url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// Main is a command's main: `name healthcheck URL` checks a server's
// health (for container health checks: images are FROM scratch, without
// curl), anything else runs run with the arguments. Errors exit 1.
func Main(name string, run func(args []string) error) {
	if len(os.Args) == 3 && os.Args[1] == "healthcheck" {
		if err := HealthCheck(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "unhealthy:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// EngineBase is what every command builds the same way: the profiles (the
// file at path, or the built-in ones), their provider clients, and a
// metrics registry with the Go and process collectors, set into an
// actors.Config with the logger.
func EngineBase(path string, logger *slog.Logger) (actors.Config, *prometheus.Registry, error) {
	cfg := actors.DefaultConfig()
	stages := stagework.DefaultConfig()
	if path != "" {
		var err error
		if stages, err = stagework.LoadConfig(path); err != nil {
			return cfg, nil, err
		}
	}
	providers, err := actors.BuildProviders(stages, logger)
	if err != nil {
		return cfg, nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Logger, cfg.Stages, cfg.Providers, cfg.Registerer = logger, stages, providers, reg
	return cfg, reg, nil
}

// Hostname is the default name base for members.
func Hostname(role string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return role + "-" + h
	}
	return role
}

// TokenizerCapable reports whether this CPU runs the tokenizer's SIMD path
// (AVX2), unless disabled names it (tests build mixed clusters on one machine).
func TokenizerCapable(disabled []string) bool {
	return cpuid.CPU.Supports(cpuid.AVX2) && !slices.ContainsFunc(disabled, func(f string) bool { return strings.EqualFold(f, "avx2") })
}
