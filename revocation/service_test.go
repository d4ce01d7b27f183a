package revocation

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/storage/keys"
	"github.com/trustamp/trustamp/storage/state"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	svc   *Service
	store *state.Store
	ca    *ca.Authority
	clk   *clock
	dir   string
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	idFile := filepath.Join(dir, "id.txt")
	if err := keys.GenerateIdentity(idFile, clk.now()); err != nil {
		t.Fatal(err)
	}
	ks, err := keys.NewAgeStore(keys.AgeConfig{Dir: filepath.Join(dir, "keys"), IdentityFile: idFile})
	if err != nil {
		t.Fatal(err)
	}
	files := ca.Files{Dir: filepath.Join(dir, "ca")}
	if _, err := ca.Bootstrap(ctx, ks, files, "test.local", clk.now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(ctx, ca.Config{Keys: ks, Files: files, TrustDomain: "test.local", Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(ctx, state.Config{SQLitePath: filepath.Join(dir, "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &harness{store: store, ca: authority, clk: clk, dir: dir}
	h.svc = h.service(t)
	return h
}

func (h *harness) service(t testing.TB) *Service {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	svc, err := New(Config{Store: h.store, Audit: audit.New(audit.Config{Key: key, Clock: h.clk.now}), CA: h.ca,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: h.clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc
}

// certs records n certificates for agent uid, expiring after life.
func (h *harness) certs(t testing.TB, uid string, n int, life time.Duration) []string {
	t.Helper()
	ctx := context.Background()
	var serials []string
	err := h.store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutAgent(ctx, state.Agent{UID: uid, EnrolledAt: h.clk.now()}); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			b := make([]byte, 16)
			rand.Read(b)
			b[0] |= 0x40 // no leading zero byte: the canonical form the CA records
			s := hex.EncodeToString(b)
			serials = append(serials, s)
			if err := tx.InsertCertificate(ctx, state.Certificate{Serial: s, UID: uid, NotBefore: h.clk.now(),
				NotAfter: h.clk.now().Add(life), Status: state.CertConfirmed, IssuedAt: h.clk.now(), Profile: "default"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return serials
}

func (h *harness) crl(t testing.TB) *x509.RevocationList {
	t.Helper()
	c := h.svc.crl.Load()
	if c == nil {
		t.Fatal("no CRL published")
	}
	crl, err := x509.ParseRevocationList(c.der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(h.ca.Intermediate()); err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestReasonCodes(t *testing.T) {
	for name, want := range map[string]int{"unspecified": 0, "keyCompromise": 1, "certificateHold": 6, "privilegeWithdrawn": 9} {
		if got, err := ReasonCode(name); err != nil || got != want {
			t.Errorf("ReasonCode(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "removeFromCRL", "aACompromise", "KeyCompromise"} {
		if _, err := ReasonCode(bad); err == nil || !strings.Contains(err.Error(), "keyCompromise") {
			t.Errorf("ReasonCode(%q): %v, want an error listing the valid reasons", bad, err)
		}
	}
	if names := ReasonNames(); len(names) != 8 || names[0] != "unspecified" || names[7] != "privilegeWithdrawn" {
		t.Errorf("ReasonNames() = %v", names)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{"0A:1b": "0a1b", "0x00ff": "ff", " 1234 ": "1234", "01": "01"} {
		if got, err := NormalizeSerial(in); err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "xyz", "0", "-5"} {
		if _, err := NormalizeSerial(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeSerial(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

// TestRevokeIsAllOrNothing: one bad serial in a request leaves every other
// certificate of it unrevoked, with no audit entry.
func TestRevokeIsAllOrNothing(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	good := h.certs(t, "agent-1", 1, time.Hour)
	_, err := h.svc.Revoke(ctx, Request{Serials: []string{good[0], "abcdef"}, Reason: "keyCompromise", Actor: "test"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke with an unknown serial: %v, want ErrNotFound", err)
	}
	if _, revoked := h.svc.Revoked(good[0]); revoked {
		t.Fatal("the valid serial of a failed request is in the revocation set")
	}
	var (
		c    state.Certificate
		head int64
	)
	h.store.View(ctx, func(tx *state.Tx) (err error) {
		if c, err = tx.CertificateBySerial(ctx, good[0]); err != nil {
			return err
		}
		head, _, err = tx.AuditHead(ctx)
		return err
	})
	if c.Status != state.CertConfirmed || head != 0 {
		t.Fatalf("after a failed request: status %s, %d audit entries; want confirmed, 0", c.Status, head)
	}
}

// TestCRLEntries: reasons and times per entry, unspecified without a reason
// extension, expired and undone revocations dropped, numbers increasing
// across a restart of the service.
func TestCRLEntries(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	short := h.certs(t, "agent-short", 1, 30*time.Minute)
	long := h.certs(t, "agent-long", 3, 24*time.Hour)
	for serial, reason := range map[string]string{short[0]: "keyCompromise", long[0]: "unspecified", long[1]: "certificateHold", long[2]: "superseded"} {
		if _, err := h.svc.Revoke(ctx, Request{Serials: []string{serial}, Reason: reason, Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.svc.Undo(ctx, long[1], "test", ""); err != nil {
		t.Fatal(err)
	}
	crl := h.crl(t)
	got := map[string]x509.RevocationListEntry{}
	for _, e := range crl.RevokedCertificateEntries {
		got[fmt.Sprintf("%x", e.SerialNumber)] = e
	}
	if len(got) != 3 || got[short[0]].ReasonCode != 1 || got[long[2]].ReasonCode != 4 {
		t.Fatalf("CRL entries %+v", got)
	}
	if e := got[long[0]]; e.ReasonCode != 0 || len(e.Extensions) != 0 {
		t.Fatalf("unspecified entry carries a reason extension: %+v", e)
	}
	if _, held := got[long[1]]; held {
		t.Fatal("undone hold is on the CRL")
	}
	first := crl.Number.Int64()

	// An hour later the short certificate has expired: it leaves the CRL.
	h.clk.advance(time.Hour)
	if _, err := h.svc.regenerateCRL(ctx); err != nil {
		t.Fatal(err)
	}
	crl = h.crl(t)
	if len(crl.RevokedCertificateEntries) != 2 || crl.Number.Int64() <= first {
		t.Fatalf("after expiry: %d entries, number %v (was %d)", len(crl.RevokedCertificateEntries), crl.Number, first)
	}
	if !crl.NextUpdate.Equal(crl.ThisUpdate.Add(time.Hour)) {
		t.Fatalf("nextUpdate %v, thisUpdate %v: want a 1h window", crl.NextUpdate, crl.ThisUpdate)
	}
	// A new process serves the stored CRL and numbers on from it.
	before := crl.Number.Int64()
	h.svc = h.service(t)
	if c := h.svc.crl.Load(); c == nil || c.number != before {
		t.Fatalf("restarted service serves CRL %v, want the stored %d", c, before)
	}
	h.clk.advance(31 * time.Minute) // past half the window: Run makes a new one
	if err := h.svc.refreshCRL(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.crl(t).Number.Int64(); n <= before {
		t.Fatalf("CRL number %d after restart and refresh, want > %d", n, before)
	}
}

// TestPresentedIsFlushed: refused presentations reach the store in batches.
func TestPresentedIsFlushed(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.certs(t, "agent-1", 1, time.Hour)
	if _, err := h.svc.Revoke(ctx, Request{Serials: s, Reason: "keyCompromise", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.svc.Presented(s[0])
	}
	h.svc.flushPresented(ctx)
	var r state.Revocation
	h.store.View(ctx, func(tx *state.Tx) (err error) { r, err = tx.RevocationInForce(ctx, s[0]); return err })
	if r.Presented != 3 || r.LastPresentedAt.IsZero() {
		t.Fatalf("presented %d at %v, want 3", r.Presented, r.LastPresentedAt)
	}
}

// BenchmarkCRL100k generates a CRL of 100,000 revoked certificates: read
// them from SQLite, sign with the intermediate's ECDSA P-256 key, store.
func BenchmarkCRL100k(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	const n = 100_000
	now := h.clk.now()
	err := h.store.Update(ctx, func(tx *state.Tx) error {
		for i := 0; i < n; i++ {
			serial := hex.EncodeToString(big.NewInt(int64(0x40_0000_0000 + i)).Bytes())
			if err := tx.InsertCertificate(ctx, state.Certificate{Serial: serial, UID: "agent", NotBefore: now,
				NotAfter: now.Add(24 * time.Hour), Status: state.CertConfirmed, IssuedAt: now, Profile: "default"}); err != nil {
				return err
			}
			if _, err := tx.RevokeCertificate(ctx, state.Revocation{ID: serial, RequestID: "bench", Serial: serial,
				Reason: "keyCompromise", Actor: "bench", RequestedAt: now, RevokedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.svc.regenerateCRL(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(h.svc.crl.Load().der))/1e6, "MB/crl")
	if got := h.svc.crl.Load().entries; got != n {
		b.Fatalf("CRL has %d entries, want %d", got, n)
	}
}
