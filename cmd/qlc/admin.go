package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/qlc-project/qlc/client"
)

// adminCmd groups the admin API (an admin key: --admin-key, QLC_ADMIN_KEY
// or the config file's admin_key; else --api-key).
func (a *app) adminCmd() *cobra.Command {
	c := &cobra.Command{Use: "admin", Short: "Tenants, keys and the audit log (admin key)"}
	c.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	tenants := &cobra.Command{
		Use:   "tenants",
		Short: "List tenants (subcommands: create, show, update)",
		Args:  exactArgs(0, "no arguments (or a subcommand: create, show, update)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			ts, err := c.AdminTenants(a.ctx)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(ts)
			}
			tw := a.table()
			fmt.Fprintln(tw, "TENANT\tNAME\tKEYS\tLIMITS\tCREATED")
			for _, t := range ts {
				live := 0
				for _, k := range t.Keys {
					if k.RevokedAt.IsZero() {
						live++
					}
				}
				lim, _ := json.Marshal(t.Limits)
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", t.ID, t.Name, live, len(t.Keys), lim, when(t.CreatedAt))
			}
			return tw.Flush()
		},
	}
	var id, limits, name string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant and its first key (the key is shown only now)",
		Args:  exactArgs(1, "a tenant name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nt := client.NewTenant{Name: args[0], ID: id}
			if limits != "" {
				l, err := parseLimits(limits)
				if err != nil {
					return err
				}
				nt.Limits = &l
			}
			c, err := a.client(true)
			if err != nil {
				return err
			}
			k, err := c.AdminCreateTenant(a.ctx, nt)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(k)
			}
			fmt.Fprintf(a.stdout, "tenant  %s\nkey_id  %s\nkey     %s\n", k.TenantID, k.KeyID, k.Key)
			return nil
		},
	}
	create.Flags().StringVar(&id, "id", "", `tenant id (default: a random "t_…"); other commands take the id or the name`)
	create.Flags().StringVar(&limits, "limits", "", `limits as JSON, e.g. '{"requests_per_minute":60}'`)
	show := &cobra.Command{
		Use: "show TENANT", Short: "Show a tenant (id or name) with its limits and keys", Args: exactArgs(1, "a tenant id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			t, err := a.tenant(c, args[0])
			if err != nil {
				return err
			}
			return a.printJSON(t)
		},
	}
	update := &cobra.Command{
		Use: "update TENANT", Short: "Rename a tenant (id or name) or replace its limits", Args: exactArgs(1, "a tenant id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p client.TenantPatch
			if cmd.Flags().Changed("name") {
				p.Name = &name
			}
			if limits != "" {
				l, err := parseLimits(limits)
				if err != nil {
					return err
				}
				p.Limits = &l
			}
			if p.Name == nil && p.Limits == nil {
				return usageErr("update needs --name or --limits")
			}
			c, err := a.client(true)
			if err != nil {
				return err
			}
			cur, err := a.tenant(c, args[0])
			if err != nil {
				return err
			}
			t, err := c.AdminUpdateTenant(a.ctx, cur.ID, p)
			if err != nil {
				return err
			}
			return a.printJSON(t)
		},
	}
	update.Flags().StringVar(&name, "name", "", "new name")
	update.Flags().StringVar(&limits, "limits", "", "limits as JSON (replaces the whole set)")
	tenants.AddCommand(create, show, update)

	keys := &cobra.Command{
		Use:   "keys [TENANT]",
		Short: "List keys, of one tenant (id or name) or all (subcommands: create, revoke)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErr("keys takes at most a tenant id or name")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			ts, err := c.AdminTenants(a.ctx)
			if err != nil {
				return err
			}
			type row struct {
				Tenant string `json:"tenant"`
				client.KeyInfo
			}
			if len(args) == 1 {
				t, err := findTenant(ts, args[0])
				if err != nil {
					return err
				}
				ts = []client.Tenant{*t}
			}
			var rows []row
			for _, t := range ts {
				for _, k := range t.Keys {
					rows = append(rows, row{t.ID, k})
				}
			}
			if a.jsonOut {
				return a.printJSON(rows)
			}
			tw := a.table()
			fmt.Fprintln(tw, "KEY_ID\tTENANT\tCREATED\tREVOKED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Tenant, when(r.CreatedAt), when(r.RevokedAt))
			}
			return tw.Flush()
		},
	}
	keys.AddCommand(&cobra.Command{
		Use: "create TENANT", Short: "Issue a new key for a tenant (id or name; shown only now)", Args: exactArgs(1, "a tenant id or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			t, err := a.tenant(c, args[0])
			if err != nil {
				return err
			}
			k, err := c.AdminCreateKey(a.ctx, t.ID)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(k)
			}
			fmt.Fprintf(a.stdout, "key_id  %s\nkey     %s\n", k.KeyID, k.Key)
			return nil
		},
	}, &cobra.Command{
		Use: "revoke KEY_ID", Short: "Revoke a key for good", Args: exactArgs(1, "a key id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			at, err := c.AdminRevokeKey(a.ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "key %s revoked at %s\n", args[0], when(at))
			return nil
		},
	})

	var aq client.AuditQuery
	audit := &cobra.Command{
		Use: "audit", Short: "The admin audit log", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(true)
			if err != nil {
				return err
			}
			q := aq
			if q.Tenant != "" {
				t, err := a.tenant(c, q.Tenant)
				if err != nil {
					return err
				}
				q.Tenant = t.ID
			}
			es, err := c.AdminAuditFind(a.ctx, q)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(es)
			}
			tw := a.table()
			fmt.Fprintln(tw, "SEQ\tAT\tACTOR\tACTION\tTARGET\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, when(e.At), e.Actor, e.Action, e.Target, strings.TrimSpace(e.Detail))
			}
			return tw.Flush()
		},
	}
	audit.Flags().StringVar(&aq.From, "from", "", "since (RFC 3339 or Unix seconds)")
	audit.Flags().StringVar(&aq.To, "to", "", "until (RFC 3339 or Unix seconds)")
	audit.Flags().StringVar(&aq.Actor, "actor", "", "only this admin key id's changes")
	audit.Flags().StringVar(&aq.Action, "action", "", `only this action ("key.revoke"), or a prefix ending in a dot ("key.")`)
	audit.Flags().StringVar(&aq.Target, "target", "", "only this target (a tenant id, or a key id)")
	audit.Flags().StringVar(&aq.Tenant, "tenant", "", "only entries about this tenant (id or name) and its keys")
	audit.Flags().IntVar(&aq.Limit, "limit", 0, "at most this many entries (default: the API's, 10000)")
	audit.Flags().BoolVar(&aq.NewestFirst, "newest", false, "newest first (with --limit: the newest entries)")
	c.AddCommand(tenants, keys, audit)
	return c
}

