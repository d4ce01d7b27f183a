package opamp_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/internal/servertest"
	"github.com/trustamp/trustamp/internal/testenv"
	"github.com/trustamp/trustamp/loadgen"
)

// vaultPKI mounts a PKI engine with a root and a role that allows what
// trustamp asks for, and returns the root's PEM.
func vaultPKI(t *testing.T, v *testenv.Vault) []byte {
	t.Helper()
	v.API(t, "POST", "sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	root := v.API(t, "POST", "pki/root/generate/internal", map[string]any{"common_name": "Vault fleet root", "ttl": "8760h"})
	v.API(t, "POST", "pki/roles/trustamp-agents", map[string]any{
		"allow_any_name": true, "enforce_hostnames": false, "allowed_uri_sans": "spiffe://trustamp.local/*",
		"client_flag": true, "server_flag": false, "key_type": "any", "max_ttl": "72h",
		"use_csr_common_name": false, "use_csr_sans": false, "no_store": false, "key_usage": []string{"DigitalSignature"},
	})
	return []byte(root["data"].(map[string]any)["certificate"].(string))
}

// A profile with issuer vault-pki, chosen by policy for labelled agents:
// their CSRs are signed by Vault's PKI under trustamp's identity rules, they
// connect with mTLS, and revoking one reaches Vault's CRL. Other agents keep
// trustamp's own CA.
func TestVaultPKIIssuer(t *testing.T) {
	v := testenv.StartVault(t)
	rootPEM := vaultPKI(t, v)
	caFile := filepath.Join(t.TempDir(), "vault-root.pem")
	if err := os.WriteFile(caFile, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	se := servertest.StartWithEnv(t, `vault:
  address: `+v.Addr+`
issuers:
  vault_pki:
    role: trustamp-agents
    ca_file: `+caFile+`
certificates:
  profiles:
    vault:
      issuer: vault-pki
      lifetime: 2h
`, map[string]string{"TRUSTAMP_VAULT_TOKEN": v.Token})
	e := &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
	e.setPolicies(t, map[string]string{"issuers.yaml": `
rules:
  - name: vault-fleet
    kind: certificate_profile
    when: '"ca" in agent.labels && agent.labels["ca"] == "vault"'
    profile: vault
`})
	ctx := ctx10(t)
	enroll := func(labels map[string]string) *loadgen.Agent {
		a := e.agent("websocket")
		if err := a.Enroll(ctx, e.token(1, "10m", labels)); err != nil {
			t.Fatal(err)
		}
		return a
	}
	vaultAgent, own := enroll(map[string]string{"ca": "vault"}), enroll(nil)
	vroot := leafOf(t, rootPEM)
	leaf := leafOf(t, vaultAgent.Cert())
	if leaf.Issuer.CommonName != "Vault fleet root" || leaf.CheckSignatureFrom(vroot) != nil {
		t.Fatalf("labelled agent's certificate issued by %q, want Vault's root", leaf.Issuer.CommonName)
	}
	if leaf.Subject.CommonName != vaultAgent.UID.String() || len(leaf.URIs) != 1 ||
		leaf.URIs[0].String() != "spiffe://trustamp.local/agent/"+vaultAgent.UID.String() || len(leaf.DNSNames) != 0 {
		t.Fatalf("Vault-signed certificate does not carry trustamp's identity: CN %q URIs %v DNS %v", leaf.Subject.CommonName, leaf.URIs, leaf.DNSNames)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 2*60*60e9+2*60e9 {
		t.Fatalf("Vault-signed certificate lives %v, want the profile's 2h", life)
	}
	if ownLeaf := leafOf(t, own.Cert()); ownLeaf.CheckSignatureFrom(vroot) == nil {
		t.Fatal("an unlabelled agent was signed by Vault")
	}
	for _, a := range []*loadgen.Agent{vaultAgent, own} {
		if err := a.Connect(ctx, a.UID, nil); err != nil {
			t.Fatalf("mTLS with a certificate from %s: %v", leafOf(t, a.Cert()).Issuer.CommonName, err)
		}
	}
	certs, err := e.Admin.Certificates(ctx, map[string][]string{"uid": {vaultAgent.UID.String()}})
	if err != nil || len(certs) != 1 || certs[0].Profile != "vault" {
		t.Fatalf("recorded certificates %+v (%v), want one under profile vault", certs, err)
	}

	res, err := e.Admin.Revoke(ctx, api.RevocationRequest{UIDs: []string{vaultAgent.UID.String()}, Reason: "keyCompromise"})
	if err != nil || len(res.ForwardErrors) != 0 {
		t.Fatalf("revoke: %v %v", err, res.ForwardErrors)
	}
	resp, err := http.Get(v.Addr + "/v1/pki/crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rc := range crl.RevokedCertificateEntries {
		found = found || hex.EncodeToString(rc.SerialNumber.Bytes()) == hex.EncodeToString(leaf.SerialNumber.Bytes())
	}
	if !found {
		t.Fatal("the revocation did not reach Vault's CRL")
	}
	vaultAgent.Stop(ctx)
	var se2 *loadgen.ServerError
	err = vaultAgent.Connect(ctx, vaultAgent.UID, nil)
	if err == nil || (!errors.Is(err, loadgen.ErrConnectFailed) && !errors.As(err, &se2)) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("reconnect with the revoked Vault certificate: %v, want 401", err)
	}
}

// Vault unreachable (frozen, the worst case: connections hang): enrolling
// through vault-pki fails fast with Unavailable and records nothing (the
// same token works later), connected agents stay connected, /healthz says
// degraded; when Vault is back everything works again without a restart.
func TestVaultPKIOutage(t *testing.T) {
	v := testenv.StartVault(t)
	rootPEM := vaultPKI(t, v)
	caFile := filepath.Join(t.TempDir(), "vault-root.pem")
	os.WriteFile(caFile, rootPEM, 0o600)
	se := servertest.StartWithEnv(t, `vault:
  address: `+v.Addr+`
  timeout: 2s
issuers:
  vault_pki:
    role: trustamp-agents
    ca_file: `+caFile+`
certificates:
  profile: vault
  profiles:
    vault:
      issuer: vault-pki
`, map[string]string{"TRUSTAMP_VAULT_TOKEN": v.Token})
	e := &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
	ctx := ctx10(t)
	a := e.agent("websocket")
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	health := func() map[string]any {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsClientConfig(e.CAPEM)}}
		resp, err := c.Get("https://" + e.OpAMPAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		body["code"] = resp.StatusCode
		return body
	}
	if h := health(); h["status"] != "ok" {
		t.Fatalf("health before the outage: %v", h)
	}

	v.Pause(t)
	tok := e.token(1, "10m", nil)
	b := e.agent("websocket")
	err := b.Enroll(ctx, tok)
	var se2 *loadgen.ServerError
	if !errors.As(err, &se2) || se2.Type != protobufs.ServerErrorResponseType_ServerErrorResponseType_Unavailable {
		t.Fatalf("enrolling while Vault is frozen: %v, want Unavailable", err)
	}
	if h := health(); h["status"] != "degraded" || h["code"] != 200 {
		t.Fatalf("health during the outage: %v, want degraded (200)", h)
	}
	if e.srv.OpAMP.Connected(a.UID.String()) != 1 {
		t.Fatal("a connected agent was dropped during the outage")
	}

	v.Resume(t)
	if err := b.Enroll(ctx, tok); err != nil {
		t.Fatalf("enrolling with the same token after Vault came back: %v", err)
	}
	if h := health(); h["status"] != "ok" {
		t.Fatalf("health after the outage: %v", h)
	}
}

func tlsClientConfig(caPEM []byte) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// A profile with issuer step-ca: an enrolling agent's CSR is signed by a
// real remote step-ca through its JWK provisioner, with trustamp's identity;
// the agent is accepted on reconnect (mTLS through step-ca's root), and a
// revocation reaches step-ca's CRL.
func TestStepCAIssuer(t *testing.T) {
	sc := testenv.StartStepCA(t)
	se := servertest.StartWithEnv(t, `issuers:
  step_ca:
    url: `+sc.URL+`
    root_file: `+sc.RootFile+`
    provisioner: `+sc.Provisioner+`
certificates:
  profile: remote
  profiles:
    remote:
      issuer: step-ca
      lifetime: 3h
`, map[string]string{"TRUSTAMP_STEPCA_PASSWORD": sc.Password})
	e := &env{Env: se, t: t, dir: se.Dir, srv: se.Server}
	ctx := ctx10(t)
	a := e.agent("websocket")
	if err := a.Enroll(ctx, e.token(1, "10m", nil)); err != nil {
		t.Fatal(err)
	}
	root := leafOf(t, sc.RootPEM)
	leaf := leafOf(t, a.Cert())
	if leaf.Subject.CommonName != a.UID.String() || len(leaf.URIs) != 1 ||
		leaf.URIs[0].String() != "spiffe://trustamp.local/agent/"+a.UID.String() {
		t.Fatalf("step-ca certificate: CN %q URIs %v", leaf.Subject.CommonName, leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 3*60*60e9+2*60e9 {
		t.Fatalf("step-ca certificate lives %v, want the profile's 3h", life)
	}
	chain, err := ca.ParseCertificates(a.Cert())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("agent certificate does not chain to step-ca's root: %v", err)
	}
	if err := a.Connect(ctx, a.UID, nil); err != nil {
		t.Fatalf("reconnect with the step-ca certificate: %v", err)
	}
	a.Stop(ctx)
	res, err := e.Admin.Revoke(ctx, api.RevocationRequest{UIDs: []string{a.UID.String()}, Reason: "keyCompromise"})
	if err != nil || len(res.ForwardErrors) != 0 {
		t.Fatalf("revoke: %v %v", err, res.ForwardErrors)
	}
	found := false
	for _, rc := range sc.CRL(t).RevokedCertificateEntries {
		found = found || rc.SerialNumber.Cmp(leaf.SerialNumber) == 0
	}
	if !found {
		t.Fatal("the revocation did not reach step-ca's CRL")
	}
}
