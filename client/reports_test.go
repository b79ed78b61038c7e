package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/client/clienttest"
)

func TestUsageSeriesAndAuditFind(t *testing.T) {
	g := clienttest.Start(t, "")
	a := newClient(t, g.URL, g.AdminKey)
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	for range 2 {
		if _, err := c.CreateRun(ctx, client.RunRequest{Query: "why?", Profile: "instant"}); err != nil {
			t.Fatal(err)
		}
	}
	var s *client.UsageSeries
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if s, err = a.UsageSeries(ctx, client.SeriesQuery{Bucket: "day", GroupBy: "profile"}); err != nil {
			t.Fatal(err)
		}
		if (len(s.Data) == 1 && s.Data[0].Runs == 2) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	if s.Bucket != "day" || s.GroupBy != "profile" || len(s.Data) != 1 || s.Data[0].Group != "instant" ||
		s.Data[0].Runs != 2 || s.Data[0].TotalTokens == 0 || !s.Data[0].Start.Equal(today) {
		t.Fatalf("series %+v", s)
	}
	top, err := a.UsageSeries(ctx, client.SeriesQuery{GroupBy: "tenant", Limit: 10})
	if err != nil || len(top.Data) != 1 || top.Data[0].Group != g.Tenant || !top.Data[0].Start.IsZero() || top.Bucket != "" {
		t.Fatalf("top tenants %+v %v", top, err)
	}
	if _, err := a.UsageSeries(ctx, client.SeriesQuery{Bucket: "week"}); !client.IsCode(err, "invalid_bucket") {
		t.Fatalf("bucket=week: %v", err)
	}

	k, err := a.AdminCreateTenant(ctx, client.NewTenant{Name: "acme", ID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AdminRevokeKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	es, err := a.AdminAuditFind(ctx, client.AuditQuery{Tenant: "acme", NewestFirst: true})
	if err != nil || len(es) != 2 || es[0].Action != "key.revoke" || es[1].Action != "tenant.create" {
		t.Fatalf("audit of acme %+v %v", es, err)
	}
	if es, err := a.AdminAuditFind(ctx, client.AuditQuery{Action: "key.", Target: k.KeyID}); err != nil || len(es) != 1 {
		t.Fatalf("key actions on %s: %+v %v", k.KeyID, es, err)
	}
}
