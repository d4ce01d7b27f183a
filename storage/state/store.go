// Package state is trustamp's persistent state: agents, certificates, tokens,
// releases and the audit chain, behind one Store with two backends. SQLite
// (pure Go, WAL) serves a single replica with no setup; PostgreSQL serves
// several replicas sharing one database. Both run the same SQL through
// database/sql, differing only in the few places a dialect must (placeholders,
// locking), so the contract suite in statetest proves them equivalent.
//
// Every change to trust state happens inside Update, and the caller writes its
// audit entry through the same *Tx, so a change and its audit entry commit or
// roll back together.
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sentinel errors. Callers test them with errors.Is; transports translate them
// at the edge.
var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = errors.New("state: not found")
	// ErrConflict means a write collided with a unique constraint.
	ErrConflict = errors.New("state: conflict")
)

// Config selects a backend. Its zero value is not usable: SQLitePath or
// PostgresDSN must be set.
type Config struct {
	// Driver is "sqlite" or "postgres". Empty means "sqlite".
	Driver string
	// SQLitePath is the database file, created 0600 if missing.
	SQLitePath string
	// BusyTimeout bounds how long SQLite waits for a lock. Zero means 5s.
	BusyTimeout time.Duration
	// PostgresDSN is the connection string for the postgres driver.
	PostgresDSN string
	// MaxConns caps the PostgreSQL pool. Zero means 10.
	MaxConns int
	// ReadOnly opens the database for reading only: no file is created, no
	// migration runs, and a SQLite file without a write-ahead log is opened
	// immutable, so a read-only copy of a data dir can be inspected (audit
	// verify) without changing a byte of it. Callers only View (on SQLite an
	// Update fails).
	ReadOnly bool
}

// ErrNoSchema means a database opened ReadOnly holds no trustamp schema
// (an empty or foreign file).
var ErrNoSchema = errors.New("state: the database holds no trustamp schema")

// Store is an open database with its migrations applied. It is safe for
// concurrent use.
type Store struct {
	write *sql.DB // every Update runs here
	read  *sql.DB // every View runs here; the same pool as write on PostgreSQL
	d     dialect

	writeStmts, readStmts *stmtCache
}

// Open connects to the configured backend and applies pending migrations. It
// refuses a database whose schema is newer than this binary knows, so an
// accidental downgrade cannot write rows the newer schema would misread.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	var (
		s   *Store
		err error
	)
	switch cfg.Driver {
	case "", "sqlite":
		s, err = openSQLite(cfg)
	case "postgres":
		s, err = openPostgres(ctx, cfg)
	default:
		return nil, fmt.Errorf("state: unknown driver %q (want sqlite or postgres)", cfg.Driver)
	}
	if err != nil {
		return nil, err
	}
	if cfg.ReadOnly {
		err = s.checkSchema(ctx)
	} else {
		err = s.migrate(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.writeStmts = &stmtCache{db: s.write, m: map[string]*sql.Stmt{}}
	s.readStmts = s.writeStmts
	if s.read != s.write {
		s.readStmts = &stmtCache{db: s.read, m: map[string]*sql.Stmt{}}
	}
	return s, nil
}

// Driver names the backend: "sqlite" or "postgres".
func (s *Store) Driver() string { return s.d.name }

// Close releases the database handles.
func (s *Store) Close() error {
	var err error
	for _, c := range []*stmtCache{s.writeStmts, s.readStmts} {
		if c != nil {
			err = errors.Join(err, c.close())
		}
	}
	err = errors.Join(err, s.write.Close())
	if s.read != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

// Ping checks that the database answers; /healthz uses it.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("state: ping %s: %w", s.d.name, err)
	}
	return nil
}

// Update runs fn in a read-write transaction and commits if fn returns nil.
// On SQLite, writers are serialised (one connection, BEGIN IMMEDIATE), so fn
// must not call Update itself.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	return s.run(ctx, s.write, s.writeStmts, nil, fn)
}

