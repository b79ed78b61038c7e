package actors

import (
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/openai"
	"github.com/qlc-project/qlc/stagework/sim"
)

// BuildProviders makes a client for every provider endpoint in cfg. API keys
// are read from the environment variables the endpoints name. An endpoint
// whose key variable is unset still gets a client (requests will fail with an
// auth error, reported clearly by the run); a warning says so at start.
func BuildProviders(cfg *stagework.Config, logger *slog.Logger) (map[string]stagework.Provider, error) {
	if logger == nil {
		logger = slog.Default()
	}
	names := make([]string, 0, len(cfg.Providers))
	for n := range cfg.Providers {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]stagework.Provider, len(names))
	for _, name := range names {
		pc := cfg.Providers[name]
		switch pc.Kind {
		case stagework.KindSim:
			p, err := sim.New(name, pc.Sim)
			if err != nil {
				return nil, fmt.Errorf("actors: provider %q: %w", name, err)
			}
			out[name] = p
		case stagework.KindOpenAI:
			oc := openai.DefaultConfig()
			oc.Name = name
			oc.BaseURL = pc.BaseURL
			oc.Headers = pc.Headers
			oc.Logger = logger
			if pc.APIKeyEnv != "" {
				oc.APIKey = os.Getenv(pc.APIKeyEnv)
				if oc.APIKey == "" {
					logger.Warn("provider API key variable is unset; requests to it will fail", "provider", name, "env", pc.APIKeyEnv)
				}
			}
			p, err := openai.New(oc)
			if err != nil {
				return nil, fmt.Errorf("actors: provider %q: %w", name, err)
			}
			out[name] = p
		default:
			return nil, fmt.Errorf("actors: provider %q: unknown kind %q", name, pc.Kind)
		}
	}
	// Every endpoint gets its circuit breaker (and rate limits, if set).
	for name, p := range out {
		pc := cfg.Providers[name]
		b := pc.Breaker
		switch b.Failures {
		case -1:
			b.Failures = 0
		case 0:
			b.Failures = 5
		}
		out[name] = stagework.Guard(p, name, b, pc.RateLimit, nil)
	}
	return out, nil
}
