package state

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"database/sql"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect holds the few differences between the backends. The SQL itself is
// written once, with ? placeholders.
type dialect struct {
	name string
	// dollarParams rewrites ? to $1, $2, ... for PostgreSQL.
	dollarParams bool
	// readOnlyTx marks View transactions READ ONLY. The SQLite read pool is
	// query_only already, and modernc's driver refuses the option.
	readOnlyTx bool
	// lockAuditChain serialises appends to the audit chain across replicas;
	// empty where the backend serialises writers anyway (SQLite).
	lockAuditChain string
}

var (
	sqliteDialect   = dialect{name: "sqlite"}
	postgresDialect = dialect{
		name:           "postgres",
		dollarParams:   true,
		readOnlyTx:     true,
		lockAuditChain: "SELECT pg_advisory_xact_lock(7368617564697401)",
	}
)

func (d dialect) rebind(q string) string {
	if !d.dollarParams || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// translate maps backend errors onto this package's sentinels, keeping the
// original for the message.
func (d dialect) translate(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
	}
	return err
}

func openSQLite(cfg Config) (*Store, error) {
	if cfg.SQLitePath == "" {
		return nil, errors.New("state: sqlite needs a database path")
	}
	if cfg.ReadOnly {
		return openSQLiteReadOnly(cfg)
	}
	// Create the file 0600 before SQLite does (it would use the umask): it
	// holds token hashes and the audit chain. WAL and SHM files inherit it.
	f, err := os.OpenFile(cfg.SQLitePath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: create %s: %w", cfg.SQLitePath, err)
	}
	f.Close()
	busy := cfg.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(ON)")
		// 32 MiB page cache per connection (the default is 2 MiB): the
		// registry and certificates of a large fleet then stay in memory.
		q.Add("_pragma", "cache_size(-32768)")
		for i := 0; i+1 < len(extra); i += 2 {
			q.Add(extra[i], extra[i+1])
		}
		return "file:" + cfg.SQLitePath + "?" + q.Encode()
	}
	// One writer connection with BEGIN IMMEDIATE: writers queue in Go instead
	// of failing with SQLITE_BUSY when a read lock would need upgrading.
	write, err := sql.Open("sqlite", dsn("_txlock", "immediate"))
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", cfg.SQLitePath, err)
	}
	write.SetMaxOpenConns(1)
	read, err := sql.Open("sqlite", dsn("_pragma", "query_only(ON)"))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("state: open %s: %w", cfg.SQLitePath, err)
	}
	read.SetMaxOpenConns(4)
	return &Store{write: write, read: read, d: sqliteDialect}, nil
}

// openSQLiteReadOnly opens the file without creating or changing anything.
// Without a write-ahead log beside it (a cleanly closed database, a copy)
// the file is opened immutable: SQLite then takes no locks and creates no
// -shm or -wal file, which is what lets it read a copy on read-only media.
// With a log (a live server) it opens in read-only mode, seeing the log.
func openSQLiteReadOnly(cfg Config) (*Store, error) {
	fi, err := os.Stat(cfg.SQLitePath)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", cfg.SQLitePath, err)
	}
	if fi.Size() == 0 {
		return nil, fmt.Errorf("state: %s is empty (0 bytes): %w", cfg.SQLitePath, ErrNoSchema)
	}
	q := url.Values{}
	q.Add("mode", "ro")
	if wal, err := os.Stat(cfg.SQLitePath + "-wal"); err != nil || wal.Size() == 0 {
		q.Add("immutable", "1")
	}
	busy := cfg.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "query_only(ON)")
	db, err := sql.Open("sqlite", "file:"+cfg.SQLitePath+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("state: open %s read-only: %w", cfg.SQLitePath, err)
	}
	db.SetMaxOpenConns(4)
	return &Store{write: db, read: db, d: sqliteDialect}, nil
}

func openPostgres(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.PostgresDSN == "" {
		return nil, errors.New("state: postgres needs a DSN")
	}
	db, err := sql.Open("pgx", cfg.PostgresDSN)
	if err != nil {
		return nil, fmt.Errorf("state: open postgres: %w", err)
	}
	maxConns := cfg.MaxConns
	if maxConns <= 0 {
		maxConns = 10
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		// The DSN may carry a password: name the backend, not the DSN.
		return nil, fmt.Errorf("state: connect to postgres: %w", err)
	}
	return &Store{write: db, read: db, d: postgresDialect}, nil
}
