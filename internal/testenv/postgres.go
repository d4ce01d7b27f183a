package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Postgres is a running PostgreSQL server owned by one test.
type Postgres struct {
	Host     string
	Port     int
	User     string
	Password string
}

// DSN returns a connection URL for database db.
func (p *Postgres) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.User, p.Password),
		Host:     fmt.Sprintf("%s:%d", p.Host, p.Port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// NewDatabase creates an empty database and returns its DSN, so tests that
// share one server do not see each other's rows.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatalf("testenv: connect to postgres: %v", err)
	}
	defer conn.Close(ctx)
	name := "t_" + randomSecret(8)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	return p.DSN(name)
}

// StartPostgres runs initdb and pg_ctl from Debian's PostgreSQL packages on a
// fresh data dir. PostgreSQL refuses to run as root, so under root the server
// runs as the system user "postgres" (TRUSTAMP_PG_USER overrides) that the
// Debian package creates.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := postgresBinDir(t)
	cred, owner := postgresCredential(t)

	dir, err := os.MkdirTemp("", "trustamp-pg-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if owner != nil {
		if err := os.Chown(dir, owner.uid, owner.gid); err != nil {
			t.Fatalf("testenv: chown %s: %v", dir, err)
		}
	}
	run := func(name string, args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd.CombinedOutput()
	}

	pg := &Postgres{Host: "127.0.0.1", User: "trustamp", Password: randomSecret(16)}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if owner != nil {
		os.Chown(pwfile, owner.uid, owner.gid)
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", pg.User, "--pwfile", pwfile,
		"-A", "scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		pg.Port = FreePort(t)
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off", pg.Port, dir)
		out, err := run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			break
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("testenv: pg_ctl start: %v\n%s\n%s", err, out, log)
		}
	}
	t.Cleanup(func() {
		if out, err := run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"); err != nil {
			t.Logf("testenv: pg_ctl stop: %v\n%s", err, out)
		}
	})
	return pg
}

// postgresBinDir finds initdb: TRUSTAMP_PG_BIN, the newest
// /usr/lib/postgresql/*/bin, or PATH.
func postgresBinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("TRUSTAMP_PG_BIN"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	missing(t, "PostgreSQL (initdb, pg_ctl)")
	return ""
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

type ids struct{ uid, gid int }

func postgresCredential(t testing.TB) (*syscall.Credential, *ids) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv("TRUSTAMP_PG_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		missing(t, fmt.Sprintf("system user %q for running PostgreSQL as root", name))
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, &ids{uid, gid}
}