// tenant finds the tenant ref names: its id, else its name (see findTenant).
func (a *app) tenant(c *client.Client, ref string) (*client.Tenant, error) {
	ts, err := c.AdminTenants(a.ctx)
	if err != nil {
		return nil, err
	}
	return findTenant(ts, ref)
}

// findTenant is the tenant whose id is ref, else the one whose name is ref,
// else the one whose name is ref but for case: `qlc admin tenants create
// acme` makes a tenant with a random id, and the next command a user types
// says "acme". No match, or two names differing only by case, is an error
// naming what to use, never a silently empty answer.
func findTenant(ts []client.Tenant, ref string) (*client.Tenant, error) {
	var folded []*client.Tenant
	for i := range ts {
		if ts[i].ID == ref {
			return &ts[i], nil
		}
	}
	for i := range ts {
		if ts[i].Name == ref {
			return &ts[i], nil
		}
		if strings.EqualFold(ts[i].Name, ref) {
			folded = append(folded, &ts[i])
		}
	}
	switch len(folded) {
	case 1:
		return folded[0], nil
	case 0:
		return nil, fmt.Errorf("no tenant has the id or name %q (qlc admin tenants lists them)", ref)
	}
	ids := make([]string, len(folded))
	for i, t := range folded {
		ids[i] = t.ID + " (" + t.Name + ")"
	}
	return nil, fmt.Errorf("%d tenants are named %q but for case; give an id: %s", len(folded), ref, strings.Join(ids, ", "))
}

// parseLimits reads --limits: JSON of the API's limits, every field known
// (a misspelt limit would otherwise be left out, silently, of the set that
// replaces the tenant's).
func parseLimits(text string) (client.Limits, error) {
	var l client.Limits
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, usageErr("--limits: %v", err)
	}
	if dec.More() {
		return l, usageErr("--limits: one JSON object")
	}
	return l, nil
}
