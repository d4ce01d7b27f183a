package opamp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// errAlreadyEnrolled refuses a token enrollment for a uid that already has
// certificates: an enrollment token must not let anyone take over an
// existing agent's identity.
var errAlreadyEnrolled = errors.New("this instance_uid is already enrolled; an enrolled agent renews over its mTLS connection")

// errQuarantined refuses certificates and enrollment to a quarantined
// identity until an operator releases it.
var errQuarantined = errors.New("this agent identity is quarantined after a revocation; it gets no certificate until an operator releases it")

// errOneCertificate: an enrolling connection gets one certificate.
var errOneCertificate = errors.New("an enrolling connection obtains one certificate: reconnect with it")

// errCSRRate: an agent sent CSRs faster than agent_csr_interval allows.
var errCSRRate = errors.New("too many certificate requests from this agent")

// offerCertificate signs csr for the connection's agent, records the
// certificate and its audit entry in one transaction, and only then puts the
// offer into resp. A refused CSR becomes a BadRequest naming the reason; a
// failure of ours becomes Unavailable with retry_info.
func (c *conn) offerCertificate(ctx context.Context, csrPEM []byte, resp *protobufs.ServerToAgent) {
	c.offerCertificateFor(ctx, OpAMPDestination, csrPEM, resp)
}

// offerCertificateFor is offerCertificate for any destination.
func (c *conn) offerCertificateFor(ctx context.Context, dest string, csrPEM []byte, resp *protobufs.ServerToAgent) {
	offer, err := c.issue(ctx, dest, csrPEM)
	conflict := errors.Is(err, state.ErrConflict)
	switch {
	case err == nil:
		resp.ConnectionSettings = offer
	case errors.Is(err, errCSRRate):
		c.s.metrics.Rejected.WithLabelValues(reasonCSRRate).Inc()
		resp.ErrorResponse = retryLater(c.s.cfg.AgentCSRInterval, err.Error())
	case errors.Is(err, ca.ErrCSRRefused), errors.Is(err, errAlreadyEnrolled), errors.Is(err, errOneCertificate),
		errors.Is(err, errQuarantined), conflict:
		if conflict {
			err = fmt.Errorf("enrollment token %s is used up or expired", c.token.ID)
		}
		reason := reasonCSRRefused
		if errors.Is(err, errQuarantined) {
			reason = reasonQuarantined
		}
		c.s.metrics.Rejected.WithLabelValues(reason).Inc()
		c.s.refusals.record(ctx, refusal{reason: reason, remote: c.remote, uid: c.uid.String(), detail: err.Error()})
		if reason == reasonCSRRefused && c.uidSet {
			c.s.event(ctx, c.policyAgent(), policies.EventCSRRefused, map[string]string{"destination": dest, "error": err.Error()})
		}
		resp.ErrorResponse = badRequest(err.Error())
	default:
		c.s.log.Error("issue certificate", "uid", c.uid, "err", err)
		resp.ErrorResponse = retryLater(c.s.cfg.EnrollRetryAfter, "certificate issuance temporarily unavailable")
	}
}

func (c *conn) issue(ctx context.Context, dest string, csrPEM []byte) (*protobufs.ConnectionSettingsOffers, error) {
	if c.kind == kindEnrolling && c.issued.Load() {
		return nil, errOneCertificate
	}
	if !c.uidSet {
		return nil, fmt.Errorf("%w: send instance_uid (or RequestInstanceUid) before a CSR", ca.ErrCSRRefused)
	}
	if c.kind == kindAgent && !c.s.rotation.allowAgentCSR(c.uid.String()) {
		return nil, errCSRRate
	}
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	iss, err := c.s.cfg.CA.IssueAgent(ctx, csr, c.uid, c.s.profileFor(c.policyAgent(), certView(c.agent), dest), c.attributes())
	if err != nil {
		return nil, err
	}
	offer := c.s.offerFor(dest, iss, nil)
	uid := c.uid.String()
	err = c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if c.kind == kindEnrolling {
			return c.enroll(ctx, tx, iss, offer.Hash)
		}
		return c.rotateWithCSR(ctx, tx, dest, iss, offer.Hash)
	})
	if err != nil {
		return nil, err
	}
	c.issued.Store(true)
	c.s.metrics.observeIssue(time.Since(start))
	c.s.log.Debug("certificate offered", "uid", uid, "serial", iss.Serial)
	return offer, nil
}

