package revocation

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// publishedCRL is the CRL this replica serves.
type publishedCRL struct {
	issuer                 string
	number                 int64
	der, pem               []byte
	thisUpdate, nextUpdate time.Time
	entries                int
}

// refreshCRL makes a new CRL when none exists for the current issuer or
// the newest is past half its window, and otherwise serves the newest one
// stored (another replica may have made it).
func (s *Service) refreshCRL(ctx context.Context) error {
	issuer := s.cfg.CA.IssuerKeyID()
	var (
		number int64
		this   time.Time
	)
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		number, this, err = tx.CRLHead(ctx, issuer)
		return err
	})
	switch {
	case errors.Is(err, state.ErrNotFound):
		_, err = s.regenerateCRL(ctx)
		return err
	case err != nil:
		return err
	case s.cfg.Clock().Sub(this) >= s.cfg.CRLNextUpdate/2:
		_, err = s.regenerateCRL(ctx)
		return err
	}
	if cur := s.crl.Load(); cur != nil && cur.issuer == issuer && cur.number >= number {
		return nil
	}
	return s.loadCRL(ctx, issuer)
}

func (s *Service) loadCRL(ctx context.Context, issuer string) error {
	var c state.CRL
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		c, err = tx.LatestCRL(ctx, issuer)
		return err
	})
	if err != nil {
		return err
	}
	s.publish(c)
	return nil
}

// regenerateCRL signs a CRL of every unexpired revocation in force, with
// the next CRL number from the store, and serves it. The entries are read
// and signed outside any write transaction so a large CRL never holds the
// store's writer.
func (s *Service) regenerateCRL(ctx context.Context) (int64, error) {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	start := time.Now()
	now := s.cfg.Clock().UTC().Truncate(time.Second)
	var rs []state.RevokedSerial
	if err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		rs, err = tx.RevokedSerials(ctx, now)
		return err
	}); err != nil {
		return 0, fmt.Errorf("CRL entries: %w", err)
	}
	entries, err := crlEntries(rs)
	if err != nil {
		return 0, err
	}
	var number int64
	if err := s.cfg.Store.Update(ctx, func(tx *state.Tx) (err error) {
		number, err = tx.NextCounter(ctx, state.CounterCRLNumber)
		return err
	}); err != nil {
		return 0, fmt.Errorf("CRL number: %w", err)
	}
	next := now.Add(s.cfg.CRLNextUpdate)
	der, issuer, err := s.cfg.CA.SignCRL(entries, number, now, next)
	if err != nil {
		return 0, err
	}
	c := state.CRL{Issuer: issuer, Number: number, ThisUpdate: now, NextUpdate: next, Entries: len(entries), DER: der}
	var stored bool
	if err := s.cfg.Store.Update(ctx, func(tx *state.Tx) (err error) {
		stored, err = tx.PutCRL(ctx, c)
		return err
	}); err != nil {
		return 0, err
	}
	if !stored {
		// Another replica stored a newer one meanwhile: serve that.
		return number, s.loadCRL(ctx, issuer)
	}
	s.publish(c)
	s.metrics.CRLGeneration.Observe(time.Since(start).Seconds())
	return number, nil
}

func crlEntries(rs []state.RevokedSerial) ([]x509.RevocationListEntry, error) {
	out := make([]x509.RevocationListEntry, 0, len(rs))
	for _, r := range rs {
		n, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("CRL: stored serial %q is not hex", r.Serial)
		}
		code, err := ReasonCode(r.Reason)
		if err != nil {
			return nil, fmt.Errorf("CRL: serial %s: %w", r.Serial, err)
		}
		// unspecified (0) is left out of the entry, as RFC 5280 asks.
		out = append(out, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt.UTC(), ReasonCode: code})
	}
	return out, nil
}

func (s *Service) publish(c state.CRL) {
	if cur := s.crl.Load(); cur != nil && cur.issuer == c.Issuer && cur.number > c.Number {
		return
	}
	s.crl.Store(&publishedCRL{issuer: c.Issuer, number: c.Number, der: c.DER,
		pem: pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.DER}), thisUpdate: c.ThisUpdate,
		nextUpdate: c.NextUpdate, entries: c.Entries})
	s.metrics.CRLEntries.Set(float64(c.Entries))
	s.metrics.CRLNumber.Set(float64(c.Number))
}

// ServeCRL serves the CRL as DER (application/pkix-crl, RFC 5280's
// distribution point form); ServeCRLPEM as PEM for people and tools that want
// text. Caches must revalidate: a revocation replaces it at once.
func (s *Service) ServeCRL(w http.ResponseWriter, r *http.Request) {
	s.serveCRL(w, r, false)
}

// ServeCRLPEM serves the CRL PEM-encoded.
func (s *Service) ServeCRLPEM(w http.ResponseWriter, r *http.Request) {
	s.serveCRL(w, r, true)
}

func (s *Service) serveCRL(w http.ResponseWriter, r *http.Request, asPEM bool) {
	c := s.crl.Load()
	if c == nil {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "no CRL published yet", http.StatusServiceUnavailable)
		return
	}
	body, ctype := c.der, "application/pkix-crl"
	if asPEM {
		body, ctype = c.pem, "application/x-pem-file"
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", strconv.Quote("crl-"+strconv.FormatInt(c.number, 10)))
	h.Set("Last-Modified", c.thisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Expires", c.nextUpdate.UTC().Format(http.TimeFormat))
	if match := r.Header.Get("If-None-Match"); match != "" && match == h.Get("ETag") {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}

// CRLInfo describes the CRL being served, for status output.
type CRLInfo struct {
	Number     int64     `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	Entries    int       `json:"entries"`
}

// CurrentCRL describes the CRL being served, or false before the first.
func (s *Service) CurrentCRL() (CRLInfo, bool) {
	c := s.crl.Load()
	if c == nil {
		return CRLInfo{}, false
	}
	return CRLInfo{Number: c.number, ThisUpdate: c.thisUpdate, NextUpdate: c.nextUpdate, Entries: c.entries}, true
}
