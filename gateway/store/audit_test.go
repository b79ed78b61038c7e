package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestAuditLog(t *testing.T) {
	s := openTemp(t)
	var in []AuditEntry
	for i := range 6 {
		e := AuditEntry{
			Seq:    99, // ignored: the store assigns it
			At:     at(time.Duration(i) * time.Second),
			Actor:  "kadmin",
			Action: "tenant.update",
			Target: "t1",
			Detail: `{"weight":` + string(rune('0'+i)) + `}`,
		}
		if err := s.Audit(e); err != nil {
			t.Fatalf("Audit: %v", err)
		}
		e.Seq = int64(i + 1)
		in = append(in, e)
	}
	// An entry with an earlier At but a later Seq sorts by At.
	early := AuditEntry{At: at(-time.Hour), Actor: "kadmin", Action: "key.revoke", Target: "k9"}
	if err := s.Audit(early); err != nil {
		t.Fatal(err)
	}
	early.Seq = 7

	all, err := s.AuditLog(time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]AuditEntry{early}, in...); !reflect.DeepEqual(all, want) {
		t.Errorf("AuditLog(all) =\n %+v\nwant\n %+v", all, want)
	}
	// [from, to): from inclusive, to exclusive, to the nanosecond.
	got, err := s.AuditLog(at(time.Second), at(4*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := in[1:4]; !reflect.DeepEqual(got, want) {
		t.Errorf("AuditLog([1s,4s)) = %+v, want %+v", got, want)
	}
	got, err = s.AuditLog(at(time.Second+1), at(4*time.Second+1), 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := in[2:4]; !reflect.DeepEqual(got, want) {
		t.Errorf("AuditLog((1s,4s], limit 2) = %+v, want %+v", got, want)
	}
	if _, err := s.AuditLog(time.Time{}, time.Time{}, -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative limit: %v", err)
	}
}

func TestAuditRejects(t *testing.T) {
	s := openTemp(t)
	for _, e := range []AuditEntry{
		{Action: "tenant.create"}, // no time
		{At: base},                // no action
		{At: base, Action: "key.create", Detail: "qlc_sk_plaintext"}, // not JSON
	} {
		if err := s.Audit(e); !errors.Is(err, ErrInvalid) {
			t.Errorf("Audit(%+v) = %v, want ErrInvalid", e, err)
		}
	}
	if got, _ := s.AuditLog(time.Time{}, time.Time{}, 0); len(got) != 0 {
		t.Errorf("rejected entries stored: %v", got)
	}
}
