package datadir

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/storage/state"
	"github.com/trustamp/trustamp/tokens"
)

func TestInitCreatesStrictLayout(t *testing.T) {
	ctx := context.Background()
	l := Layout{Root: filepath.Join(t.TempDir(), "data")}
	res, err := Init(ctx, Options{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if res.AdminToken == "" || res.AuditKeyID == "" {
		t.Fatalf("init result %+v: want a token and an audit key", res)
	}
	for path, mode := range map[string]os.FileMode{
		l.Root: 0o700, l.KeysDir(): 0o700, l.AgeIdentity(): 0o600, l.Config(): 0o600,
		filepath.Join(l.Root, "state.db"): 0o600, filepath.Join(l.KeysDir(), "audit.key.age"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}

	d, err := Open(ctx, Options{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key, err := d.AuditKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := d.AuditPublicKey()
	if !pub.Equal(key.Public().(ed25519.PublicKey)) || audit.KeyID(pub) != res.AuditKeyID {
		t.Fatal("audit public key file does not match the key")
	}
	err = d.Store.View(ctx, func(tx *state.Tx) error {
		tok, err := tx.AdminTokenByHash(ctx, tokens.Hash(res.AdminToken))
		if err != nil {
			return err
		}
		if tok.Role != "admin" || tok.ID != res.AdminTokenID {
			t.Errorf("stored token %+v", tok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.VerifyStore(ctx, d.Store, pub); err != nil {
		t.Fatal(err)
	}
	var actions []string
	d.Store.View(ctx, func(tx *state.Tx) error {
		return tx.ScanAudit(ctx, state.AuditFilter{}, func(r state.AuditRow) error {
			actions = append(actions, r.Action)
			return nil
		})
	})
	if got := strings.Join(actions, ","); got != "ca.init,server.init,admin_token.create" {
		t.Fatalf("init audit entries %s, want ca.init,server.init,admin_token.create", got)
	}
	if _, err := os.Stat(l.CAFiles().Intermediate()); err != nil {
		t.Fatalf("no intermediate CA: %v", err)
	}
}

func TestInitIsIdempotent(t *testing.T) {
	ctx := context.Background()
	l := Layout{Root: filepath.Join(t.TempDir(), "data")}
	first, err := Init(ctx, Options{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := os.ReadFile(l.AgeIdentity())
	second, err := Init(ctx, Options{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Created) != 0 || second.AdminToken != "" || second.AuditKeyID != first.AuditKeyID {
		t.Fatalf("second init: %+v", second)
	}
	if id2, _ := os.ReadFile(l.AgeIdentity()); string(id2) != string(id) {
		t.Fatal("age identity replaced")
	}
}

func TestInitRefusesLooseDir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "data")
	os.Mkdir(root, 0o755)
	if _, err := Init(context.Background(), Options{Layout: Layout{Root: root}}); err == nil {
		t.Fatal("init accepted a world-readable data dir")
	}
}

func TestOpenUninitialised(t *testing.T) {
	if _, err := Open(context.Background(), Options{Layout: Layout{Root: t.TempDir()}}); err == nil {
		t.Fatal("opened an uninitialised data dir")
	}
}

// TestInitWithPostgres points the config at a real PostgreSQL through the
// environment override, as an operator keeping the password out of the file.
func TestInitWithPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(root, 0o700)
	os.WriteFile(filepath.Join(root, "trustamp.yaml"), []byte("state:\n  driver: postgres\n"), 0o600)
	env := func(k string) string {
		if k == "TRUSTAMP_POSTGRES_DSN" {
			return dsn
		}
		return ""
	}
	res, err := Init(ctx, Options{Layout: Layout{Root: root}, Getenv: env})
	if err != nil {
		t.Fatal(err)
	}
	if res.StateDriver != "postgres" || res.AdminToken == "" {
		t.Fatalf("init on postgres: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(root, "state.db")); !os.IsNotExist(err) {
		t.Fatal("a SQLite file was created although the driver is postgres")
	}
}