// View runs fn in a read-only transaction: a consistent snapshot that never
// blocks writers.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	return s.run(ctx, s.read, s.readStmts, &sql.TxOptions{ReadOnly: s.d.readOnlyTx}, fn)
}

func (s *Store) run(ctx context.Context, db *sql.DB, stmts *stmtCache, opts *sql.TxOptions, fn func(*Tx) error) (err error) {
	sqlTx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("state: begin: %w", err)
	}
	tx := &Tx{tx: sqlTx, d: s.d, stmts: stmts}
	// Statements first seen in this transaction are prepared once it has
	// given its connection back (the SQLite writer has only one): this
	// deferred call runs after the rollback below, even on a panic.
	defer func() { stmts.prepare(ctx, tx.missed) }()
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("state: rollback: %w", rbErr))
		}
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("state: commit: %w", s.d.translate(err))
	}
	return nil
}

// Tx is one transaction. Its methods are grouped by domain in this package's
// files; consumers declare the few they call as an interface of their own.
type Tx struct {
	tx     *sql.Tx
	d      dialect
	stmts  *stmtCache
	missed []string // queries to prepare after this transaction
}

// stmt returns query, prepared once per pool, bound to this transaction; nil
// the first time a query is seen (it then runs unprepared). Without it the
// drivers parse every statement on every call.
func (tx *Tx) stmt(ctx context.Context, query string) (*sql.Stmt, string) {
	q := tx.d.rebind(query)
	if st := tx.stmts.get(q); st != nil {
		return tx.tx.StmtContext(ctx, st), q
	}
	tx.missed = append(tx.missed, q)
	return nil, q
}

func (tx *Tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, q := tx.stmt(ctx, query)
	var (
		res sql.Result
		err error
	)
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = tx.tx.ExecContext(ctx, q, args...)
	}
	return res, tx.d.translate(err)
}

func (tx *Tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, q := tx.stmt(ctx, query)
	var (
		rows *sql.Rows
		err  error
	)
	if st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = tx.tx.QueryContext(ctx, q, args...)
	}
	return rows, tx.d.translate(err)
}

// row is a single-row result whose error surfaces at Scan, like *sql.Row.
type row struct {
	r   *sql.Row
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.r.Scan(dest...)
}

func (tx *Tx) queryRow(ctx context.Context, query string, args ...any) row {
	if st, q := tx.stmt(ctx, query); st == nil {
		return row{r: tx.tx.QueryRowContext(ctx, q, args...)}
	} else {
		return row{r: st.QueryRowContext(ctx, args...)}
	}
}

// stmtCache holds prepared statements of one pool, by query text. Queries
// are constants of this package, so the cache stays small.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[q]
}

// prepare prepares queries not cached yet. A failure only means the query
// keeps running unprepared.
func (c *stmtCache) prepare(ctx context.Context, queries []string) {
	for _, q := range queries {
		if c.get(q) != nil {
			continue
		}
		st, err := c.db.PrepareContext(context.WithoutCancel(ctx), q)
		if err != nil {
			continue
		}
		// Never call into database/sql while holding c.mu: closing a
		// statement takes connection locks that a transaction may hold while
		// it waits for c.mu (seen as a deadlock on PostgreSQL).
		c.mu.Lock()
		if _, dup := c.m[q]; !dup {
			c.m[q], st = st, nil
		}
		c.mu.Unlock()
		if st != nil {
			st.Close()
		}
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	stmts := c.m
	c.m = map[string]*sql.Stmt{}
	c.mu.Unlock()
	var err error
	for _, st := range stmts {
		err = errors.Join(err, st.Close())
	}
	return err
}

// micros and fromMicros store times as integer microseconds since the Unix
// epoch in UTC: the precision both backends keep exactly, so a value read back
// hashes the same as the value written (the audit chain depends on it).
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
