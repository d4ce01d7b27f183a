package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/ca/catest"
	"github.com/trustamp/trustamp/storage/keys"
)

var fuzzUID = uuid.MustParse("01a2279c-0000-7000-8000-000000000001")

// fuzzSeeds are valid CSRs and the hostile ones of catest, PEM-encoded.
func fuzzSeeds(f *testing.F) [][]byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var out [][]byte
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	for _, c := range catest.Cases() {
		p, err := catest.CSR(c, key, fuzzUID, "example.test")
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// FuzzParseCSR: any bytes as an agent's CSR: ParseCSR and CheckAgentCSR
// never panic, and whatever they accept names no identity but the agent's.
func FuzzParseCSR(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			if !errors.Is(err, ErrCSRRefused) {
				t.Fatalf("ParseCSR error is not ErrCSRRefused: %v", err)
			}
			return
		}
		if err := CheckAgentCSR(csr, fuzzUID, "example.test", Profile{}); err != nil {
			if !errors.Is(err, ErrCSRRefused) {
				t.Fatalf("CheckAgentCSR error is not ErrCSRRefused: %v", err)
			}
			return
		}
		if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
			t.Fatal("a CSR with DNS, IP or email SANs passed the check")
		}
	})
}

// fuzzCA is one Authority for a whole fuzz run, made in a temporary dir.
func fuzzCA(f *testing.F) *Authority {
	ctx := context.Background()
	dir := f.TempDir()
	idFile := filepath.Join(dir, "id.txt")
	if err := keys.GenerateIdentity(idFile, t0); err != nil {
		f.Fatal(err)
	}
	ks, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: idFile})
	if err != nil {
		f.Fatal(err)
	}
	files := Files{Dir: filepath.Join(dir, "ca")}
	if _, err := Bootstrap(ctx, ks, files, "example.test", t0); err != nil {
		f.Fatal(err)
	}
	a, err := New(ctx, Config{Keys: ks, Files: files, TrustDomain: "example.test", Clock: func() time.Time { return t0 },
		CRLURL: "https://trustamp.test/v1/crl", OCSPURL: "https://trustamp.test/v1/ocsp"})
	if err != nil {
		f.Fatal(err)
	}
	return a
}

// FuzzIssueAgent: a CSR correctly signed by the agent's key but with any
// subject and any one extension request (OID, criticality, value chosen by
// the fuzzer) goes through CheckAgentCSR and, if accepted, is issued by
// trustamp's own CA. It never panics; a refusal is ErrCSRRefused; whatever
// certificate comes out passes the post-issuance check and an independent
// inspection (catest.ProfileOnly): nothing of the request but the key.
func FuzzIssueAgent(f *testing.F) {
	a := fuzzCA(f)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	noSubject, _ := asn1.Marshal(pkix.RDNSequence{})
	for _, c := range catest.Cases() {
		tmpl := c.Template(fuzzUID, SPIFFEID("example.test", fuzzUID).String())
		subject, _ := asn1.Marshal(tmpl.Subject.ToRDNSequence())
		if len(tmpl.ExtraExtensions) == 0 {
			f.Add(subject, "2.5.29.14", false, []byte{4, 0})
			continue
		}
		for _, e := range tmpl.ExtraExtensions {
			f.Add(subject, e.Id.String(), e.Critical, e.Value)
		}
	}
	f.Add(noSubject, "2.5.29.17", false, []byte{0x30, 0x03, 0x82, 0x01, 'a'})
	want := catest.Want{UID: fuzzUID, TrustDomain: "example.test", CRLURL: a.cfg.CRLURL, OCSPURL: a.cfg.OCSPURL}
	f.Fuzz(func(t *testing.T, rawSubject []byte, oid string, critical bool, value []byte) {
		id, ok := parseOID(oid)
		if !ok || len(rawSubject) > 4096 || len(value) > 4096 {
			return
		}
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(rawSubject, &rdns); err != nil || len(rest) > 0 {
			return
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: rawSubject,
			ExtraExtensions: []pkix.Extension{{Id: id, Critical: critical, Value: value}}}, key)
		if err != nil {
			return
		}
		csr, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		if err != nil {
			return // Go refuses what it cannot parse; FuzzParseCSR covers that path
		}
		iss, err := a.IssueAgent(context.Background(), csr, fuzzUID, Profile{}, nil)
		if err != nil {
			if !errors.Is(err, ErrCSRRefused) {
				t.Fatalf("a CSR was neither refused nor issued: %v", err)
			}
			return
		}
		if err := catest.ProfileOnly(iss.Leaf, want); err != nil {
			t.Fatalf("issued certificate carries something of the request (%s critical=%v): %v", id, critical, err)
		}
	})
}

func parseOID(s string) (asn1.ObjectIdentifier, bool) {
	o, err := x509.ParseOID(s)
	if err != nil {
		return nil, false
	}
	der, err := o.MarshalBinary()
	if err != nil {
		return nil, false
	}
	full, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagOID, Bytes: der})
	if err != nil {
		return nil, false
	}
	var id asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(full, &id); err != nil {
		return nil, false
	}
	return id, true
}