// enroll records a token enrollment: the token use, the new agent, its first
// certificate and the audit entries, all in tx.
//
// A uid already enrolled may enroll again with a token only when it holds no
// usable certificate (all expired or revoked, e.g. after a quarantine was
// released): a token must never let anyone take over an identity whose
// credentials still work.
func (c *conn) enroll(ctx context.Context, tx *state.Tx, iss *ca.Issued, hash []byte) error {
	uid := c.uid.String()
	now := c.s.cfg.Clock()
	if err := checkNotQuarantined(ctx, tx, uid); err != nil {
		return err
	}
	action := "agent.enroll"
	if _, err := tx.Agent(ctx, uid); err == nil {
		usable, err := tx.Certificates(ctx, state.CertFilter{UID: uid,
			Statuses: []state.CertStatus{state.CertOffered, state.CertConfirmed, state.CertRetired}})
		if err != nil {
			return err
		}
		for _, cert := range usable {
			if cert.NotAfter.After(now) {
				return errAlreadyEnrolled
			}
		}
		action = "agent.reenroll"
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
	actor := "token:" + c.token.ID
	if _, err := c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: action, Subject: uid,
		Details: map[string]any{"token": c.token.ID, "labels": c.token.Labels, "remote_addr": c.remote}}); err != nil {
		return err
	}
	if err := c.s.recordIssued(ctx, tx, iss, uid, OpAMPDestination, hash, false); err != nil {
		return err
	}
	_, err := c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "cert.issue", Subject: iss.Serial,
		Details: issueDetails(iss, uid, c.remote, map[string]any{"enrollment_token": c.token.ID})})
	return err
}

// rotateWithCSR records a certificate an enrolled agent asked for: it
// completes the agent's open rotation (a requested CSR, or one awaiting the
// agent), or opens one when the agent rotates on its own.
func (c *conn) rotateWithCSR(ctx context.Context, tx *state.Tx, dest string, iss *ca.Issued, hash []byte) error {
	uid := c.uid.String()
	now := c.s.cfg.Clock()
	rot, err := tx.OpenRotation(ctx, uid, dest)
	switch {
	case errors.Is(err, state.ErrNotFound):
		rot = state.Rotation{ID: uuid.Must(uuid.NewV7()).String(), UID: uid, Destination: dest, Reason: "agent", Method: methodAgentCSR, CreatedAt: now}
	case err != nil:
		return err
	case rot.Method == "":
		rot.Method = methodAgentCSR
	}
	if rot.State != state.RotationStalled {
		rot.State, rot.Error = state.RotationOffered, ""
	}
	rot.Serial, rot.UpdatedAt = iss.Serial, now
	rot.NextAttemptAt = now.Add(c.s.rotation.backoff(max(1, rot.Attempts)))
	if err := c.s.recordIssued(ctx, tx, iss, uid, dest, hash, false); err != nil {
		return err
	}
	if err := tx.PutRotation(ctx, rot); err != nil {
		return err
	}
	c.s.metrics.Rotations.WithLabelValues("offered").Inc()
	_, err = c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "agent:" + uid, Action: "cert.issue", Subject: iss.Serial,
		Details: issueDetails(iss, uid, c.remote, map[string]any{"rotation": rot.ID, "reason": rot.Reason, "destination": dest})})
	return err
}

// recordIssued stores an issued certificate as offered: it is recorded
// before it is sent.
func (s *Server) recordIssued(ctx context.Context, tx *state.Tx, iss *ca.Issued, uid, dest string, hash []byte, serverKey bool) error {
	if err := checkNotQuarantined(ctx, tx, uid); err != nil {
		return err
	}
	s.metrics.Issued.Inc()
	return tx.InsertCertificate(ctx, state.Certificate{
		Serial: iss.Serial, UID: uid, NotBefore: iss.Leaf.NotBefore, NotAfter: iss.Leaf.NotAfter,
		Fingerprint: iss.Fingerprint, PEM: string(iss.CertPEM), Status: state.CertOffered, IssuedAt: s.cfg.Clock(),
		Profile: iss.Profile, Destination: dest, RenewAfter: iss.RenewAfter, OfferHash: hash, ServerMadeKey: serverKey,
	})
}

func issueDetails(iss *ca.Issued, uid, remote string, extra map[string]any) map[string]any {
	d := map[string]any{
		"uid": uid, "serial": iss.Serial, "fingerprint_sha256": iss.Fingerprint, "profile": iss.Profile,
		"not_before": iss.Leaf.NotBefore.Format(time.RFC3339), "not_after": iss.Leaf.NotAfter.Format(time.RFC3339),
	}
	if remote != "" {
		d["remote_addr"] = remote
	}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

func checkNotQuarantined(ctx context.Context, tx *state.Tx, uid string) error {
	q, err := tx.QuarantineOf(ctx, uid)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w (since %s, %s)", errQuarantined, q.Since.Format(time.RFC3339), q.Reason)
}
