package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qlc-project/qlc/client"
)

func (a *app) table() *tabwriter.Writer { return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0) }

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// runsCmd lists recent runs: those in flight (GET /v1/runs, the runs the
// answering gateway admitted, with their tokens so far) first, then the
// ended ones from the usage ledger with their status and cost.
func (a *app) runsCmd() *cobra.Command {
	var n int
	var from string
	c := &cobra.Command{
		Use:   "runs",
		Short: "Recent runs: in flight, then ended ones with status and cost",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(false)
			if err != nil {
				return err
			}
			var live []client.Run
			l, err := c.RunsInFlight(a.ctx, 100)
			var ae *client.APIError
			switch {
			case errors.As(err, &ae) && ae.Code == "unknown_endpoint": // a gateway without the list: ended runs only
			case err != nil:
				return err
			default:
				live = l.Data
			}
			u, err := c.Usage(a.ctx, client.UsageQuery{From: from})
			if err != nil {
				return err
			}
			recs := u.Data
			sort.SliceStable(recs, func(i, j int) bool { return recs[i].AdmittedAt.After(recs[j].AdmittedAt) })
			if n > 0 && len(live) > n {
				live = live[:n]
			}
			if n > 0 && len(recs) > n-len(live) {
				recs = recs[:n-len(live)]
			}
			if a.jsonOut {
				return a.printJSON(struct {
					InFlight []client.Run         `json:"in_flight"`
					Ended    []client.UsageRecord `json:"ended"`
				}{append([]client.Run{}, live...), append([]client.UsageRecord{}, recs...)})
			}
			tw := a.table()
			fmt.Fprintln(tw, "RUN\tPROFILE\tSTATUS\tTOKENS\tCOST\tSTARTED\tDURATION")
			for _, r := range live {
				var tokens int64
				if r.Usage != nil {
					tokens = r.Usage.TotalTokens
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Profile, r.Status, tokens, "-",
					when(r.CreatedAt), time.Since(r.CreatedAt).Round(time.Second).String()+" so far")
			}
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t$%.6f\t%s\t%s\n", r.RunID, r.Profile, r.Status, r.TotalTokens, r.CostUSD,
					when(r.AdmittedAt), (time.Duration(r.DurationMs) * time.Millisecond).String())
			}
			return tw.Flush()
		},
	}
	c.Flags().IntVarP(&n, "limit", "n", 20, "how many runs (0: all)")
	c.Flags().StringVar(&from, "from", "", "since (RFC 3339 or Unix seconds; default 30 days ago)")
	c.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return c
}

func (a *app) showCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "show RUN_ID",
		Short: "Show a run: status, steps with timings and cost, the answer",
		Args:  exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(false)
			if err != nil {
				return err
			}
			if a.jsonOut {
				raw, err := c.Raw(a.ctx, "GET", "/v1/runs/"+args[0], nil)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stdout, string(raw))
				return err
			}
			r, err := c.GetRun(a.ctx, args[0])
			if err != nil {
				return err
			}
			a.printRun(r)
			return nil
		},
	}
	c.Flags().BoolVar(&a.jsonOut, "json", false, "print the run resource as JSON")
	return c
}

func (a *app) printRun(r *client.Run) {
	w := a.stdout
	fmt.Fprintf(w, "run       %s\nstatus    %s\nprofile   %s (%s)\ncreated   %s\nquery     %s\n", r.ID, r.Status, r.Profile, r.Strategy, when(r.CreatedAt), oneLine(r.Query))
	if r.Usage != nil {
		fmt.Fprintf(w, "tokens    %d (%d prompt + %d completion)\n", r.Usage.TotalTokens, r.Usage.PromptTokens, r.Usage.CompletionTokens)
	}
	fmt.Fprintf(w, "cost      $%.6f\n", r.CostUSD())
	if r.Error != nil {
		fmt.Fprintf(w, "error     %s (%s)\n", oneLine(r.Error.Message), r.Error.Code)
	}
	fmt.Fprintln(w)
	tw := a.table()
	fmt.Fprintln(tw, "STEP\tROLE\tMODEL\tSTATUS\tTOKENS\tTTFT\tDURATION\tCOST")
	for _, s := range r.Steps {
		final := ""
		if s.Final {
			final = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%d\t%s\t%s\t$%.6f\n", s.ID, final, s.Stage, s.Model, s.Status, s.Tokens, ms(s.TTFTMs), ms(s.DurationMs), s.CostUSD)
	}
	tw.Flush()
	if r.Answer != "" {
		fmt.Fprintf(w, "\n%s", r.Answer)
		if !strings.HasSuffix(r.Answer, "\n") {
			fmt.Fprintln(w)
		}
	}
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: "Cancel a run",
		Args:  exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(false)
			if err != nil {
				return err
			}
			r, err := c.CancelRun(a.ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "run %s %s\n", r.ID, r.Status)
			return nil
		},
	}
}

