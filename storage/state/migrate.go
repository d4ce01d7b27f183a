package state

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations
var migrationFS embed.FS

// migration is one numbered schema step. Steps are append-only: a released
// step is never edited, only followed by a new one.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("state: read migrations for %s: %w", dialect, err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("state: migration %s/%s: name must be NNNN_description.sql", dir, e.Name())
		}
		body, err := fs.ReadFile(migrationFS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("state: migrations for %s: %s breaks the sequence (want version %d)", dialect, m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion reports the newest migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.read.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("state: schema version: %w", err)
	}
	return int(v.Int64), nil
}

// checkSchema is migrate for a read-only store: it changes nothing and
// refuses a schema it cannot read.
func (s *Store) checkSchema(ctx context.Context) error {
	ms, err := loadMigrations(s.d.name)
	if err != nil {
		return err
	}
	var current sql.NullInt64
	if err := s.read.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("state: read schema version (read-only): %w: %w", ErrNoSchema, err)
	}
	switch v := int(current.Int64); {
	case v == 0:
		return ErrNoSchema
	case v > len(ms):
		return fmt.Errorf("state: database schema is at version %d but this trustamp knows only %d: run a newer trustamp", v, len(ms))
	case v < len(ms):
		return fmt.Errorf("state: database schema is at version %d, older than this trustamp's %d, and a read-only database cannot be migrated: use the trustamp that wrote it, or a writable copy", v, len(ms))
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.d.name)
	if err != nil {
		return err
	}
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("state: migrate: %w", err)
	}
	defer conn.Close()
	if s.d.name == "postgres" {
		// Replicas starting together must not race through the same steps.
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(7368617564697400)"); err != nil {
			return fmt.Errorf("state: migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(7368617564697400)")
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at_us BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("state: migrate: create schema_migrations: %w", err)
	}
	var current sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("state: migrate: read version: %w", err)
	}
	if int(current.Int64) > len(ms) {
		return fmt.Errorf("state: database schema is at version %d but this trustamp knows only %d: run a newer trustamp", current.Int64, len(ms))
	}
	for _, m := range ms[current.Int64:] {
		if err := applyMigration(ctx, conn, s.d, m); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, conn *sql.Conn, d dialect, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("state: migration %s: begin: %w", m.name, err)
	}
	defer tx.Rollback()
	for _, stmt := range splitStatements(m.sql) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("state: migration %s: %w", m.name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, d.rebind("INSERT INTO schema_migrations (version, name, applied_at_us) VALUES (?, ?, ?)"),
		m.version, m.name, micros(time.Now())); err != nil {
		return fmt.Errorf("state: migration %s: record: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("state: migration %s: commit: %w", m.name, err)
	}
	return nil
}

// splitStatements splits a migration on semicolons at line ends. Migrations
// are plain DDL, so no statement carries a semicolon inside a literal.
func splitStatements(src string) []string {
	var out []string
	for _, s := range strings.Split(src, ";\n") {
		if s = strings.TrimSpace(s); s != "" && !onlyComments(s) {
			out = append(out, s)
		}
	}
	return out
}

func onlyComments(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
			return false
		}
	}
	return true
}
