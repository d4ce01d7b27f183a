package testenv

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// These smoke tests prove each harness starts a real, working server: they
// use it the way trustamp will (SQL, S3 objects, Transit signing).

func TestPostgresSmoke(t *testing.T) {
	pg := StartPostgres(t)
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s on port %d", version, pg.Port)
	// Password authentication is really on: a wrong password is refused.
	bad := *pg
	bad.Password = "wrong"
	if c, err := pgx.Connect(ctx, bad.DSN("postgres")); err == nil {
		c.Close(ctx)
		t.Fatal("connected with a wrong password")
	}
}

func TestMinIOSmoke(t *testing.T) {
	m := StartMinIO(t)
	ctx := context.Background()
	c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(ctx, "artifacts", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	body := []byte("agent build 1.2.3")
	if _, err := c.PutObject(ctx, "artifacts", "sha256/abc", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := c.GetObject(ctx, "artifacts", "sha256/abc", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %q, %v", got, err)
	}
	// Wrong credentials are refused.
	bad, _ := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, "wrong-secret", "")})
	if _, err := bad.ListBuckets(ctx); err == nil {
		t.Fatal("MinIO accepted a wrong secret key")
	}
}

func TestVaultSmoke(t *testing.T) {
	v := StartVault(t)
	cfg := vault.DefaultConfig()
	cfg.Address = v.Addr
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.Token)
	ctx := context.Background()
	if err := c.Sys().MountWithContext(ctx, "transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/release", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	input := base64.StdEncoding.EncodeToString([]byte("artifact digest"))
	sig, err := c.Logical().WriteWithContext(ctx, "transit/sign/release", map[string]any{"input": input})
	if err != nil {
		t.Fatal(err)
	}
	signature, _ := sig.Data["signature"].(string)
	if !strings.HasPrefix(signature, "vault:v1:") {
		t.Fatalf("signature %q", signature)
	}
	ver, err := c.Logical().WriteWithContext(ctx, "transit/verify/release", map[string]any{"input": input, "signature": signature})
	if err != nil || ver.Data["valid"] != true {
		t.Fatalf("verify: %v %v", ver, err)
	}
	c.SetToken("not-the-token")
	if _, err := c.Logical().ReadWithContext(ctx, "transit/keys/release"); err == nil {
		t.Fatal("Vault accepted a wrong token")
	}
}
