package opamp_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"golang.org/x/crypto/ocsp"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/ca/catest"
	"github.com/trustamp/trustamp/opamp/extension"
)

func csrRequest(csrPEM []byte) *protobufs.ConnectionSettingsRequest {
	return &protobufs.ConnectionSettingsRequest{Opamp: &protobufs.OpAMPConnectionSettingsRequest{
		CertificateRequest: &protobufs.CertificateRequest{Csr: csrPEM}}}
}

func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certCount is how many certificates the server recorded for uid.
func (e *env) certCount(t *testing.T, uid uuid.UUID) int {
	t.Helper()
	certs, err := e.Admin.Certificates(ctx10(t), map[string][]string{"uid": {uid.String()}})
	if err != nil {
		t.Fatal(err)
	}
	return len(certs)
}

// checkHostileAnswer asserts what the server did with hostile CSR c: a
// refusal naming the reason with nothing recorded, or a recorded
// certificate that carries nothing of the request.
func (e *env) checkHostileAnswer(t *testing.T, c catest.Case, got *protobufs.ServerToAgent, uid uuid.UUID, before int, want catest.Want) {
	t.Helper()
	if c.Refused {
		if got.ErrorResponse.GetType() != protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest ||
			!strings.Contains(got.ErrorResponse.GetErrorMessage(), c.Reason) || got.ConnectionSettings != nil {
			t.Fatalf("answer %v, want BadRequest naming %q and no certificate", got, c.Reason)
		}
		if n := e.certCount(t, uid); n != before {
			t.Fatalf("%d certificates recorded for a refused CSR", n-before)
		}
		return
	}
	certPEM := got.GetConnectionSettings().GetOpamp().GetCertificate().GetCert()
	if certPEM == nil {
		certPEM = got.GetConnectionSettings().GetOwnMetrics().GetCertificate().GetCert()
	}
	if certPEM == nil {
		t.Fatalf("no certificate offered (the request should be ignored, not refused): %v", got.ErrorResponse)
	}
	if err := catest.Lacks(c, leafOf(t, certPEM), want); err != nil {
		t.Fatal(err)
	}
	if n := e.certCount(t, uid); n != before+1 {
		t.Fatalf("%d certificates recorded, want 1", n-before)
	}
}

// TestHostileCSRs: every extension kind and subject attribute a hostile
// agent asks for (issue 14), on enrollment (bearer token), on rotation
// (mTLS, the agent's own CSR) and for a destination (io.trustamp.csr
// message): refused with the reason, or the certificate issued without it.
// Nothing from the request but its public key reaches a certificate.
func TestHostileCSRs(t *testing.T) {
	e := start(t, "certificates:\n  agent_csr_interval: 1ms\ndestinations:\n  own_metrics:\n    endpoint: https://metrics.example:4318\n")
	tok := e.token(1000, "10m", nil)
	rotating := e.agent("http")
	if err := rotating.Enroll(ctx10(t), tok); err != nil {
		t.Fatal(err)
	}
	// The server's own revocation URLs, as every certificate must carry them.
	base := leafOf(t, rotating.Cert())
	if len(base.CRLDistributionPoints) != 1 || len(base.OCSPServer) != 1 {
		t.Fatalf("an ordinary certificate has CDP %v OCSP %v", base.CRLDistributionPoints, base.OCSPServer)
	}
	want := catest.Want{TrustDomain: "trustamp.local", CRLURL: base.CRLDistributionPoints[0], OCSPURL: base.OCSPServer[0]}
	seq := uint64(0)
	for _, c := range catest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			t.Run("enroll", func(t *testing.T) {
				uid := uuid.Must(uuid.NewV7())
				csr, err := catest.CSR(c, newP256(t), uid, "trustamp.local")
				if err != nil {
					t.Fatal(err)
				}
				got := decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uid[:], ConnectionSettingsRequest: csrRequest(csr)}))
				w := want
				w.UID = uid
				e.checkHostileAnswer(t, c, got, uid, 0, w)
			})
			t.Run("rotate", func(t *testing.T) {
				csr, err := catest.CSR(c, newP256(t), rotating.UID, "trustamp.local")
				if err != nil {
					t.Fatal(err)
				}
				before := e.certCount(t, rotating.UID)
				seq++
				got := e.mtlsPost(t, rotating, &protobufs.AgentToServer{InstanceUid: rotating.UID[:], SequenceNum: seq, ConnectionSettingsRequest: csrRequest(csr)})
				w := want
				w.UID = rotating.UID
				e.checkHostileAnswer(t, c, got, rotating.UID, before, w)
			})
			t.Run("destination", func(t *testing.T) {
				csr, err := catest.CSR(c, newP256(t), rotating.UID, "trustamp.local")
				if err != nil {
					t.Fatal(err)
				}
				data, _ := json.Marshal(extension.CSRMessage{Destination: "own_metrics", CSR: string(csr)})
				before := e.certCount(t, rotating.UID)
				seq++
				got := e.mtlsPost(t, rotating, &protobufs.AgentToServer{InstanceUid: rotating.UID[:], SequenceNum: seq,
					CustomMessage: &protobufs.CustomMessage{Capability: extension.CSRCapability, Type: extension.CSRReplyType, Data: data}})
				w := want
				w.UID = rotating.UID
				e.checkHostileAnswer(t, c, got, rotating.UID, before, w)
			})
		})
	}
}

