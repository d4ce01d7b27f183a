package state

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestMigrationsMatchAcrossDialects(t *testing.T) {
	lite, err := loadMigrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d: every step needs both", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].name != pg[i].name {
			t.Errorf("step %d: sqlite %s, postgres %s", i+1, lite[i].name, pg[i].name)
		}
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	cfg := Config{SQLitePath: filepath.Join(t.TempDir(), "s.db")}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at_us) VALUES (999, 'future', 0)"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "999") {
		t.Fatalf("opened a database from the future: %v", err)
	}
}

func TestRebind(t *testing.T) {
	if got := postgresDialect.rebind("a = ? AND b = ?"); got != "a = $1 AND b = $2" {
		t.Errorf("postgres rebind = %q", got)
	}
	if got := sqliteDialect.rebind("a = ?"); got != "a = ?" {
		t.Errorf("sqlite rebind = %q", got)
	}
}

// TestStatementsArePreparedOnce: a query seen in one transaction is prepared
// after it and reused by the next, on both pools.
func TestStatementsArePreparedOnce(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{SQLitePath: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	meta := func(tx *Tx) error { tx.Meta(ctx, "k"); return nil }
	for i := 0; i < 2; i++ {
		if err := s.Update(ctx, func(tx *Tx) error {
			if i == 1 && len(tx.missed) != 0 {
				t.Fatalf("second transaction missed %v", tx.missed)
			}
			return meta(tx)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if s.writeStmts.get("SELECT value FROM meta WHERE key = ?") == nil {
		t.Fatal("query not in the write pool's cache")
	}
	if err := s.View(ctx, meta); err != nil {
		t.Fatal(err)
	}
	if s.readStmts.get("SELECT value FROM meta WHERE key = ?") == nil {
		t.Fatal("query not in the read pool's cache")
	}
}
