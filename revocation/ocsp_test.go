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
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// answer parses a 200 response: the OCSP error status, or the signed
// single response.
func (f *ocspFixture) answer(t testing.TB, rec *httptest.ResponseRecorder) (*ocsp.Response, ocsp.ResponseStatus) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/ocsp-response" {
		t.Fatalf("200 with Content-Type %q", ct)
	}
	resp, err := ocsp.ParseResponse(rec.Body.Bytes(), f.ca.Intermediate())
	var re ocsp.ResponseError
	if errors.As(err, &re) {
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("OCSP error %v cacheable: Cache-Control %q", re.Status, cc)
		}
		return nil, re.Status
	}
	if err != nil {
		t.Fatalf("200 whose body is no valid OCSP response signed for the issuer: %v", err)
	}
	return resp, ocsp.Success
}

// twoCertRequest is one OCSP request naming both serials (first, second)
// and carrying a nonce extension, as RFC 6960 allows.
func (f *ocspFixture) twoCertRequest(t testing.TB, first, second *big.Int) []byte {
	t.Helper()
	type certID struct {
		HashAlgorithm pkix.AlgorithmIdentifier
		NameHash      []byte
		IssuerKeyHash []byte
		SerialNumber  *big.Int
	}
	type single struct{ Cert certID }
	type tbs struct {
		RequestList []single
		Extensions  []pkix.Extension `asn1:"explicit,tag:2,optional"`
	}
	type request struct{ TBSRequest tbs }
	var a, b request
	if _, err := asn1.Unmarshal(f.request(t, first, crypto.SHA256), &a); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(f.request(t, second, crypto.SHA256), &b); err != nil {
		t.Fatal(err)
	}
	a.TBSRequest.RequestList = append(a.TBSRequest.RequestList, b.TBSRequest.RequestList...)
	nonce, _ := asn1.Marshal([]byte("0123456789abcdef"))
	a.TBSRequest.Extensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}, Value: nonce}}
	der, err := asn1.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestOCSPRequests: what a hostile or broken client can send to the
// responder gets a well-formed answer, and never one about a certificate
// it did not name.
func TestOCSPRequests(t *testing.T) {
	f := newOCSPFixture(t)
	neg := new(big.Int).Neg(f.good)
	long := new(big.Int).Lsh(f.good, 8*maxSerialOctets) // 36 octets: the good serial, then 20 zero octets
	foreign := *f.ca.Intermediate()
	foreign.RawSubject = []byte("not the intermediate")
	otherIssuer, _ := ocsp.CreateRequest(&x509.Certificate{SerialNumber: f.good}, &foreign, nil)
	b64 := func(b []byte) string { return url.PathEscape(base64.StdEncoding.EncodeToString(b)) }
	tests := []struct {
		name   string
		get    bool
		path   string
		body   []byte
		code   int
		status ocsp.ResponseStatus // when 200
		cert   int                 // when Success: ocsp.Good, Revoked or Unknown
	}{
		{"good, POST", false, "", f.request(t, f.good, crypto.SHA1), 200, ocsp.Success, ocsp.Good},
		{"revoked, SHA-256", false, "", f.request(t, f.revoked, crypto.SHA256), 200, ocsp.Success, ocsp.Revoked},
		{"revoked, GET", true, b64(f.request(t, f.revoked, crypto.SHA1)), nil, 200, ocsp.Success, ocsp.Revoked},
		{"GET, unpadded base64url", true, base64.RawURLEncoding.EncodeToString(f.request(t, f.good, crypto.SHA1)), nil, 200, ocsp.Success, ocsp.Good},
		{"never issued", false, "", f.request(t, big.NewInt(424242), crypto.SHA1), 200, ocsp.Success, ocsp.Unknown},
		{"negative serial of a good one", false, "", f.request(t, neg, crypto.SHA1), 200, ocsp.Success, ocsp.Unknown},
		{"negative serial of a revoked one", false, "", f.request(t, new(big.Int).Neg(f.revoked), crypto.SHA1), 200, ocsp.Success, ocsp.Unknown},
		{"zero serial", false, "", f.request(t, big.NewInt(0), crypto.SHA1), 200, ocsp.Success, ocsp.Unknown},
		{"serial over 20 octets", false, "", f.request(t, long, crypto.SHA1), 200, ocsp.Success, ocsp.Unknown},
		{"two certificates and a nonce", false, "", f.twoCertRequest(t, f.revoked, f.good), 200, ocsp.Success, ocsp.Revoked},
		{"other issuer", false, "", otherIssuer, 200, ocsp.Unauthorized, 0},
		{"garbage POST", false, "", []byte("\x30\x03\x02\x01"), 200, ocsp.Malformed, 0},
		{"empty POST", false, "", nil, 200, ocsp.Malformed, 0},
		{"trailing data", false, "", append(f.request(t, f.good, crypto.SHA1), 0), 200, ocsp.Malformed, 0},
		{"POST over the bound", false, "", bytes.Repeat([]byte{0x30}, maxOCSPRequest+1), 400, 0, 0},
		{"GET over the bound", true, strings.Repeat("MA", maxOCSPRequest), nil, 400, 0, 0},
		{"GET not base64", true, "!!!", nil, 400, 0, 0},
		{"GET without a request", true, "", nil, 400, 0, 0},
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
			resp, st := f.answer(t, rec)
			if st != tt.status {
				t.Fatalf("OCSP status %v, want %v", st, tt.status)
			}
			if st == ocsp.Success && resp.Status != tt.cert {
				t.Fatalf("certificate status %d for serial %x, want %d", resp.Status, resp.SerialNumber, tt.cert)
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
		resp, st := fx.answer(t, rec)
		switch st {
		case ocsp.Malformed, ocsp.Unauthorized:
			return
		case ocsp.Success:
		default:
			t.Fatalf("OCSP error status %v", st)
		}
		if !get {
			if req, err := ocsp.ParseRequest(body); err != nil || req.SerialNumber.Cmp(resp.SerialNumber) != 0 {
				t.Fatalf("answer about serial %x to a POST of %x (parsed: %v)", resp.SerialNumber, body, err)
			}
		}
		switch {
		case resp.Status == ocsp.Good && resp.SerialNumber.Cmp(fx.good) != 0:
			t.Fatalf("good for serial %x, which is not the good certificate", resp.SerialNumber)
		case resp.Status == ocsp.Revoked && (resp.SerialNumber.Cmp(fx.revoked) != 0 || resp.RevocationReason != ocsp.KeyCompromise):
			t.Fatalf("revoked (%d) for serial %x, which is not the revoked certificate", resp.RevocationReason, resp.SerialNumber)
		case resp.Status == ocsp.Unknown && (resp.SerialNumber.Cmp(fx.good) == 0 || resp.SerialNumber.Cmp(fx.revoked) == 0):
			t.Fatalf("unknown for serial %x, which was issued", resp.SerialNumber)
		case resp.Status != ocsp.Good && resp.Status != ocsp.Revoked && resp.Status != ocsp.Unknown:
			t.Fatalf("certificate status %d", resp.Status)
		}
	})
}