func (a *app) usageCmd() *cobra.Command {
	var q client.UsageQuery
	c := &cobra.Command{
		Use:   "usage",
		Short: "Usage and cost of ended runs, per profile and in total",
		Long: `Usage and cost of ended runs, per profile and in total. A tenant key sees its
own; with --admin (an admin key) every tenant's, or one with --tenant.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, _ := cmd.Flags().GetBool("admin")
			c, err := a.client(admin || q.Tenant != "")
			if err != nil {
				return err
			}
			u, err := c.Usage(a.ctx, q)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(u)
			}
			type agg struct {
				runs            int
				prompt, compl   int64
				cost            float64
				tenant, profile string
			}
			by := map[string]*agg{}
			var keys []string
			for _, r := range u.Data {
				k := r.Tenant + "\x00" + r.Profile
				if by[k] == nil {
					by[k] = &agg{tenant: r.Tenant, profile: r.Profile}
					keys = append(keys, k)
				}
				g := by[k]
				g.runs++
				g.prompt += r.PromptTokens
				g.compl += r.CompletionTokens
				g.cost += r.CostUSD
			}
			sort.Strings(keys)
			fmt.Fprintf(a.stdout, "from %s to %s\n\n", when(u.From), when(u.To))
			tw := a.table()
			fmt.Fprintln(tw, "TENANT\tPROFILE\tRUNS\tPROMPT\tCOMPLETION\tCOST")
			for _, k := range keys {
				g := by[k]
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t$%.6f\n", g.tenant, g.profile, g.runs, g.prompt, g.compl, g.cost)
			}
			t := u.Totals
			fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t$%.6f\n", t.Runs, t.PromptTokens, t.CompletionTokens, t.CostUSD)
			return tw.Flush()
		},
	}
	f := c.Flags()
	f.StringVar(&q.From, "from", "", "since (RFC 3339 or Unix seconds; default 30 days ago)")
	f.StringVar(&q.To, "to", "", "until (RFC 3339 or Unix seconds; default now)")
	f.StringVar(&q.Tenant, "tenant", "", "one tenant (admin key)")
	f.Bool("admin", false, "use the admin key: every tenant's usage")
	f.BoolVar(&a.jsonOut, "json", false, "print the API's JSON")
	return c
}

func (a *app) profilesCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "profiles",
		Short: "The profiles this key may use (* the default)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(false)
			if err != nil {
				return err
			}
			p, err := c.Profiles(a.ctx)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(p)
			}
			tw := a.table()
			fmt.Fprintln(tw, "PROFILE\tSTRATEGY\tSTEPS\tDESCRIPTION")
			for _, pr := range p.Data {
				name := pr.Name
				if name == p.Default {
					name += " *"
				}
				strategy := pr.Strategy
				if strategy == "" {
					strategy = "chain"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", name, strategy, len(pr.Steps), oneLine(pr.Description))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return c
}

func (a *app) tokensCmd() *cobra.Command {
	var req client.TokenizeRequest
	c := &cobra.Command{
		Use:   "tokens",
		Short: "Count the tokens of stdin",
		Example: `  qlc tokens < prompt.txt
  qlc tokens --model gpt-4o < prompt.txt`,
		Args: exactArgs(0, "no arguments (the text comes on stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := io.ReadAll(a.stdin)
			if err != nil {
				return err
			}
			req.Text = string(b)
			if req.Model == "" && req.Encoding == "" {
				req.Encoding = "o200k_base"
			}
			c, err := a.client(false)
			if err != nil {
				return err
			}
			t, err := c.Tokenize(a.ctx, req)
			if err != nil {
				return err
			}
			if a.jsonOut {
				t.Tokens = nil
				return a.printJSON(t)
			}
			approx := ""
			if t.Approximate {
				approx = " (approximate)"
			}
			if a.tty() {
				fmt.Fprintf(a.stdout, "%d tokens · %s%s\n", t.Count, t.Encoding, approx)
			} else {
				fmt.Fprintln(a.stdout, t.Count)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&req.Encoding, "encoding", "e", "", "encoding (o200k_base, cl100k_base; default o200k_base)")
	c.Flags().StringVarP(&req.Model, "model", "m", "", "count as this model does (instead of --encoding)")
	c.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return c
}
