// Command qlc is QLC's terminal client: it asks questions and streams the
// run (every step live on a terminal; the answer alone when piped; events
// as JSON lines with --json), follows, shows and cancels runs, and reads
// usage, profiles, token counts and the admin API. It speaks only HTTP,
// through package client.
//
// Configuration, first found wins: flags (--url, --api-key, --admin-key),
// the environment (QLC_URL, QLC_API_KEY, QLC_ADMIN_KEY), the config file
// (os.UserConfigDir()/qlc/config.json or $QLC_CONFIG; `qlc config set`),
// then http://localhost:8080.
//
// Exit codes: 0 done; 1 an error (one line on stderr: the API's message
// and code, or why the gateway could not be reached), a run that failed
// or was cancelled by someone else; 2 a usage error; 130 interrupted
// (Ctrl-C; `qlc ask` cancels its run first).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError ends the command with a code; its message (if any) is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(ctx, stdin, stdout, stderr)
	root := app.root()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if !errors.As(err, &ee) && ctx.Err() != nil {
		err = &exitError{code: 130, err: errors.New("interrupted")}
	}
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	} else if isUsage(err) {
		code = 2
	}
	msg := describe(err, app.url)
	if code == 2 {
		msg += " (see qlc --help)"
	}
	fmt.Fprintf(stderr, "qlc: %s\n", oneLine(msg))
	return code
}

// isUsage reports whether err is one of cobra's usage errors.
func isUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "bad flag syntax"} {
		if strings.HasPrefix(s, p) || strings.Contains(s, " "+p) {
			return true
		}
	}
	return false
}

// describe makes an error one clear sentence: a network error names the
// gateway it could not reach.
func describe(err error, base string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		var op *net.OpError
		if errors.As(ue.Err, &op) {
			return fmt.Sprintf("cannot reach the gateway at %s: %v", base, op.Err)
		}
		return fmt.Sprintf("cannot reach the gateway at %s: %v", base, ue.Err)
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
