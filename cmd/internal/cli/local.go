package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/discover"
)

// Auto is a yes/no setting whose default depends on other flags: unset
// ("auto") until a flag or its environment variable says true or false.
// It is a boolean flag: "-x" alone means true.
type Auto struct {
	set, on bool
}

// AutoFlag defines a boolean flag with an "auto" default, read first from
// the environment variable env (true/false/auto).
func AutoFlag(fs *flag.FlagSet, name, env, usage string) *Auto {
	a := &Auto{}
	if v, ok := os.LookupEnv(env); ok {
		_ = a.Set(v) // a bad value leaves auto; the flag itself reports bad values
	}
	fs.Var(a, name, usage+" ("+env+")")
	return a
}

// Set parses true/false (strconv.ParseBool) or auto.
func (a *Auto) Set(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), "auto") || s == "" {
		*a = Auto{}
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true, false or auto", s)
	}
	*a = Auto{set: true, on: b}
	return nil
}

// String is "auto", "true" or "false".
func (a *Auto) String() string {
	if a == nil || !a.set {
		return "auto"
	}
	return strconv.FormatBool(a.on)
}

// IsBoolFlag lets "-x" stand for "-x=true".
func (a *Auto) IsBoolFlag() bool { return true }

// Value is the setting, or def when it is auto.
func (a *Auto) Value(def bool) bool {
	if a == nil || !a.set {
		return def
	}
	return a.on
}

// Explicit reports whether a flag or the environment set the value.
func (a *Auto) Explicit() bool { return a != nil && a.set }

// DiscoverLocalEnabled decides whether the gateway looks for model
// servers on this machine: by default only in local mode (-local) and
// when runs execute in this process; off otherwise, because a run on
// another node could not reach this machine's loopback, and a server
// has no business probing ports on its own. Asking for it explicitly with
// runs on other nodes is an error.
func DiscoverLocalEnabled(setting *Auto, local, remote bool) (bool, error) {
	on := setting.Value(local && !remote)
	if on && remote {
		return false, fmt.Errorf("-discover-local: runs execute on other nodes (-nodes/-seeds), which cannot reach this machine's loopback; add local servers to the profile file instead")
	}
	return on, nil
}

// DiscoverLocal looks for model servers on this machine's loopback (not
// on listenAddr's port, which is QLC's own) and adds what it finds to
// ecfg: providers and the generated local profiles (discover.Apply), then
// rebuilds ecfg.Providers. It logs what it found; finding nothing is not
// an error.
func DiscoverLocal(ctx context.Context, ecfg *actors.Config, dcfg discover.Config, listenAddr string, logger *slog.Logger) (discover.Added, error) {
	if _, port, err := net.SplitHostPort(listenAddr); err == nil {
		if p, err := strconv.Atoi(port); err == nil && p > 0 {
			dcfg.SkipPorts = append(dcfg.SkipPorts, p)
		}
	}
	if dcfg.Logger == nil {
		dcfg.Logger = logger
	}
	res, err := discover.Discover(ctx, dcfg)
	if err != nil {
		return discover.Added{}, err
	}
	for _, s := range res.Skipped {
		logger.Info("local model server not used", "addr", s.Addr, "kind", s.Kind, "reason", s.Reason)
	}
	if len(res.Servers) == 0 {
		logger.Info("no local model server found (Ollama, llama.cpp, vLLM, LM Studio on their usual ports; -discover-local=false stops looking)")
		return discover.Added{}, nil
	}
	added, err := discover.Apply(ecfg.Stages, res.Servers)
	if err != nil {
		return discover.Added{}, err
	}
	// Clients for the new endpoints only: the file's are built already.
	only := &stagework.Config{Providers: map[string]stagework.ProviderConfig{}}
	for _, name := range added.Providers {
		only.Providers[name] = ecfg.Stages.Providers[name]
	}
	providers, err := actors.BuildProviders(only, logger)
	if err != nil {
		return discover.Added{}, err
	}
	merged := maps.Clone(ecfg.Providers)
	if merged == nil {
		merged = map[string]stagework.Provider{}
	}
	maps.Copy(merged, providers)
	ecfg.Providers = merged
	for _, s := range res.Servers {
		ids := make([]string, len(s.Models))
		for j, m := range s.Models {
			ids[j] = m.ID
		}
		logger.Info("local model server found", "kind", s.Kind.Title(), "url", s.BaseURL, "models", ids)
	}
	logger.Info("local providers added", "providers", added.Providers)
	logger.Info("local profiles added", "profiles", added.Profiles)
	return added, nil
}
