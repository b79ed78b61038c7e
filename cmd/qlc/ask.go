package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qlc-project/qlc/client"
)

// streamOpts are the output flags of ask and tail.
type streamOpts struct {
	json, thinking bool
}

func (a *app) askCmd() *cobra.Command {
	var req client.RunRequest
	var o streamOpts
	c := &cobra.Command{
		Use:   "ask QUESTION…",
		Short: "Ask a question and stream the run",
		Long: `Ask a question and stream the run.

On a terminal: every step with a header (role, id, model), its tokens live,
its status and timings; parallel steps (moa, council, vote) are shown one at
a time, the others whole when their turn comes, like a log. Piped: the
answer alone. --json: every event as a JSON line. Ctrl-C cancels the run.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErr("ask takes a question")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Query = strings.Join(args, " ")
			c, err := a.client(false)
			if err != nil {
				return err
			}
			run, err := c.CreateRun(a.ctx, req)
			if err != nil {
				return err
			}
			return a.follow(c, run.ID, "", o, true)
		},
	}
	f := c.Flags()
	f.StringVarP(&req.Profile, "profile", "p", "", "profile (default: the gateway's; see qlc profiles)")
	f.Int64Var(&req.Seed, "seed", 0, "seed, for a repeatable simulated run")
	f.IntVar(&req.MaxTokens, "max-tokens", 0, "max tokens of every step (0: the profile's)")
	f.BoolVar(&o.json, "json", false, "print the events as JSON lines")
	f.BoolVar(&o.thinking, "thinking", false, "show the reasoning steps dimmed (piped: before the answer)")
	return c
}

func (a *app) tailCmd() *cobra.Command {
	var from string
	var o streamOpts
	c := &cobra.Command{
		Use:   "tail RUN_ID",
		Short: "Follow a run's events (resumes by itself after a dropped connection)",
		Args:  exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(false)
			if err != nil {
				return err
			}
			return a.follow(c, args[0], from, o, false)
		},
	}
	c.Flags().StringVar(&from, "from", "", "first seq to show (N, or N:BYTES inside a split delta)")
	c.Flags().BoolVar(&o.json, "json", false, "print the events as JSON lines")
	c.Flags().BoolVar(&o.thinking, "thinking", false, "show the reasoning steps dimmed (piped: before the answer)")
	return c
}

// follow streams a run's events to stdout. owned: the run is this
// command's, so an interrupt cancels it.
func (a *app) follow(c *client.Client, id, from string, o streamOpts, owned bool) error {
	v := newView(a.stdout, a.tty() && !o.json, a.color(), o)
	started := time.Now()
	v.begin(id)
	s := c.Events(a.ctx, id, from)
	defer s.Close()
	for {
		ev, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			v.interrupted()
			if a.ctx.Err() != nil {
				return a.interrupt(c, id, owned)
			}
			return err
		}
		v.event(ev)
	}
	var cost *float64
	if v.tty {
		// The cost is billed per step; the run resource has it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if r, err := c.GetRun(ctx, id); err == nil {
			x := r.CostUSD()
			cost = &x
		}
		cancel()
	}
	v.end(time.Since(started), cost)
	switch f := v.fold; f.Status {
	case "completed":
		return nil
	case "failed":
		return fmt.Errorf("run %s failed: %s", id, reasonOf(f.End))
	default:
		return fmt.Errorf("run %s was cancelled: %s", id, reasonOf(f.End))
	}
}

func reasonOf(ev *client.Event) string {
	if ev == nil {
		return "no reason given"
	}
	r := ev.Reason
	if r == "" {
		r = "no reason given"
	}
	if ev.Code != "" {
		r += " (" + ev.Code + ")"
	}
	return r
}

// interrupt ends a command stopped by Ctrl-C: an owned run is cancelled.
func (a *app) interrupt(c *client.Client, id string, owned bool) error {
	if !owned {
		return &exitError{code: 130}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.CancelRun(ctx, id)
	if err != nil && !client.IsCode(err, "run_finished") {
		return &exitError{code: 130, err: fmt.Errorf("interrupted; cancelling run %s failed: %w", id, err)}
	}
	return &exitError{code: 130, err: errors.New("interrupted: run " + id + " cancelled")}
}
