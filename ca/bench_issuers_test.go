package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/internal/vaultclient"
	"github.com/trustamp/trustamp/signing"
	"github.com/trustamp/trustamp/storage/keys"
)

// BenchmarkIssuers: agent certificates per second through each issuer, side
// by side in one run (ECDSA P-256 CSRs, checked, signed, parsed):
//
//	go test -run XXX -bench Issuers -benchtime 2s ./ca/
func BenchmarkIssuers(b *testing.B) {
	v := testenv.StartVault(b)
	v.API(b, "POST", "sys/mounts/transit", map[string]any{"type": "transit"})
	v.API(b, "POST", "transit/keys/bench-intermediate", map[string]any{"type": "ecdsa-p256"})
	v.API(b, "POST", "sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	root := v.API(b, "POST", "pki/root/generate/internal", map[string]any{"common_name": "bench root", "ttl": "8760h", "key_type": "ec", "key_bits": 256})
	v.API(b, "POST", "pki/roles/agents", map[string]any{"allow_any_name": true, "enforce_hostnames": false,
		"allowed_uri_sans": "spiffe://trustamp.local/*", "client_flag": true, "server_flag": false, "key_type": "any",
		"max_ttl": "72h", "no_store": true, "use_csr_common_name": false, "use_csr_sans": false, "key_usage": []string{"DigitalSignature"}})
	b.Setenv("VAULT_ADDR", v.Addr)
	b.Setenv("VAULT_TOKEN", v.Token)
	vc, err := vaultclient.New(vaultclient.Config{Address: v.Addr, Token: v.Token})
	if err != nil {
		b.Fatal(err)
	}
	vroots, _ := ca.ParseCertificates([]byte(root["data"].(map[string]any)["certificate"].(string)))
	pki, err := ca.NewVaultPKI(ca.VaultPKIConfig{Client: vc, Role: "agents", Roots: vroots})
	if err != nil {
		b.Fatal(err)
	}

	sc := testenv.StartStepCA(b)
	step, err := ca.NewStepCA(ca.StepCAConfig{URL: sc.URL, RootFile: sc.RootFile, Provisioner: sc.Provisioner,
		Password: []byte(sc.Password)}, sc.RootPEM)
	if err != nil {
		b.Fatal(err)
	}

	ctx := context.Background()
	newAuthority := func(b *testing.B, cfg ca.Config) *ca.Authority {
		dir := b.TempDir()
		id := filepath.Join(dir, "id.txt")
		if err := keys.GenerateIdentity(id, time.Now()); err != nil {
			b.Fatal(err)
		}
		ks, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: id})
		if err != nil {
			b.Fatal(err)
		}
		cfg.Keys, cfg.Files, cfg.TrustDomain = ks, ca.Files{Dir: filepath.Join(dir, "ca")}, "trustamp.local"
		if _, err := ca.Bootstrap(ctx, ks, cfg.Files, cfg.TrustDomain, time.Now().Add(-time.Hour)); err != nil {
			b.Fatal(err)
		}
		a, err := ca.New(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if cfg.IntermediateKMS != "" {
			if _, _, err := a.RotateIntermediate(ctx); err != nil {
				b.Fatal(err)
			}
		}
		return a
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(der)

	for _, tc := range []struct {
		name    string
		cfg     ca.Config
		profile ca.Profile
	}{
		{"embedded", ca.Config{}, ca.Profile{}},
		{"vault-transit-key", ca.Config{IntermediateKMS: "hashivault://bench-intermediate", OpenKMS: signing.OpenKMSKey}, ca.Profile{}},
		{"vault-pki", ca.Config{Issuers: map[string]ca.Issuer{"vault-pki": pki}}, ca.Profile{Issuer: "vault-pki"}},
		{"step-ca", ca.Config{Issuers: map[string]ca.Issuer{"step-ca": step}}, ca.Profile{Issuer: "step-ca"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a := newAuthority(b, tc.cfg)
			uid := uuid.Must(uuid.NewV7())
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.IssueAgent(ctx, csr, uid, tc.profile, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
		})
	}
}
