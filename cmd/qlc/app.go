package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/qlc-project/qlc/client"
)

// app holds what every command shares: the streams, the global flags and
// the resolved configuration.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// flags
	flagURL, flagKey, flagAdminKey string
	jsonOut                        bool

	// resolved (resolve)
	url, key, adminKey string
}

func newApp(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
}

// resolve applies flags, then the environment, then the config file.
func (a *app) resolve() error {
	fc, err := loadConfig()
	if err != nil {
		return err
	}
	pick := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	a.url = pick(a.flagURL, os.Getenv("QLC_URL"), fc.URL, client.DefaultURL)
	a.key = pick(a.flagKey, os.Getenv("QLC_API_KEY"), fc.APIKey)
	a.adminKey = pick(a.flagAdminKey, os.Getenv("QLC_ADMIN_KEY"), fc.AdminKey)
	return nil
}

// client returns a client with the tenant key (admin: the admin key, or
// the API key when no admin key is set).
func (a *app) client(admin bool) (*client.Client, error) {
	key := a.key
	if admin && a.adminKey != "" {
		key = a.adminKey
	}
	cfg := client.DefaultConfig()
	cfg.BaseURL, cfg.APIKey, cfg.UserAgent = a.url, key, "qlc"
	c, err := client.New(cfg)
	if err != nil {
		return nil, usageErr("--url / QLC_URL %q is not an http(s) address", a.url)
	}
	return c, nil
}

// tty reports whether stdout is a terminal.
func (a *app) tty() bool {
	f, ok := a.stdout.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// color reports whether to use ANSI styles (a terminal, and NO_COLOR unset).
func (a *app) color() bool {
	return a.tty() && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

// printJSON writes v indented.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "qlc",
		Short: "QLC's terminal client: ask, follow runs, usage, admin",
		Long: `qlc talks to a QLC gateway over its HTTP API.

Configuration, first found wins: flags, the environment (QLC_URL, QLC_API_KEY,
QLC_ADMIN_KEY), the config file (` + "`qlc config path`" + `; ` + "`qlc config set`" + `), then
` + client.DefaultURL + `.`,
		Example: `  qlc ask "why is the sky blue?"
  qlc ask --profile moa --thinking "compare TCP and QUIC"
  qlc ask --json "hello" | jq -c 'select(.type=="run_completed")'
  qlc tail run_abc --from 40
  qlc usage --from 2026-12-01T00:00:00Z
  qlc tokens --encoding cl100k_base < README.md
  QLC_ADMIN_KEY=... qlc admin tenants create acme`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.resolve()
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.flagURL, "url", "", "gateway address (QLC_URL; default "+client.DefaultURL+")")
	pf.StringVar(&a.flagKey, "api-key", "", "tenant API key (QLC_API_KEY)")
	pf.StringVar(&a.flagAdminKey, "admin-key", "", "admin key for admin commands (QLC_ADMIN_KEY)")
	root.AddCommand(a.askCmd(), a.tailCmd(), a.runsCmd(), a.showCmd(), a.cancelCmd(), a.usageCmd(),
		a.profilesCmd(), a.tokensCmd(), a.adminCmd(), a.configCmd())
	return root
}

// args checks a command's positional arguments; a wrong count is a usage
// error (exit 2).
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("%s takes %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

func (a *app) configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Show or change the config file"}
	c.AddCommand(&cobra.Command{
		Use: "path", Short: "Print the config file's path", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(a.stdout, configPath())
			return nil
		},
	}, &cobra.Command{
		Use: "show", Short: "Print the configuration in effect (keys masked)", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(a.stdout, "url        %s\napi_key    %s\nadmin_key  %s\nfile       %s\n", a.url, mask(a.key), mask(a.adminKey), configPath())
			return nil
		},
	}, &cobra.Command{
		Use: "set url|api_key|admin_key VALUE", Short: "Set a value in the config file (written 0600)",
		Args:      exactArgs(2, "a name (url, api_key, admin_key) and a value"),
		ValidArgs: []string{"url", "api_key", "admin_key"},
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := loadConfig()
			if err != nil {
				return err
			}
			switch args[0] {
			case "url":
				fc.URL = args[1]
			case "api_key", "api-key":
				fc.APIKey = args[1]
			case "admin_key", "admin-key":
				fc.AdminKey = args[1]
			default:
				return usageErr("unknown config name %q (url, api_key, admin_key)", args[0])
			}
			p, err := saveConfig(fc)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "wrote %s\n", p)
			return nil
		},
	})
	return c
}
