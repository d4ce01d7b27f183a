package ca_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
)

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// With certificates.intermediate_key set to a Vault Transit key, an
// intermediate rollover certifies the Transit key; from then on agent
// certificates and the CRL are signed by Vault (the key store gains no
// intermediate key), and they verify under the unchanged root.
func TestIntermediateKeyInVaultTransit(t *testing.T) {
	v := testenv.StartVault(t)
	v.API(t, "POST", "sys/mounts/transit", map[string]any{"type": "transit"})
	v.API(t, "POST", "transit/keys/trustamp-intermediate", map[string]any{"type": "ecdsa-p256"})
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	e := servertest.Start(t, "certificates:\n  intermediate_key: hashivault://trustamp-intermediate\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keysBefore, err := e.Dir.Keys.List(ctx)
	if err != nil {
		t.Fatal(err)
	}

	roll, err := e.Admin.RotateIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inter := parsePEM(t, mustRead(t, filepath.Join(e.Dir.Layout.Root, "ca", "intermediate.pem")))
	_ = roll
	// The new intermediate certifies the Transit key.
	tk := v.API(t, "GET", "transit/keys/trustamp-intermediate", nil)
	versions := tk["data"].(map[string]any)["keys"].(map[string]any)
	transitPub := parsePEMKey(t, versions["1"].(map[string]any)["public_key"].(string))
	if !transitPub.Equal(inter.PublicKey) {
		t.Fatal("the new intermediate does not certify the Transit key")
	}
	keysAfter, _ := e.Dir.Keys.List(ctx)
	if len(keysAfter) != len(keysBefore) {
		t.Fatalf("the key store gained keys %v -> %v: the intermediate key must stay in Vault", keysBefore, keysAfter)
	}

	// An agent enrolled now gets a certificate signed through Transit.
	tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := loadgen.NewAgent(loadgen.AgentConfig{ServerURL: e.URL("ws"), CAPEM: e.CAPEM})
	if err := a.Enroll(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	leaf := parsePEM(t, a.Cert())
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("agent certificate not signed by the Transit intermediate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.CAPEM)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("agent certificate does not chain to the root: %v", err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatalf("mTLS with a Transit-signed certificate: %v", err)
	}
	a.Stop(ctx)

	// A revocation publishes a CRL signed through Transit.
	if _, err := e.Admin.Revoke(ctx, api.RevocationRequest{UIDs: []string{a.UID.String()}, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e.CAPEM)}}
	resp, err := hc.Get("https://" + e.OpAMPAddr + "/v1/crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(inter); err != nil || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type equaler interface{ Equal(x crypto.PublicKey) bool }

func parsePEMKey(t *testing.T, s string) equaler {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		t.Fatal("no PEM public key")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(equaler)
}

func tlsConfigFor(caPEM []byte) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
