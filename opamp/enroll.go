package opamp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/storage/state"
)

// errAlreadyEnrolled refuses a token enrollment for a uid that already has
// certificates: an enrollment token must not let anyone take over an
// existing agent's identity.
var errAlreadyEnrolled = errors.New("this instance_uid is already enrolled; an enrolled agent renews over its mTLS connection")

// errOneCertificate: an enrolling connection gets one certificate.
var errOneCertificate = errors.New("an enrolling connection obtains one certificate: reconnect with it")

// offerCertificate signs csr for the connection's agent, records the
// certificate and its audit entry in one transaction, and only then puts the
// offer into resp. A refused CSR becomes a BadRequest naming the reason; a
// failure of ours becomes Unavailable with retry_info.
func (c *conn) offerCertificate(ctx context.Context, csrPEM []byte, resp *protobufs.ServerToAgent) {
	offer, err := c.issue(ctx, csrPEM)
	var conflict = errors.Is(err, state.ErrConflict)
	switch {
	case err == nil:
		resp.ConnectionSettings = offer
		c.s.metrics.Issued.Inc()
	case errors.Is(err, ca.ErrCSRRefused), errors.Is(err, errAlreadyEnrolled), errors.Is(err, errOneCertificate), conflict:
		if conflict {
			err = fmt.Errorf("enrollment token %s is used up or expired", c.token.ID)
		}
		c.s.metrics.Rejected.WithLabelValues(reasonCSRRefused).Inc()
		c.s.refusals.record(ctx, refusal{reason: reasonCSRRefused, remote: c.remote, uid: c.uid.String(), detail: err.Error()})
		resp.ErrorResponse = badRequest(err.Error())
	default:
		c.s.log.Error("issue certificate", "uid", c.uid, "err", err)
		resp.ErrorResponse = retryLater(c.s.cfg.EnrollRetryAfter, "certificate issuance temporarily unavailable")
	}
}

func (c *conn) issue(ctx context.Context, csrPEM []byte) (*protobufs.ConnectionSettingsOffers, error) {
	if c.kind == kindEnrolling && c.issued {
		return nil, errOneCertificate
	}
	if !c.uidSet {
		return nil, fmt.Errorf("%w: send instance_uid (or RequestInstanceUid) before a CSR", ca.ErrCSRRefused)
	}
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	iss, err := c.s.cfg.CA.IssueAgent(ctx, csr, c.uid)
	if err != nil {
		return nil, err
	}
	now := c.s.cfg.Clock()
	uid := c.uid.String()
	err = c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		actor := "agent:" + uid
		details := map[string]any{
			"uid": uid, "serial": iss.Serial, "fingerprint_sha256": iss.Fingerprint,
			"not_before": iss.Leaf.NotBefore.Format(time.RFC3339), "not_after": iss.Leaf.NotAfter.Format(time.RFC3339),
			"remote_addr": c.remote,
		}
		if c.kind == kindEnrolling {
			if _, err := tx.Agent(ctx, uid); err == nil {
				return errAlreadyEnrolled
			} else if !errors.Is(err, state.ErrNotFound) {
				return err
			}
			if err := tx.UseEnrollmentToken(ctx, c.token.ID, now); err != nil {
				return err
			}
			if err := tx.PutAgent(ctx, state.Agent{UID: uid, Labels: c.token.Labels, EnrolledAt: now, TokenID: c.token.ID,
				Replica: c.s.cfg.ReplicaID, RemoteAddr: c.remote, Transport: c.transport, LastSeen: now}); err != nil {
				return err
			}
			actor = "token:" + c.token.ID
			details["enrollment_token"] = c.token.ID
			if _, err := c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "agent.enroll", Subject: uid,
				Details: map[string]any{"token": c.token.ID, "labels": c.token.Labels, "remote_addr": c.remote}}); err != nil {
				return err
			}
		}
		if err := tx.InsertCertificate(ctx, state.Certificate{
			Serial: iss.Serial, UID: uid, NotBefore: iss.Leaf.NotBefore, NotAfter: iss.Leaf.NotAfter,
			Fingerprint: iss.Fingerprint, PEM: string(iss.CertPEM), Status: state.CertOffered, IssuedAt: now,
		}); err != nil {
			return err
		}
		_, err := c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "cert.issue", Subject: iss.Serial, Details: details})
		return err
	})
	if err != nil {
		return nil, err
	}
	c.issued = true
	hash := sha256.Sum256(iss.CertPEM) // distinct per offer: opamp-go skips a repeated hash
	return &protobufs.ConnectionSettingsOffers{
		Hash: hash[:],
		Opamp: &protobufs.OpAMPConnectionSettings{
			Certificate:              &protobufs.TLSCertificate{Cert: iss.CertPEM, CaCert: c.s.cfg.CA.RootPEM()},
			HeartbeatIntervalSeconds: uint64(c.s.cfg.HeartbeatInterval / time.Second),
		},
	}, nil
}
