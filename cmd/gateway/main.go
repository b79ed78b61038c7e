// Command gateway serves QLC's HTTP API, event streams, OpenAI-compatible
// endpoint and web UI. With -local it runs the whole system in one process
// (the run actors embedded), which is what `make run` starts.
//
// Every flag has an environment variable (shown in -help); a flag given on
// the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway"
	"github.com/qlc-project/qlc/stagework"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// env returns the environment's value for key, or def.
func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	if v, ok := os.LookupEnv(key); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envBool(key string) bool {
	b, _ := strconv.ParseBool(os.Getenv(key))
	return b
}

func run(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	addr := fs.String("addr", env("QLC_ADDR", ":8080"), "listen address (QLC_ADDR)")
	local := fs.Bool("local", envBool("QLC_LOCAL"), "local mode: text logs, run actors embedded (QLC_LOCAL)")
	profiles := fs.String("profiles", env("QLC_PROFILES", ""), "profile file, YAML or JSON; empty = the built-in profiles (QLC_PROFILES)")
	logFormat := fs.String("log-format", env("QLC_LOG_FORMAT", ""), "log format: json or text; default text with -local, else json (QLC_LOG_FORMAT)")
	logLevel := fs.String("log-level", env("QLC_LOG_LEVEL", "info"), "log level: debug, info, warn, error (QLC_LOG_LEVEL)")
	maxQuery := fs.Int("max-query-bytes", envInt("QLC_MAX_QUERY_BYTES", 32<<10), "largest question accepted, in bytes (QLC_MAX_QUERY_BYTES)")
	maxBody := fs.Int("max-body-bytes", envInt("QLC_MAX_BODY_BYTES", 1<<20), "largest request body, in bytes (QLC_MAX_BODY_BYTES)")
	maxRuns := fs.Int("max-active-runs", envInt("QLC_MAX_ACTIVE_RUNS", 1000), "refuse new runs beyond this many active ones (QLC_MAX_ACTIVE_RUNS)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	logger, err := newLogger(*logFormat, *logLevel, *local)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)

	stages := stagework.DefaultConfig()
	if *profiles != "" {
		if stages, err = stagework.LoadConfig(*profiles); err != nil {
			return err
		}
	}
	providers, err := actors.BuildProviders(stages, logger)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ecfg := actors.DefaultConfig()
	ecfg.Logger, ecfg.Stages, ecfg.Providers, ecfg.Registerer, ecfg.MaxActiveRuns = logger, stages, providers, reg, *maxRuns
	engine, err := actors.NewEngine(ecfg)
	if err != nil {
		return err
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Engine, gcfg.Logger, gcfg.Gatherer = engine, logger, reg
	gcfg.MaxQueryBytes, gcfg.MaxBodyBytes = *maxQuery, int64(*maxBody)
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := gateway.NewHTTPServer(*addr, gw.Handler(), logger)
	url := "http://" + displayAddr(ln.Addr().String())
	logger.Info("QLC gateway listening", "url", url, "local", *local, "profiles", stages.ProfileNames(), "default_profile", stages.DefaultProfile)
	if *local {
		fmt.Fprintf(os.Stderr, "\n  QLC is running: open %s in a browser (Ctrl-C stops it)\n\n", url)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: cancelling active runs")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	engine.Shutdown(sctx)
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func displayAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func newLogger(format, level string, local bool) (*slog.Logger, error) {
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
