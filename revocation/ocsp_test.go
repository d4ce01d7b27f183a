package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/trustamp/trustamp/storage/state"
)

// Fixed serials of the OCSP fixture: one certificate in force, one revoked
// for keyCompromise.
const (
	ocspGoodSerial    = "4a0102030405060708090a0b0c0d0e0f"
	ocspRevokedSerial = "4b0102030405060708090a0b0c0d0e0f"
)

// ocspFixture is a responder knowing one good and one revoked certificate.
type ocspFixture struct {
	*harness
	good, revoked *big.Int
}

func newOCSPFixture(t testing.TB) *ocspFixture {
	t.Helper()
	h := newHarness(t)
	ctx := context.Background()
	err := h.store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutAgent(ctx, state.Agent{UID: "ocsp-agent", EnrolledAt: h.clk.now()}); err != nil {
			return err
		}
		for _, s := range []string{ocspGoodSerial, ocspRevokedSerial} {
			if err := tx.InsertCertificate(ctx, state.Certificate{Serial: s, UID: "ocsp-agent", NotBefore: h.clk.now(),
				NotAfter: h.clk.now().Add(24 * time.Hour), Status: state.CertConfirmed, IssuedAt: h.clk.now(), Profile: "default"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Revoke(ctx, Request{Serials: []string{ocspRevokedSerial}, Reason: "keyCompromise", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	return &ocspFixture{harness: h, good: serialInt(ocspGoodSerial), revoked: serialInt(ocspRevokedSerial)}
}

func serialInt(h string) *big.Int {
	b, _ := hex.DecodeString(h)
	return new(big.Int).SetBytes(b)
}

// request is the DER OCSP request for serial under the fixture's issuer.
func (f *ocspFixture) request(t testing.TB, serial *big.Int, hash crypto.Hash) []byte {
	t.Helper()
	der, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, f.ca.Intermediate(), &ocsp.RequestOptions{Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// serve runs one request through ServeOCSP: a GET of path after /v1/ocsp/,
// or a POST of body. ok is false when path is not a request URI the HTTP
// server would hand to a handler at all.
func (f *ocspFixture) serve(get bool, path string, body []byte) (rec *httptest.ResponseRecorder, ok bool) {
	r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/v1/ocsp"}, Header: http.Header{},
		Body: io.NopCloser(bytes.NewReader(body))}
	if get {
		u, err := url.ParseRequestURI("/v1/ocsp/" + path)
		if err != nil {
			return nil, false
		}
		r = &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}, Body: http.NoBody}
	}
	rec = httptest.NewRecorder()
	f.svc.ServeOCSP(rec, r.WithContext(context.Background()))
	return rec, true
}

// ocspAnswer is a successful response as a relying party reads it: every
// SingleResponse (x/crypto/ocsp's view, signature verified against the
// issuer) in order, with its CertID's DER, and the echoed nonce.
type ocspAnswer struct {
	resps   []*ocsp.Response
	certIDs [][]byte
	nonce   []byte // the nonce extension's value (DER OCTET STRING), nil without one
}

// answer parses a 200 response: the OCSP error status, or the signed
// answers.
func (f *ocspFixture) answer(t testing.TB, rec *httptest.ResponseRecorder) (*ocspAnswer, ocsp.ResponseStatus) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/ocsp-response" {
		t.Fatalf("200 with Content-Type %q", ct)
	}
	body := rec.Body.Bytes()
	var outer ocspResponseASN1
	if rest, err := asn1.Unmarshal(body, &outer); err != nil || len(rest) > 0 {
		t.Fatalf("200 whose body is no OCSP response: %v", err)
	}
	if st := ocsp.ResponseStatus(outer.Status); st != ocsp.Success {
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("OCSP error %v cacheable: Cache-Control %q", st, cc)
		}
		if _, err := ocsp.ParseResponse(body, nil); !errors.As(err, new(ocsp.ResponseError)) {
			t.Fatalf("error response %v that x/crypto/ocsp does not read as one: %v", st, err)
		}
		return nil, st
	}
	var basic ocspBasicResponse
	var data ocspResponseData
	if _, err := asn1.Unmarshal(outer.Response.Response, &basic); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(basic.TBSResponseData.FullBytes, &data); err != nil {
		t.Fatal(err)
	}
	a := &ocspAnswer{}
	for _, e := range data.ResponseExtensions {
		if e.Id.Equal(oidOCSPNonce) {
			a.nonce = e.Value
		}
	}
	seen := map[string]bool{}
	for _, sr := range data.Responses {
		var id ocspCertID
		if _, err := asn1.Unmarshal(sr.CertID.FullBytes, &id); err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(body, &x509.Certificate{SerialNumber: id.SerialNumber}, f.ca.Intermediate())
		if err != nil {
			t.Fatalf("200 whose body is no valid OCSP response signed for the issuer: %v", err)
		}
		// ParseResponseForCert gives the first answer for a serial; a
		// repeated serial is read from our own decoding.
		if seen[id.SerialNumber.String()] {
			r := *resp
			switch {
			case bool(sr.Good):
				r.Status = ocsp.Good
			case bool(sr.Unknown):
				r.Status = ocsp.Unknown
			default:
				r.Status, r.RevocationReason = ocsp.Revoked, int(sr.Revoked.Reason)
			}
			resp = &r
		}
		seen[id.SerialNumber.String()] = true
		a.resps = append(a.resps, resp)
		a.certIDs = append(a.certIDs, sr.CertID.FullBytes)
	}
	if len(a.resps) == 0 {
		t.Fatal("successful OCSP response without an answer")
	}
	return a, ocsp.Success
}

// nonceExt is an id-pkix-ocsp-nonce request extension carrying n.
func nonceExt(n []byte) pkix.Extension {
	v, _ := asn1.Marshal(n)
	return pkix.Extension{Id: oidOCSPNonce, Value: v}
}

// multiRequest is one OCSP request naming every serial under the
// fixture's issuer, with exts as its requestExtensions.
func (f *ocspFixture) multiRequest(t testing.TB, exts []pkix.Extension, serials ...*big.Int) []byte {
	t.Helper()
	var r ocspRequestASN1
	for _, s := range serials {
		var one ocspRequestASN1
		if _, err := asn1.Unmarshal(f.request(t, s, crypto.SHA256), &one); err != nil {
			t.Fatal(err)
		}
		r.TBSRequest.RequestList = append(r.TBSRequest.RequestList, ocspOneRequest{Cert: ocspCertID{
			HashAlgorithm: one.TBSRequest.RequestList[0].Cert.HashAlgorithm, NameHash: one.TBSRequest.RequestList[0].Cert.NameHash,
			IssuerKeyHash: one.TBSRequest.RequestList[0].Cert.IssuerKeyHash, SerialNumber: s}})
	}
	r.TBSRequest.RequestExtensions = exts
	der, err := asn1.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// twoCertRequest is one OCSP request naming both serials (first, second)
// and carrying a 16-octet nonce, as openssl sends.
func (f *ocspFixture) twoCertRequest(t testing.TB, first, second *big.Int) []byte {
	return f.multiRequest(t, []pkix.Extension{nonceExt([]byte("0123456789abcdef"))}, first, second)
}

// TestOCSPRequests: what a hostile or broken client can send to the
// responder gets a well-formed answer, every certificate it names is
// answered in order, its nonce is echoed, and no answer is about a
// certificate it did not name.
func TestOCSPRequests(t *testing.T) {
	f := newOCSPFixture(t)
	neg := new(big.Int).Neg(f.good)
	long := new(big.Int).Lsh(f.good, 8*maxSerialOctets) // 36 octets: the good serial, then 20 zero octets
	foreign := *f.ca.Intermediate()
	foreign.RawSubject = []byte("not the intermediate")
	otherIssuer, _ := ocsp.CreateRequest(&x509.Certificate{SerialNumber: f.good}, &foreign, nil)
	b64 := func(b []byte) string { return url.PathEscape(base64.StdEncoding.EncodeToString(b)) }
	nonce := func(n int) []pkix.Extension { return []pkix.Extension{nonceExt(bytes.Repeat([]byte{7}, n))} }
	serials := func(n int) []*big.Int {
		out := []*big.Int{f.good, f.revoked}
		for len(out) < n {
			out = append(out, big.NewInt(int64(1000+len(out))))
		}
		return out
	}
	want16 := []int{ocsp.Good, ocsp.Revoked}
	for len(want16) < maxOCSPCerts {
		want16 = append(want16, ocsp.Unknown)
	}
	// Our good certificate and, in the same request, the same serial under
	// another issuer's CertID.
	var mixed, foreignReq ocspRequestASN1
	asn1.Unmarshal(f.multiRequest(t, nonce(16), f.good), &mixed)
	asn1.Unmarshal(otherIssuer, &foreignReq)
	mixed.TBSRequest.RequestList = append(mixed.TBSRequest.RequestList, foreignReq.TBSRequest.RequestList...)
	mixedDER, _ := asn1.Marshal(mixed)
	critical := nonce(16)
	critical = append(critical, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
	tests := []struct {
		name   string
		get    bool
		path   string
		body   []byte
		code   int
		status ocsp.ResponseStatus // when 200
		certs  []int               // when Success: ocsp.Good, Revoked or Unknown for each certificate, in order
		nonce  int                 // when Success: octets of the nonce echoed, 0 for none
	}{
		{"good, POST", false, "", f.request(t, f.good, crypto.SHA1), 200, ocsp.Success, []int{ocsp.Good}, 0},
		{"revoked, SHA-256", false, "", f.request(t, f.revoked, crypto.SHA256), 200, ocsp.Success, []int{ocsp.Revoked}, 0},
		{"revoked, GET", true, b64(f.request(t, f.revoked, crypto.SHA1)), nil, 200, ocsp.Success, []int{ocsp.Revoked}, 0},
		{"GET, unpadded base64url", true, base64.RawURLEncoding.EncodeToString(f.request(t, f.good, crypto.SHA1)), nil, 200, ocsp.Success, []int{ocsp.Good}, 0},
		{"never issued", false, "", f.request(t, big.NewInt(424242), crypto.SHA1), 200, ocsp.Success, []int{ocsp.Unknown}, 0},
		{"negative serial of a good one", false, "", f.request(t, neg, crypto.SHA1), 200, ocsp.Success, []int{ocsp.Unknown}, 0},
		{"negative serial of a revoked one", false, "", f.request(t, new(big.Int).Neg(f.revoked), crypto.SHA1), 200, ocsp.Success, []int{ocsp.Unknown}, 0},
		{"zero serial", false, "", f.request(t, big.NewInt(0), crypto.SHA1), 200, ocsp.Success, []int{ocsp.Unknown}, 0},
		{"serial over 20 octets", false, "", f.request(t, long, crypto.SHA1), 200, ocsp.Success, []int{ocsp.Unknown}, 0},
		{"two certificates and a nonce", false, "", f.twoCertRequest(t, f.revoked, f.good), 200, ocsp.Success, []int{ocsp.Revoked, ocsp.Good}, 16},
		{"two certificates and a nonce, GET", true, b64(f.twoCertRequest(t, f.good, f.revoked)), nil, 200, ocsp.Success, []int{ocsp.Good, ocsp.Revoked}, 16},
		{"nonce of 1 octet", false, "", f.multiRequest(t, nonce(1), f.good), 200, ocsp.Success, []int{ocsp.Good}, 1},
		{"nonce of 32 octets", false, "", f.multiRequest(t, nonce(maxOCSPNonce), f.revoked), 200, ocsp.Success, []int{ocsp.Revoked}, maxOCSPNonce},
		{"nonce of 33 octets", false, "", f.multiRequest(t, nonce(maxOCSPNonce+1), f.good), 200, ocsp.Malformed, nil, 0},
		{"empty nonce", false, "", f.multiRequest(t, nonce(0), f.good), 200, ocsp.Malformed, nil, 0},
		{"nonce not an OCTET STRING", false, "", f.multiRequest(t, []pkix.Extension{{Id: oidOCSPNonce, Value: []byte("0123456789abcdef")}}, f.good), 200, ocsp.Malformed, nil, 0},
		{"two nonces", false, "", f.multiRequest(t, append(nonce(16), nonce(8)...), f.good), 200, ocsp.Malformed, nil, 0},
		{"unknown critical extension", false, "", f.multiRequest(t, critical, f.good), 200, ocsp.Malformed, nil, 0},
		{"16 certificates", false, "", f.multiRequest(t, nonce(16), serials(maxOCSPCerts)...), 200, ocsp.Success, want16, 16},
		{"17 certificates", false, "", f.multiRequest(t, nonce(16), serials(maxOCSPCerts+1)...), 200, ocsp.Malformed, nil, 0},
		{"no certificate", false, "", f.multiRequest(t, nonce(16)), 200, ocsp.Malformed, nil, 0},
		{"ours and another issuer's", false, "", mixedDER, 200, ocsp.Success, []int{ocsp.Good, ocsp.Unknown}, 16},
		{"other issuer", false, "", otherIssuer, 200, ocsp.Unauthorized, nil, 0},
		{"garbage POST", false, "", []byte("\x30\x03\x02\x01"), 200, ocsp.Malformed, nil, 0},
		{"empty POST", false, "", nil, 200, ocsp.Malformed, nil, 0},
		{"trailing data", false, "", append(f.request(t, f.good, crypto.SHA1), 0), 200, ocsp.Malformed, nil, 0},
		{"POST over the bound", false, "", bytes.Repeat([]byte{0x30}, maxOCSPRequest+1), 400, 0, nil, 0},
		{"GET over the bound", true, strings.Repeat("MA", maxOCSPRequest), nil, 400, 0, nil, 0},
		{"GET not base64", true, "!!!", nil, 400, 0, nil, 0},
		{"GET without a request", true, "", nil, 400, 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, ok := f.serve(tt.get, tt.path, tt.body)
			if !ok {
				t.Fatalf("path %q is no request URI", tt.path)
			}
			if rec.Code != tt.code {
				t.Fatalf("HTTP %d (%s), want %d", rec.Code, rec.Body.Bytes(), tt.code)
			}
			if tt.code != 200 {
				return
			}
			ans, st := f.answer(t, rec)
			if st != tt.status {
				t.Fatalf("OCSP status %v, want %v", st, tt.status)
			}
			if st != ocsp.Success {
				return
			}
			if len(ans.resps) != len(tt.certs) {
				t.Fatalf("%d answers, want %d", len(ans.resps), len(tt.certs))
			}
			for i, r := range ans.resps {
				if r.Status != tt.certs[i] {
					t.Errorf("answer %d: certificate status %d for serial %x, want %d", i, r.Status, r.SerialNumber, tt.certs[i])
				}
			}
			var echoed []byte
			if ans.nonce != nil {
				if _, err := asn1.Unmarshal(ans.nonce, &echoed); err != nil {
					t.Fatalf("echoed nonce %x: %v", ans.nonce, err)
				}
			}
			if len(echoed) != tt.nonce || tt.nonce > 0 && !bytes.Equal(echoed, bytes.Repeat([]byte{7}, tt.nonce)) && !bytes.Equal(echoed, []byte("0123456789abcdef")) {
				t.Fatalf("nonce echoed %x, want %d octets of the request's", echoed, tt.nonce)
			}
		})
	}
}

// FuzzOCSPRequest sends arbitrary GET paths and POST bodies to the OCSP
// responder. Whatever the input: no panic; 400 only for a GET that is not
// a bounded base64 request or a POST over the bound; otherwise an OCSP
// response that parses, whose errors are malformedRequest or unauthorized
// (never internalError or tryLater), and whose signed answers name the
// requested serial and say good only for the good certificate, revoked
// only for the revoked one.
func FuzzOCSPRequest(f *testing.F) {
	fx := newOCSPFixture(f)
	for _, der := range [][]byte{
		fx.request(f, fx.good, crypto.SHA1),
		fx.request(f, fx.revoked, crypto.SHA256),
		fx.request(f, fx.revoked, crypto.SHA512),
		fx.request(f, big.NewInt(424242), crypto.SHA384),
		fx.request(f, new(big.Int).Neg(fx.good), crypto.SHA1),
		fx.twoCertRequest(f, fx.good, fx.revoked),
		fx.twoCertRequest(f, fx.revoked, fx.good),
		fx.multiRequest(f, []pkix.Extension{nonceExt(make([]byte, maxOCSPNonce+1))}, fx.good),
		fx.multiRequest(f, nil, fx.good, fx.revoked, fx.good, fx.revoked, fx.good, fx.revoked, fx.good, fx.revoked,
			fx.good, fx.revoked, fx.good, fx.revoked, fx.good, fx.revoked, fx.good, fx.revoked, fx.good),
	} {
		f.Add(false, "", der)
		f.Add(true, url.PathEscape(base64.StdEncoding.EncodeToString(der)), []byte(nil))
		f.Add(true, base64.RawURLEncoding.EncodeToString(der), []byte(nil))
	}
	f.Add(false, "", []byte{})
	f.Add(true, "", []byte(nil))
	f.Add(true, "%2F%2B%3D", []byte(nil))
	f.Add(false, "", []byte("\x30\x80\x30\x80\x30\x80"))
	f.Fuzz(func(t *testing.T, get bool, path string, body []byte) {
		rec, ok := fx.serve(get, path, body)
		if !ok {
			return
		}
		switch {
		case rec.Code == http.StatusBadRequest && (get || len(body) > maxOCSPRequest):
			return
		case rec.Code != http.StatusOK:
			t.Fatalf("HTTP %d (%q) for get=%v path=%q body=%x", rec.Code, rec.Body.Bytes(), get, path, body)
		}
		ans, st := fx.answer(t, rec)
		switch st {
		case ocsp.Malformed, ocsp.Unauthorized:
			return
		case ocsp.Success:
		default:
			t.Fatalf("OCSP error status %v", st)
		}
		if !get {
			req, err := parseOCSPRequest(body)
			if err != nil || len(req.certs) != len(ans.resps) {
				t.Fatalf("%d answers to a POST of %x (parsed: %v)", len(ans.resps), body, err)
			}
			for i, c := range req.certs {
				if !bytes.Equal(c.raw, ans.certIDs[i]) {
					t.Fatalf("answer %d about CertID %x, asked %x", i, ans.certIDs[i], c.raw)
				}
				if !issuedBy(c, fx.ca.Intermediate()) && ans.resps[i].Status != ocsp.Unknown {
					t.Fatalf("status %d for another issuer's certificate", ans.resps[i].Status)
				}
				if issuedBy(c, fx.ca.Intermediate()) && ans.resps[i].Status == ocsp.Unknown &&
					(c.serialNumber.Cmp(fx.good) == 0 || c.serialNumber.Cmp(fx.revoked) == 0) {
					t.Fatalf("unknown for serial %x, which was issued", c.serialNumber)
				}
			}
			if want := req.nonce; (want == nil) != (ans.nonce == nil) || want != nil && !bytes.Equal(want.Value, ans.nonce) {
				t.Fatalf("nonce %x echoed to a request with %v", ans.nonce, want)
			}
		}
		for _, resp := range ans.resps {
			switch {
			case resp.Status == ocsp.Good && resp.SerialNumber.Cmp(fx.good) != 0:
				t.Fatalf("good for serial %x, which is not the good certificate", resp.SerialNumber)
			case resp.Status == ocsp.Revoked && (resp.SerialNumber.Cmp(fx.revoked) != 0 || resp.RevocationReason != ocsp.KeyCompromise):
				t.Fatalf("revoked (%d) for serial %x, which is not the revoked certificate", resp.RevocationReason, resp.SerialNumber)
			case resp.Status != ocsp.Good && resp.Status != ocsp.Revoked && resp.Status != ocsp.Unknown:
				t.Fatalf("certificate status %d", resp.Status)
			}
		}
	})
}

// TestOCSPWithOpenSSL: openssl ocsp, as relying parties run it, asks about
// a good and a revoked certificate in one request with its default random
// nonce, verifies the response against the root, checks the nonce and
// reads both statuses.
func TestOCSPWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("TRUSTAMP_ALLOW_SKIP") != "" {
			t.Skip("openssl not installed")
		}
		t.Fatal("openssl not installed (TRUSTAMP_ALLOW_SKIP=1 to skip)")
	}
	f := newOCSPFixture(t)
	srv := httptest.NewServer(http.HandlerFunc(f.svc.ServeOCSP))
	defer srv.Close()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inter := write("inter.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.Intermediate().Raw}))
	root := write("root.pem", f.ca.RootPEM())
	out, err := exec.Command("openssl", "ocsp", "-issuer", inter, "-CAfile", root, "-verify_other", inter,
		"-serial", "0x"+ocspGoodSerial, "-serial", "0x"+ocspRevokedSerial, "-url", srv.URL+"/v1/ocsp").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"Response verify OK", "0x" + ocspGoodSerial + ": good", "0x" + ocspRevokedSerial + ": revoked", "Reason: keyCompromise"} {
		if !strings.Contains(s, want) {
			t.Errorf("openssl ocsp output lacks %q:\n%s", want, s)
		}
	}
	for _, bad := range []string{"WARNING", "nonce", "No Status found", "ERROR"} {
		if strings.Contains(strings.ToLower(s), strings.ToLower(bad)) {
			t.Errorf("openssl ocsp output says %q:\n%s", bad, s)
		}
	}
}