// TestNoOCSPSigningCertificateForTokenHolders is the consequence of issue
// 14's first finding: an enrollment-token holder (and an enrolled agent
// rotating) asks for a delegated OCSP-signing certificate of the
// intermediate and is refused; with the certificate it can get, a "good"
// answer it signs for a revoked agent does not verify against the
// intermediate.
func TestNoOCSPSigningCertificateForTokenHolders(t *testing.T) {
	e := start(t, "certificates:\n  agent_csr_interval: 1ms\n")
	tok := e.token(10, "10m", nil)
	victim := e.agent("http")
	if err := victim.Enroll(ctx10(t), tok); err != nil {
		t.Fatal(err)
	}
	victimChain, err := ca.ParseCertificates(victim.Cert())
	if err != nil {
		t.Fatal(err)
	}
	victimLeaf, intermediate := victimChain[0], victimChain[1]
	if _, err := e.Admin.Revoke(ctx10(t), api.RevocationRequest{UIDs: []string{victim.UID.String()}, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}

	key := newP256(t)
	uid := uuid.Must(uuid.NewV7())
	ocspCSR := func(uid uuid.UUID) []byte {
		eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}, {1, 3, 6, 1, 5, 5, 7, 3, 9}})
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku},
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, Value: []byte{5, 0}}, // OCSP no-check
		}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	got := decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uid[:], ConnectionSettingsRequest: csrRequest(ocspCSR(uid))}))
	if got.ConnectionSettings != nil || !strings.Contains(got.ErrorResponse.GetErrorMessage(), "OCSPSigning") {
		t.Fatalf("enrollment asking for OCSPSigning: %v, want refused", got)
	}
	// The attacker's best: an ordinary enrollment with the same key.
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	got = decode(t, e.post(t, tok, &protobufs.AgentToServer{InstanceUid: uid[:],
		ConnectionSettingsRequest: csrRequest(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}))
	certPEM := got.GetConnectionSettings().GetOpamp().GetCertificate().GetCert()
	if certPEM == nil {
		t.Fatalf("ordinary enrollment: %v", got.ErrorResponse)
	}
	attacker := leafOf(t, certPEM)
	// Enrolled, it asks again on rotation.
	keyPEM, _ := x509.MarshalPKCS8PrivateKey(key)
	rot := e.mtlsPostWith(t, certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyPEM}),
		&protobufs.AgentToServer{InstanceUid: uid[:], SequenceNum: 1, ConnectionSettingsRequest: csrRequest(ocspCSR(uid))})
	if rot.ConnectionSettings != nil || !strings.Contains(rot.ErrorResponse.GetErrorMessage(), "OCSPSigning") {
		t.Fatalf("rotation asking for OCSPSigning: %v, want refused", rot)
	}

	forged, err := ocsp.CreateResponse(intermediate, attacker, ocsp.Response{Status: ocsp.Good, SerialNumber: victimLeaf.SerialNumber,
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), Certificate: attacker}, crypto.Signer(key))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyOCSP(forged, victimLeaf, intermediate); err == nil {
		t.Fatal("a \"good\" answer for a revoked agent signed by an agent's certificate verifies against the intermediate")
	}
	// openssl, as relying parties run it, refuses it too.
	if _, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		inter := write("inter.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intermediate.Raw}))
		out, _ := exec.Command("openssl", "ocsp", "-respin", write("forged.der", forged), "-issuer", inter, "-verify_other", inter,
			"-CAfile", write("root.pem", e.CAPEM),
			"-cert", write("victim.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: victimLeaf.Raw}))).CombinedOutput()
		if !strings.Contains(string(out), "Response Verify Failure") || !strings.Contains(string(out), "missing ocspsigning usage") {
			t.Fatalf("openssl accepts the forged answer:\n%s", out)
		}
	}
}

// verifyOCSP verifies an OCSP response for leaf as RFC 6960 4.2.2.2 asks: by
// the issuer itself, or by a responder certificate the issuer signed that
// carries id-kp-OCSPSigning. x/crypto/ocsp's ParseResponseForCert checks
// only that the embedded certificate is signed by the issuer, not its EKU,
// so any certificate of the intermediate passes it: a relying party using
// it must check the EKU as here (documented in SECURITY.md).
func verifyOCSP(der []byte, leaf, issuer *x509.Certificate) error {
	r, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return err
	}
	if r.Certificate != nil && !slices.Contains(r.Certificate.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("the responder certificate is not for OCSP signing")
	}
	return nil
}
