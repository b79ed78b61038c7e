package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/internal/balance"
)

// runBalance is `gateway balance`: several gateways behind one address
// (internal/balance). It is a mode of the gateway binary so that the
// gateway's FROM-scratch image runs it too (no image is pulled).
func runBalance(args []string) error {
	d := balance.DefaultConfig()
	fs := flag.NewFlagSet("gateway balance", flag.ContinueOnError)
	addr := fs.String("addr", cli.Env("QLC_ADDR", ":8080"), "listen address (QLC_ADDR)")
	backends := fs.String("backends", cli.Env("QLC_BALANCE_BACKENDS", ""), "comma-separated gateways, host:port or http://host:port; requests go round robin to the healthy ones (QLC_BALANCE_BACKENDS)")
	health := fs.String("health-path", cli.Env("QLC_BALANCE_HEALTH_PATH", d.HealthPath), "path each backend is checked at; 200 = in the rotation (QLC_BALANCE_HEALTH_PATH)")
	interval := fs.Duration("health-interval", cli.EnvDuration("QLC_BALANCE_HEALTH_INTERVAL", d.Interval), "time between checks of each backend (QLC_BALANCE_HEALTH_INTERVAL)")
	timeout := fs.Duration("health-timeout", cli.EnvDuration("QLC_BALANCE_HEALTH_TIMEOUT", d.Timeout), "a check not answered within this fails (QLC_BALANCE_HEALTH_TIMEOUT)")
	logFormat := fs.String("log-format", cli.Env("QLC_LOG_FORMAT", "json"), "log format: json or text (QLC_LOG_FORMAT)")
	logLevel := fs.String("log-level", cli.Env("QLC_LOG_LEVEL", "info"), "log level: debug, info, warn, error (QLC_LOG_LEVEL)")
	addrFile := cli.AddrFileFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("balance: unexpected arguments: " + strings.Join(fs.Args(), " "))
	}
	logger, err := cli.NewLogger(*logFormat, *logLevel, false)
	if err != nil {
		return err
	}
	var list []string
	for _, b := range strings.Split(*backends, ",") {
		if b = strings.TrimSpace(b); b != "" {
			list = append(list, b)
		}
	}
	// Many concurrent streams to few backends: keep their connections.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	bal, err := balance.New(balance.Config{Backends: list, HealthPath: *health, Interval: *interval, Timeout: *timeout, Transport: tr, Logger: logger})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if err := cli.WriteAddrs(*addrFile, cli.Addrs{HTTP: ln.Addr().String()}); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	// The balancer's own health, for its container's check; every other
	// path goes to a gateway (their /healthz and /readyz too).
	mux.HandleFunc("GET /balancer/healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/", bal)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); bal.Run(ctx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("QLC balancer listening", "addr", ln.Addr().String(), "backends", list)
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	stop()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
