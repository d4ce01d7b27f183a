package api

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

// CARotator rolls the CA over; *ca.Authority is one.
type CARotator interface {
	RotateIntermediate(ctx context.Context) (old, next *x509.Certificate, err error)
	RotateRoot(ctx context.Context) (old, next *x509.Certificate, err error)
	FinishRootRollover(ctx context.Context) error
}

// CACert describes a CA certificate.
type CACert struct {
	Subject           string    `json:"subject"`
	Serial            string    `json:"serial"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
}

// IntermediateRollover is the answer to POST /api/v1/ca/rotate-intermediate
// and /api/v1/ca/rotate-root (then Previous and Current are roots).
type IntermediateRollover struct {
	Previous CACert `json:"previous"`
	Current  CACert `json:"current"`
}

func caCert(c *x509.Certificate) CACert {
	sum := sha256.Sum256(c.Raw)
	return CACert{Subject: c.Subject.String(), Serial: hex.EncodeToString(c.SerialNumber.Bytes()),
		FingerprintSHA256: hex.EncodeToString(sum[:]), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
}

// rotateIntermediate: POST /api/v1/ca/rotate-intermediate. The CA files and
// keys change first (resumably); the audit entry follows in its own
// transaction, since files cannot join the database's.
func (a *API) rotateIntermediate(w http.ResponseWriter, r *http.Request) {
	if !a.noBody(w, r) {
		return
	}
	if a.cfg.CA == nil {
		writeError(w, http.StatusNotImplemented, "this server has no CA to roll over")
		return
	}
	old, next, err := a.cfg.CA.RotateIntermediate(r.Context())
	if err != nil {
		a.log.Error("rotate intermediate", "err", err)
		writeError(w, http.StatusInternalServerError, "rotate intermediate: %v", err)
		return
	}
	out := IntermediateRollover{Previous: caCert(old), Current: caCert(next)}
	p := principal(r.Context())
	err = a.cfg.Store.Update(r.Context(), func(tx *state.Tx) error {
		_, err := a.cfg.Audit.Append(r.Context(), tx, audit.Record{Actor: p.Actor(), Action: "ca.rotate_intermediate", Subject: out.Current.Serial,
			Details: map[string]any{"previous_serial": out.Previous.Serial, "current_serial": out.Current.Serial,
				"current_fingerprint_sha256": out.Current.FingerprintSHA256, "current_not_after": out.Current.NotAfter.Format(time.RFC3339)}})
		return err
	})
	if err != nil {
		a.log.Error("audit intermediate rollover", "err", err)
		writeError(w, http.StatusServiceUnavailable, "rolled over to %s, but the audit entry failed: retry the audit by running the command again", out.Current.Serial)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// rotateRoot: POST /api/v1/ca/rotate-root, or with ?finish=true the end of
// the overlap.
func (a *API) rotateRoot(w http.ResponseWriter, r *http.Request) {
	if !a.noBody(w, r) {
		return
	}
	if a.cfg.CA == nil {
		writeError(w, http.StatusNotImplemented, "this server has no CA to roll over")
		return
	}
	p := principal(r.Context())
	if r.URL.Query().Get("finish") == "true" {
		if err := a.cfg.CA.FinishRootRollover(r.Context()); err != nil {
			writeError(w, http.StatusConflict, "finish root rollover: %v", err)
			return
		}
		a.auditCA(w, r, audit.Record{Actor: p.Actor(), Action: "ca.rotate_root_finish", Subject: "root"}, map[string]string{"status": "finished"})
		return
	}
	old, next, err := a.cfg.CA.RotateRoot(r.Context())
	if err != nil {
		a.log.Error("rotate root", "err", err)
		writeError(w, http.StatusConflict, "rotate root: %v", err)
		return
	}
	out := IntermediateRollover{Previous: caCert(old), Current: caCert(next)}
	a.auditCA(w, r, audit.Record{Actor: p.Actor(), Action: "ca.rotate_root", Subject: out.Current.Serial,
		Details: map[string]any{"previous_serial": out.Previous.Serial, "current_serial": out.Current.Serial,
			"current_fingerprint_sha256": out.Current.FingerprintSHA256}}, out)
}

func (a *API) auditCA(w http.ResponseWriter, r *http.Request, rec audit.Record, out any) {
	err := a.cfg.Store.Update(r.Context(), func(tx *state.Tx) error {
		_, err := a.cfg.Audit.Append(r.Context(), tx, rec)
		return err
	})
	if err != nil {
		a.log.Error("audit CA change", "action", rec.Action, "err", err)
		writeError(w, http.StatusServiceUnavailable, "the CA changed (%s), but its audit entry failed", rec.Action)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
