package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// StepCAClientTemplate is the provisioner's X.509 template trustamp's
// post-issuance check needs (README, issuers.step_ca): step-ca's default
// adds serverAuth to every certificate (and keyEncipherment for RSA keys);
// agent certificates are clientAuth and digitalSignature only.
const StepCAClientTemplate = `{"subject": {{ toJson .Subject }}, "sans": {{ toJson .SANs }}, "keyUsage": ["digitalSignature"], "extKeyUsage": ["clientAuth"]}`

// StepCA is a running step-ca owned by one test, with a JWK provisioner.
type StepCA struct {
	URL         string // https://127.0.0.1:PORT
	RootFile    string // its root certificate, PEM
	RootPEM     []byte
	Provisioner string
	Password    string
}

// StartStepCA runs the step-ca built by `make tools` on a fresh PKI made
// here (ECDSA P-256 root and intermediate), with one JWK provisioner whose
// key is encrypted with a random password, a bbolt database (revocation
// needs one) and its CRL enabled.
func StartStepCA(t testing.TB) *StepCA {
	t.Helper()
	bin := tool(t, "step-ca")
	dir := t.TempDir()
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testenv step-ca root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "testenv step-ca intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	interKeyDER, _ := x509.MarshalECPrivateKey(interKey)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := &StepCA{RootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		Provisioner: "trustamp", Password: randomSecret(16)}
	s.RootFile = write("root.pem", s.RootPEM)
	interFile := write("intermediate.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}))
	interKeyFile := write("intermediate.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: interKeyDER}))
	pub, enc, err := jose.GenerateDefaultKeyPair([]byte(s.Password))
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := enc.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	port := startHTTPSServer(t, "step-ca", root, func(port int) (*exec.Cmd, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conf := map[string]any{
			"root": s.RootFile, "crt": interFile, "key": interKeyFile,
			"address": addr, "dnsNames": []string{"127.0.0.1", "localhost"},
			"logger": map[string]any{"format": "text"},
			"db":     map[string]any{"type": "bbolt", "dataSource": filepath.Join(dir, "db")},
			"crl":    map[string]any{"enabled": true, "generateOnRevoke": true},
			"authority": map[string]any{
				"claims": map[string]any{"minTLSCertDuration": "1m", "maxTLSCertDuration": "72h", "defaultTLSCertDuration": "24h"},
				"provisioners": []any{map[string]any{"type": "JWK", "name": s.Provisioner, "key": pub, "encryptedKey": encKey,
					"options": map[string]any{"x509": map[string]any{"template": StepCAClientTemplate}}}},
			},
			"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3},
		}
		b, _ := json.MarshalIndent(conf, "", "  ")
		cfgFile := write("ca.json", b)
		cmd := exec.Command(bin, cfgFile)
		cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
		return cmd, "https://" + addr + "/health"
	})
	s.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	return s
}

// CRL fetches step-ca's current CRL.
func (s *StepCA) CRL(t testing.TB) *x509.RevocationList {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.RootPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(s.URL + "/1.0/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(buf)
	if err != nil {
		t.Fatalf("testenv: step-ca CRL (%d): %v", resp.StatusCode, err)
	}
	return crl
}
