// Command gateway serves QLC's HTTP API, event streams, OpenAI-compatible
// endpoint and web UI. With -local it runs the whole system in one process
// (the run actors embedded), which is what `make run` starts; with -nodes it
// places runs on `node` processes and streams their events.
//
// `gateway balance -backends a:8080,b:8080` is a balancer instead: several
// gateways behind one address (internal/balance).
//
// Every flag has an environment variable (shown in -help); a flag given on
// the command line wins.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/gateway"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/internal/ops"
	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/stagework/discover"
	"github.com/qlc-project/qlc/topology"
)

func main() { cli.Main("gateway", run) }

func run(args []string) error {
	if len(args) > 0 && args[0] == "balance" {
		return runBalance(args[1:])
	}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	addr := fs.String("addr", cli.Env("QLC_ADDR", ":8080"), "listen address (QLC_ADDR)")
	local := fs.Bool("local", cli.EnvBool("QLC_LOCAL"), "local mode: text logs, run actors embedded (QLC_LOCAL)")
	profiles := fs.String("profiles", cli.Env("QLC_PROFILES", ""), "profile file, YAML or JSON; empty = the built-in profiles (QLC_PROFILES)")
	logFormat := fs.String("log-format", cli.Env("QLC_LOG_FORMAT", ""), "log format: json or text; default text with -local, else json (QLC_LOG_FORMAT)")
	logLevel := fs.String("log-level", cli.Env("QLC_LOG_LEVEL", "info"), "log level: debug, info, warn, error (QLC_LOG_LEVEL)")
	maxQuery := fs.Int("max-query-bytes", cli.EnvInt("QLC_MAX_QUERY_BYTES", 32<<10), "largest question accepted, in bytes (QLC_MAX_QUERY_BYTES)")
	maxBody := fs.Int("max-body-bytes", cli.EnvInt("QLC_MAX_BODY_BYTES", 1<<20), "largest request body, in bytes (QLC_MAX_BODY_BYTES)")
	runSlots := fs.Int("run-slots", cli.EnvInt("QLC_RUN_SLOTS", 64), "runs executed here at once; beyond, runs wait in a weighted-fair queue per tenant; 0 = no limit (QLC_RUN_SLOTS)")
	stageSlots := fs.Int("stage-slots", cli.EnvInt("QLC_STAGE_SLOTS", 128), "stage attempts of parallel strategies (moa, council, vote) run here at once, for runs coordinated on any node; beyond, a step goes to another node or waits in a weighted-fair queue per tenant; 0 = no limit (QLC_STAGE_SLOTS)")
	stageCPU := fs.Float64("stage-cpu-target", cli.EnvFloat("QLC_STAGE_CPU_TARGET", 0.85), "share of GOMAXPROCS this process may use before it takes fewer stage attempts (its stage-slots adapt to its CPU use and how long its attempts wait to start; a node whose share is full refuses attempts, which go to nodes with room); 0 = fixed stage-slots (QLC_STAGE_CPU_TARGET)")
	memBudget := fs.String("memory-budget", cli.Env("QLC_MEMORY_BUDGET", ""), "heap budget (bytes or KiB/MiB/GiB): past 80 % finished runs leave memory, past 95 % new runs get 503 memory_budget; also the Go runtime's memory limit unless GOMEMLIMIT is set; empty: 90 % of the cgroup v2 memory limit, if any; none: off (QLC_MEMORY_BUDGET)")
	slotHeadroom := fs.Int("run-slot-headroom", cli.EnvInt("QLC_RUN_SLOT_HEADROOM", 0), "run slots no single tenant may take, kept for the others; 0 = run-slots/8, -1 = none (QLC_RUN_SLOT_HEADROOM)")
	maxRuns := fs.Int("max-active-runs", cli.EnvInt("QLC_MAX_ACTIVE_RUNS", 1000), "refuse new runs beyond this many active ones, shared among the active tenants by weight (QLC_MAX_ACTIVE_RUNS)")
	adaptiveRuns := fs.Bool("adaptive-active-runs", os.Getenv("QLC_ADAPTIVE_ACTIVE_RUNS") != "false", "adapt the active runs admitted (at most max-active-runs) to the measured run latency, refusing the excess at once with 503 cluster_saturated; QLC_ADAPTIVE_ACTIVE_RUNS=false turns it off")
	runHeadroom := fs.Int("active-run-headroom", cli.EnvInt("QLC_ACTIVE_RUN_HEADROOM", 0), "active runs no single tenant may hold, kept for the others; 0 = max-active-runs/8, -1 = none (QLC_ACTIVE_RUN_HEADROOM)")
	seeds := fs.String("seeds", cli.Env("QLC_SEEDS", ""), "comma-separated gossip addresses (host:port, DNS names allowed) of cluster members; runs are then placed on the cluster's nodes (QLC_SEEDS)")
	gossipBind := fs.String("gossip-bind", cli.Env("QLC_GOSSIP_BIND", "127.0.0.1:0"), "gossip (memberlist) listen address, with -seeds (QLC_GOSSIP_BIND)")
	gossipAdvertise := fs.String("gossip-advertise", cli.Env("QLC_GOSSIP_ADVERTISE", ""), "gossip address others use; default -gossip-bind (QLC_GOSSIP_ADVERTISE)")
	nodes := fs.String("nodes", cli.Env("QLC_NODES", ""), "comma-separated actor addresses (host:port) of nodes that host runs; empty = this process hosts them (QLC_NODES)")
	bind := fs.String("bind", cli.Env("QLC_BIND", "127.0.0.1:0"), "actor transport listen address, used with -nodes (QLC_BIND)")
	insecure := fs.Bool("insecure", cli.EnvBool("QLC_INSECURE"), "run gossip and the actor transport without a cluster key: loopback only, refused if an address bound or advertised is not (QLC_INSECURE)")
	dataDir := fs.String("data-dir", cli.Env("QLC_DATA_DIR", ".qlc"), "folder of the gateway's SQLite store (tenants, keys, sealed provider keys, usage ledger, audit) and, in local mode, dev-keys.json and, without a cluster key, provider-keys.secret (QLC_DATA_DIR)")
	devKeysFlag := fs.Bool("dev-keys", cli.EnvBool("QLC_DEV_KEYS"), "as -local does: make a dev tenant and an admin key in <data-dir>/dev-keys.json, which the web UI on this machine uses by itself (QLC_DEV_KEYS)")
	tenantsFile := fs.String("tenants", cli.Env("QLC_TENANTS", ""), "tenants file (YAML or JSON): tenants, their keys and limits, admin keys (QLC_TENANTS)")
	tlsCert := fs.String("tls-cert", cli.Env("QLC_TLS_CERT", ""), "PEM certificate (chain) for HTTPS on -addr; with -tls-key (QLC_TLS_CERT)")
	tlsKey := fs.String("tls-key", cli.Env("QLC_TLS_KEY", ""), "PEM private key for -tls-cert (QLC_TLS_KEY)")
	readHeaderTimeout := fs.Duration("read-header-timeout", cli.EnvDuration("QLC_READ_HEADER_TIMEOUT", 10*time.Second), "a client must send its request headers within this (slowloris) (QLC_READ_HEADER_TIMEOUT)")
	bodyTimeout := fs.Duration("body-read-timeout", cli.EnvDuration("QLC_BODY_READ_TIMEOUT", 30*time.Second), "a client must send its request body within this (QLC_BODY_READ_TIMEOUT)")
	idleTimeout := fs.Duration("idle-timeout", cli.EnvDuration("QLC_IDLE_TIMEOUT", 120*time.Second), "an idle keep-alive connection is closed after this (QLC_IDLE_TIMEOUT)")
	maxHeader := fs.Int("max-header-bytes", cli.EnvInt("QLC_MAX_HEADER_BYTES", 64<<10), "largest request header block, in bytes (QLC_MAX_HEADER_BYTES)")
	maxEvent := fs.Int("max-event-bytes", cli.EnvInt("QLC_MAX_EVENT_BYTES", gateway.DefaultMaxEventBytes), fmt.Sprintf("largest event on an event stream (SSE event, WebSocket message, OpenAI chunk), framing included, in bytes; at least %d (QLC_MAX_EVENT_BYTES)", gateway.MinMaxEventBytes))
	freeMem := fs.Int("free-memory-after", cli.EnvInt("QLC_FREE_MEMORY_AFTER", 256), "when this many event streams closed since the most were open (and at most half remain), return their memory to the OS once streams stop closing; -1 = never (QLC_FREE_MEMORY_AFTER)")
	maxStreams := fs.Int("max-streams-per-key", cli.EnvInt("QLC_MAX_STREAMS_PER_KEY", 64), "concurrent event streams per API key when its tenant sets none (QLC_MAX_STREAMS_PER_KEY)")
	advertise := fs.String("advertise", cli.Env("QLC_ADVERTISE", ""), "host nodes use to reach this gateway's actors; default -bind's host (QLC_ADVERTISE)")
	addrFile := cli.AddrFileFlag(fs)
	traceStore := cli.TraceStoreFlag(fs)
	defaultRuns := fs.Int("default-concurrent-runs", cli.EnvInt("QLC_DEFAULT_CONCURRENT_RUNS", gateway.DefaultConcurrentRuns), "concurrent_runs of a tenant whose limits (admin API, tenants file) do not set it; 0 = no limit (QLC_DEFAULT_CONCURRENT_RUNS)")
	discoverLocal := cli.AutoFlag(fs, "discover-local", "QLC_DISCOVER_LOCAL", "at start, look for model servers on this machine's loopback (Ollama 11434, llama.cpp 8080/8081, vLLM 8000, LM Studio 1234) and add a provider for each and the profiles local, local-moa, local-council and local-vote; default: on with -local when runs execute here, else off")
	discoverPorts := fs.String("discover-ports", cli.Env("QLC_DISCOVER_PORTS", ""), "ports -discover-local looks at, as kind:port items (kinds ollama, llamacpp, vllm, lmstudio), e.g. ollama:11434,vllm:8001; empty = the usual ports; always on loopback (QLC_DISCOVER_PORTS)")
	silence := fs.Duration("coordinator-silence", cli.EnvDuration("QLC_COORDINATOR_SILENCE", actors.DefaultCoordinatorSilence), "a run whose coordinator says nothing for this long and answers no probe (a third of it), while another node gets answers from it, moves to another node as if its node had died: an asymmetric cut the membership cannot see; negative = never (QLC_COORDINATOR_SILENCE)")
	retain := fs.Duration("retain-finished", cli.EnvDuration("QLC_RETAIN_FINISHED", actors.DefaultConfig().RetainFinished), "how long a finished run stays in memory for late readers (once its log is in the store, the log is read from there on demand; after this, the whole run is) (QLC_RETAIN_FINISHED)")
	opsAddr := fs.String("ops-addr", cli.Env("QLC_OPS_ADDR", ""), "address of /healthz, /readyz, /metrics and /debug/pprof/ without a key, for operators only; empty: "+localOpsAddr+" with -local, else none; \"none\": none. On -addr, /metrics needs an admin key (QLC_OPS_ADDR)")
	opsFlags := cli.AddOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}

	logger, err := cli.NewLogger(*logFormat, *logLevel, *local)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)

	ecfg, reg, err := cli.EngineBase(*profiles, logger)
	if err != nil {
		return err
	}
	stopRecorder, err := opsFlags.StartFlightRecorder(&ecfg, reg, logger)
	if err != nil {
		return err
	}
	defer stopRecorder()
	stages := ecfg.Stages
	ecfg.MaxActiveRuns, ecfg.ActiveRunHeadroom = *maxRuns, *runHeadroom
	if *adaptiveRuns {
		ecfg.ActiveRunLimit = actors.DefaultActiveRunLimit(*maxRuns)
	}
	ecfg.RunSlots, ecfg.RunSlotHeadroom = *runSlots, *slotHeadroom
	ecfg.StageSlots = *stageSlots
	if err := cli.StageCapacity(&ecfg, *stageCPU); err != nil {
		return err
	}
	budget, err := cli.MemoryBudget(*memBudget, cli.CgroupMemoryMax())
	if err != nil {
		return err
	}
	cli.ApplyMemoryBudget(budget)
	ecfg.MemoryBudget = budget
	ecfg.RetainFinished = *retain
	ecfg.CoordinatorSilence = *silence
	ring, err := cli.LoadKeyring(os.Getenv, !*local)
	if err != nil {
		return err
	}
	if err := cli.CheckInsecure(*insecure, map[string]string{"bind": *bind, "advertise": *advertise, "gossip-bind": *gossipBind, "gossip-advertise": *gossipAdvertise}); err != nil {
		return err
	}
	key := ring.Primary
	var members *topology.Membership
	switch ecfg.Nodes = cli.SplitList(*nodes); {
	case *seeds != "":
		tc := topology.DefaultConfig()
		tc.NameBase = cli.Hostname("gateway")
		tc.Cluster.BindAddr, tc.Cluster.AdvertiseAddr, tc.Cluster.Seeds = *gossipBind, *gossipAdvertise, cli.SplitList(*seeds)
		tc.Cluster.ClusterKey, tc.Cluster.SecondaryKeys, tc.Cluster.Insecure = key, ring.Secondary, *insecure
		tc.Cluster.Kinds = []string{actors.KindGateway}
		tc.Cluster.Logger, tc.Cluster.Registerer = logger, reg
		if members, err = topology.New(tc); err != nil {
			return err
		}
		defer members.Close() // after the engine's Shutdown (defers run last first)
		ecfg.Topology, ecfg.Nodes = members, nil
		fallthrough
	case len(ecfg.Nodes) > 0:
		ecfg.Remote = &actors.RemoteConfig{Bind: *bind, Advertise: *advertise, ClusterKey: key, SecondaryKeys: ring.Secondary, Insecure: *insecure}
	}
	lookLocal, err := cli.DiscoverLocalEnabled(discoverLocal, *local, *seeds != "" || len(ecfg.Nodes) > 0)
	if err != nil {
		return err
	}
	dcfg := discover.DefaultConfig()
	if lookLocal {
		// Before the engine starts, so the first runs can use them; those
		// found later are added on demand (POST /v1/admin/discover-local).
		if dcfg.Targets, err = discover.ParseTargets(*discoverPorts); err != nil {
			return fmt.Errorf("-discover-ports: %w", err)
		}
		if _, err := cli.DiscoverLocal(context.Background(), &ecfg, dcfg, *addr, logger); err != nil {
			return err
		}
	}
	secrets, err := providerKeyRing(ring, *dataDir, ecfg.Remote != nil, logger)
	if err != nil {
		return err
	}
	ecfg.Secrets = secrets
	if members == nil {
		// One process (or fixed nodes): this process counts tokens itself,
		// with tokenizer actors if its CPU runs the SIMD path.
		ecfg.Tokenizer = cli.TokenizerCapable(nil)
	}
	spans := cli.NewTraceStore(*traceStore, &ecfg)
	engine, err := actors.NewEngine(ecfg) // joins the cluster with a Topology
	if err != nil {
		return err
	}
	stopTracing, err := cli.StartTracing("qlc-gateway", engine.Address(), logger, spans)
	if err != nil {
		return err
	}
	defer stopTracing() // after the engine's Shutdown: its last spans go out
	tenancy, devKeys, err := openTenancy(*dataDir, *tenantsFile, *local || *devKeysFlag, int64(*defaultRuns), logger)
	if err != nil {
		return err
	}
	defer tenancy.Store().Close()
	if secrets != nil {
		if err := tenancy.SetSecrets(secrets); err != nil {
			return err
		}
	}
	if members != nil {
		self := engine.Address()
		if err := tenancy.Replicate(engine.Services(), func() []string { return members.Gateways(self) }, time.Minute); err != nil {
			return err
		}
		defer tenancy.Close()
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Engine, gcfg.Logger, gcfg.Gatherer, gcfg.Registerer = engine, logger, reg, reg
	gcfg.Tenancy, gcfg.DevKeys, gcfg.MaxStreamsPerKey = tenancy, devKeys, *maxStreams
	gcfg.Ops = ops.Pprof()  // the ops listener only
	gcfg.LocalOnly = *local // only requests addressed to localhost: no DNS rebinding to the dev keys
	gcfg.MaxQueryBytes, gcfg.MaxBodyBytes, gcfg.BodyReadTimeout = *maxQuery, int64(*maxBody), *bodyTimeout
	gcfg.MaxEventBytes, gcfg.FreeMemoryAfter = *maxEvent, *freeMem
	if lookLocal { // POST /v1/admin/discover-local looks again
		gcfg.DiscoverLocal = func(ctx context.Context) (discover.Result, error) { return discover.Discover(ctx, dcfg) }
	}
	if members != nil {
		gcfg.Ready = members.Ready
		gcfg.Console = consoleCluster{members}
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}

	var tlsConf *tls.Config
	if *tlsCert != "" {
		// Loaded before listening: a bad certificate is an error at start.
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := gateway.NewHTTPServerWith(*addr, gw.Handler(), logger, gateway.EdgeLimits{
		ReadHeaderTimeout: *readHeaderTimeout, IdleTimeout: *idleTimeout, MaxHeaderBytes: *maxHeader})
	opsSrv, opsLn, err := listenOps(*opsAddr, *local, gw.OpsHandler(), logger)
	if err != nil {
		ln.Close()
		return err
	}
	srv.TLSConfig = tlsConf
	scheme := "http://"
	if *tlsCert != "" {
		scheme = "https://"
	}
	url := scheme + displayAddr(ln.Addr().String())
	logger.Info("QLC gateway listening", "url", url, "local", *local, "nodes", ecfg.Nodes, "seeds", *seeds, "actor_address", engine.Address(),
		"profiles", stages.ProfileNames(), "default_profile", stages.DefaultProfile)
	if opsLn != nil {
		logger.Info("QLC gateway ops listener: /healthz, /readyz, /metrics, /debug/pprof/ (no key: keep it private)", "url", "http://"+opsLn.Addr().String())
	} else {
		logger.Info("no ops listener (-ops-addr): /metrics on the API address needs an admin key")
	}
	if *local {
		fmt.Fprintf(os.Stderr, "\n  QLC is running: open %s in a browser (Ctrl-C stops it)\n\n", url)
	}

	bound := cli.Addrs{HTTP: ln.Addr().String()}
	if opsLn != nil {
		bound.Ops = opsLn.Addr().String()
	}
	if ecfg.Remote != nil {
		bound.Actor = engine.Address()
	}
	if members != nil {
		bound.Gossip = members.GossipAddr()
	}
	if err := cli.WriteAddrs(*addrFile, bound); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2) // the API server and the ops server
	go func() {
		if tlsConf != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	if opsSrv != nil {
		go func() { errc <- opsSrv.Serve(opsLn) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if members != nil {
		_ = members.Leave(2 * time.Second)
	}
	logger.Info("shutting down: runs hosted here are cancelled; runs on nodes go on for other gateways")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if members != nil {
		gw.Stop() // runs on nodes go on: the next start bills them
	}
	engine.Shutdown(sctx)
	if err := gw.Close(sctx); err != nil {
		logger.Error("shutdown", "error", err)
	}
	if opsSrv != nil {
		_ = opsSrv.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// localOpsAddr is -ops-addr's default with -local: loopback, next to
// `make run`'s localhost:8080.
const localOpsAddr = "127.0.0.1:9080"

// listenOps listens on the ops address: addr, or with local and no addr
// localOpsAddr (if that port is taken, e.g. by a second local gateway, it
// warns and serves no ops listener rather than fail); "none" or, outside
// local mode, "": no listener (nil, nil, nil).
func listenOps(addr string, local bool, h http.Handler, logger *slog.Logger) (*http.Server, net.Listener, error) {
	byDefault := false
	switch {
	case addr == "none", addr == "" && !local:
		return nil, nil, nil
	case addr == "":
		addr, byDefault = localOpsAddr, true
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if byDefault {
			logger.Warn("the default ops address is taken: no ops listener (set -ops-addr)", "addr", addr, "error", err)
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("-ops-addr: %w", err)
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}, ln, nil
}

// openTenancy opens the store in dataDir and loads the tenants: from the
// tenants file, QLC_ADMIN_KEY, and with dev the dev tenant (made on first
// start and written to dataDir/dev-keys.json).
func openTenancy(dataDir, tenantsFile string, dev bool, defaultRuns int64, logger *slog.Logger) (*gateway.Tenancy, *gateway.DevKeys, error) {
	st, err := store.Open(filepath.Join(dataDir, "qlc.db"))
	if err != nil {
		return nil, nil, err
	}
	t, err := gateway.NewTenancy(st, logger)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	fail := func(err error) (*gateway.Tenancy, *gateway.DevKeys, error) {
		st.Close()
		return nil, nil, err
	}
	if err := t.SetDefaultConcurrentRuns(defaultRuns); err != nil {
		return fail(fmt.Errorf("-default-concurrent-runs: %w", err))
	}
	if tenantsFile != "" {
		if err := t.LoadTenantsFile(tenantsFile); err != nil {
			return fail(err)
		}
	}
	if k := os.Getenv("QLC_ADMIN_KEY"); k != "" {
		switch err := t.AddAdminKey(k); {
		case errors.Is(err, gateway.ErrKeyRevoked):
			// A revoked key stays revoked; the gateway still serves its tenants.
			logger.Warn("QLC_ADMIN_KEY is not registered: set a new admin key", "error", err)
		case err != nil:
			return fail(fmt.Errorf("QLC_ADMIN_KEY: %w", err))
		}
	}
	if !dev {
		if tenantsFile == "" && os.Getenv("QLC_ADMIN_KEY") == "" {
			logger.Warn("no tenants file and no QLC_ADMIN_KEY: only tenants already in the store can use this gateway (see -tenants, -dev-keys)")
		}
		return t, nil, nil
	}
	path := filepath.Join(dataDir, "dev-keys.json")
	dk, created, err := t.EnsureDevKeys(path)
	if err != nil {
		return fail(err)
	}
	if created {
		logger.Info("created the dev tenant and an admin key", "file", path)
	}
	fmt.Fprintf(os.Stderr, "\n  API keys for local use are in %s (tenant_key, admin_key); the web UI uses them by itself\n", path)
	return t, &dk, nil
}

// providerKeyRing is the ring that seals tenants' provider keys (bring
// your own key): derived from the cluster keyring when there is one (every
// node derives the same, and opens the keys of the steps it runs); without
// a cluster key, when this process runs every run itself, from a local
// secret made once in dataDir (mode 0600); otherwise none, and storing a
// provider key is refused with a clear error.
func providerKeyRing(ring cli.Keyring, dataDir string, remote bool, logger *slog.Logger) (*sealed.Ring, error) {
	switch {
	case len(ring.Primary) > 0:
		return sealed.NewRing(ring.Primary, ring.Secondary...)
	case remote:
		logger.Warn("no cluster key: tenants cannot store provider keys (runs go to nodes, which could not open them)")
		return nil, nil
	}
	path := filepath.Join(dataDir, "provider-keys.secret")
	secret, created, err := gateway.LocalSecret(path)
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("created the local secret that seals provider keys (no cluster key)", "file", path)
	}
	return sealed.NewRing(secret)
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
