package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenCreatesFileDirsAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "gw.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	// A write makes SQLite create the WAL file; both must be private.
	if err := s.Reserve(Reservation{RunID: "r1", TenantID: "t1", Tokens: 10, At: base}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
		}
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o700 {
		t.Errorf("parent directory has mode %o, want 700", mode)
	}

	var mode string
	if err := s.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	for _, db := range []struct {
		name string
		q    func(string) (int, error)
	}{
		{"writer", func(p string) (v int, err error) { err = s.w.QueryRow("PRAGMA " + p).Scan(&v); return }},
		{"reader", func(p string) (v int, err error) { err = s.r.QueryRow("PRAGMA " + p).Scan(&v); return }},
	} {
		if v, err := db.q("synchronous"); err != nil || v != 1 {
			t.Errorf("%s synchronous = %d, %v; want 1 (NORMAL)", db.name, v, err)
		}
		if v, err := db.q("busy_timeout"); err != nil || v != busyTimeoutMS {
			t.Errorf("%s busy_timeout = %d, %v; want %d", db.name, v, err, busyTimeoutMS)
		}
	}
	if _, err := s.r.Exec(`DELETE FROM reservations`); err == nil {
		t.Error("the read pool accepted a write")
	}
	if v, err := s.Version(); err != nil || v != len(migrations) {
		t.Errorf("Version() = %d, %v; want %d", v, err, len(migrations))
	}
	if err := s.IntegrityCheck(); err != nil {
		t.Error(err)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(Reservation{RunID: "r1", TenantID: "t1", Tokens: 10, At: base}); err != nil {
		t.Fatal(err)
	}
	// Migrating an up-to-date database changes nothing.
	if err := migrate(context.Background(), s.w); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	var rows int
	if err := s.r.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("schema_version has %d rows (%v), want 1", rows, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Reopening keeps the data and the version.
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if v, err := s.Version(); err != nil || v != len(migrations) {
		t.Errorf("Version() after reopen = %d, %v", v, err)
	}
	open, err := s.OpenReservations("")
	if err != nil || len(open) != 1 || open[0].RunID != "r1" {
		t.Errorf("OpenReservations after reopen = %v, %v", open, err)
	}

	// A database written by a newer binary is refused, not downgraded.
	if _, err := s.w.Exec(`UPDATE schema_version SET version = 999`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema = %v, want a 'newer' error", err)
	}
}

func TestOpenOddPaths(t *testing.T) {
	dir := t.TempDir()
	// Characters that mean something in a URI must still name the file.
	path := filepath.Join(dir, "a?b#c%20d.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	if err := s.Reserve(Reservation{RunID: "r", TenantID: "t", At: base}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "a?b#c%20d.db" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only the database file", names)
	}

	if _, err := Open(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open(\"\") = %v, want ErrInvalid", err)
	}
	// A parent that is a file cannot be created.
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(file, "gw.db")); err == nil {
		t.Error("Open under a regular file succeeded")
	}
}
