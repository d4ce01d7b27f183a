package opamp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"github.com/open-telemetry/opamp-go/server/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/storage/state"
)

// serverCapabilities are what trustamp implements today; each issue that
// adds a feature adds its bit. The first reply on every connection carries
// them (opamp-go never sets them itself).
const serverCapabilities = uint64(protobufs.ServerCapabilities_ServerCapabilities_AcceptsStatus |
	protobufs.ServerCapabilities_ServerCapabilities_AcceptsEffectiveConfig |
	protobufs.ServerCapabilities_ServerCapabilities_OffersConnectionSettings |
	protobufs.ServerCapabilities_ServerCapabilities_AcceptsConnectionSettingsRequest)

type connKind int

const (
	kindAgent     connKind = iota // mTLS: an enrolled agent, uid bound to its certificate
	kindEnrolling                 // bearer token: may obtain its first certificate, nothing else
)

type connInfo struct {
	transport, remote string
	host              string // the Host the agent asked for: base of download URLs
	since             time.Time
}

// conn is one OpAMP connection (for plain HTTP: one request). opamp-go calls
// OnMessage sequentially per connection, so its fields need no lock.
type conn struct {
	s *Server
	connInfo
	kind connKind

	uid    uuid.UUID
	uidSet bool

	// kindAgent
	certSerial   string
	certNotAfter time.Time
	agent        *state.Agent // registry record, loaded on the first message
	persisted    time.Time    // when agent was last written
	destsChecked bool         // ensureDestinations ran on this connection

	// kindEnrolling
	enrollAttrs map[string]string // description attributes seen so far
	token       state.EnrollmentToken
	issued      atomic.Bool // read by the enroll_timeout timer
	release     func()      // the enrollment slot (plain HTTP)
	stopTimer   func() bool // stops the enroll_timeout timer (WebSocket)
	// expired is set when enroll_timeout passes; handling while a CSR is
	// handled. The timer closes the connection unless a CSR is in hand, in
	// which case its handler closes it after the reply.
	expired, handling atomic.Bool

	live types.Connection // WebSocket connection, once registered (opamp-go serialises its Sends)

	pkg packageState // guarded by its own lock: re-offers run outside OnMessage
}

func (c *conn) callbacks() types.ConnectionCallbacks {
	return types.ConnectionCallbacks{
		OnConnected:        c.onConnected,
		OnMessage:          c.onMessage,
		OnConnectionClose:  c.onClose,
		OnReadMessageError: c.onReadError,
	}
}

// onReadError answers a WebSocket message refused for its size with a
// BadRequest naming the limit; opamp-go then closes the connection (any
// read error ends its read loop).
func (c *conn) onReadError(oc types.Connection, _ int, _ []byte, _ error) {
	fl, ok := oc.Connection().(*frameLimiter)
	if !ok || !fl.tooLarge() {
		return
	}
	c.s.metrics.Rejected.WithLabelValues(reasonTooLarge).Inc()
	c.s.log.Warn("opamp message over the size limit; connection closed", "uid", c.uidString(), "remote", c.remote,
		"limit", c.s.limits.MessageSize)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp := &protobufs.ServerToAgent{Capabilities: c.s.capabilities(), ErrorResponse: badRequest(fl.err.Error() + "; connection closed")}
	if c.uidSet {
		resp.InstanceUid = c.uid[:]
	}
	_ = oc.Send(ctx, resp)
}

func (c *conn) uidString() string {
	if !c.uidSet {
		return ""
	}
	return c.uid.String()
}

func (c *conn) onConnected(_ context.Context, oc types.Connection) {
	if c.transport != transportWebSocket {
		return
	}
	c.s.metrics.Connected.WithLabelValues(c.transport).Inc()
	if c.kind == kindEnrolling {
		c.stopTimer = c.s.cfg.AfterFunc(c.s.cfg.EnrollTimeout, func() { c.enrollTimedOut(oc) })
	}
	if c.kind == kindAgent {
		c.live = oc
		c.s.conns.add(c.uid.String(), c)
		// A revocation that committed between this connection's handshake
		// and its registration did not see it in the registry: check again
		// now that it is there (revocations update the set before they
		// disconnect, so one of the two always catches it).
		if _, revoked := c.s.revoked(c.certSerial); revoked {
			c.s.conns.disconnectCerts(map[string][]string{c.uid.String(): {c.certSerial}})
		}
	}
}

// enrollTimedOut closes an enrolling WebSocket at enroll_timeout: it may
// obtain one certificate and must then reconnect with it, so it has no
// reason to stay.
func (c *conn) enrollTimedOut(oc types.Connection) {
	c.expired.Store(true)
	if c.handling.Load() {
		return // enrollingMessage closes it after its reply
	}
	if c.issued.Load() {
		c.s.log.Debug("enrolling connection closed after enroll_timeout", "remote", c.remote, "token", c.token.ID)
	} else {
		c.s.metrics.Rejected.WithLabelValues(reasonEnrollTimeout).Inc()
		c.s.log.Info("enrolling connection closed: no certificate request within enroll_timeout",
			"remote", c.remote, "token", c.token.ID, "enroll_timeout", c.s.cfg.EnrollTimeout)
	}
	oc.Disconnect()
}

func (c *conn) onClose(oc types.Connection) {
	if c.release != nil {
		c.release()
	}
	if c.stopTimer != nil {
		c.stopTimer()
	}
	if c.transport != transportWebSocket {
		return
	}
	c.s.metrics.Connected.WithLabelValues(c.transport).Dec()
	if c.kind != kindAgent {
		return
	}
	c.s.conns.remove(c.uid.String(), c)
	if c.agent != nil && c.agent.Connected {
		c.agent.Connected = false
		c.agent.LastSeen = c.s.cfg.Clock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutAgent(ctx, *c.agent) }); err != nil {
			c.s.log.Error("record agent disconnect", "uid", c.uid, "err", err)
		}
	}
}

func (c *conn) onMessage(ctx context.Context, oc types.Connection, msg *protobufs.AgentToServer) *protobufs.ServerToAgent {
	c.s.metrics.Messages.WithLabelValues("in").Inc()
	resp := &protobufs.ServerToAgent{InstanceUid: msg.InstanceUid, Capabilities: c.s.capabilities()}
	var out *protobufs.ServerToAgent
	switch c.kind {
	case kindAgent:
		out = c.agentMessage(ctx, oc, msg, resp)
	case kindEnrolling:
		out = c.enrollingMessage(ctx, oc, msg, resp)
	}
	if out != nil {
		c.s.metrics.Messages.WithLabelValues("out").Inc()
	}
	return out
}

// agentMessage handles a message on an mTLS connection.
func (c *conn) agentMessage(ctx context.Context, oc types.Connection, msg *protobufs.AgentToServer, resp *protobufs.ServerToAgent) *protobufs.ServerToAgent {
	if why, revoked := c.s.revoked(c.certSerial); revoked {
		// Revoked while connected (or between requests over plain HTTP):
		// answer nothing more on it.
		c.s.log.Info("message on a revoked certificate refused", "uid", c.uid, "serial", c.certSerial, "reason", why)
		c.s.metrics.Rejected.WithLabelValues(reasonRevoked).Inc()
		if c.transport == transportWebSocket {
			oc.Disconnect()
		}
		return nil
	}
	if uid, err := uuid.FromBytes(msg.InstanceUid); err != nil || uid != c.uid {
		return c.impersonation(ctx, oc, msg, resp)
	}
	if msg.Flags&uint64(protobufs.AgentToServerFlags_AgentToServerFlags_RequestInstanceUid) != 0 {
		resp.ErrorResponse = badRequest("this agent's instance_uid is bound to its certificate and cannot change; enroll a new agent to get a new uid")
		return resp
	}
	if err := c.s.limits.check(msg); err != nil {
		return c.overLimit(err, resp)
	}
	needFull, err := c.observe(ctx, msg)
	if errors.Is(err, state.ErrTooLarge) {
		return c.overLimit(err, resp)
	}
	if err != nil {
		c.s.log.Error("update agent registry", "uid", c.uid, "err", err)
		resp.ErrorResponse = retryLater(c.s.cfg.EnrollRetryAfter, "server state unavailable")
		return resp
	}
	if needFull {
		resp.Flags |= uint64(protobufs.ServerToAgentFlags_ServerToAgentFlags_ReportFullState)
	}
	if !c.destsChecked {
		c.destsChecked = true
		if err := c.ensureDestinations(ctx, c.agent.Capabilities); err != nil {
			c.s.log.Error("schedule destination certificates", "uid", c.uid, "err", err)
		}
	}
	if st := msg.GetConnectionSettingsStatus(); st != nil {
		c.s.rotation.settingsStatus(ctx, c, st)
	}
	c.offerPackages(ctx, msg, resp)
	if cm := msg.GetCustomMessage(); cm != nil && cm.Capability == CSRCapability && cm.Type == extension.CSRReplyType {
		c.destinationCSR(ctx, cm, resp)
	} else if csr := csrOf(msg); csr != nil {
		c.offerCertificate(ctx, csr, resp)
	} else if c.transport == transportHTTP {
		// A plain-HTTP agent cannot be pushed to: a due rotation rides on
		// the reply to its next message.
		c.s.rotation.piggyback(ctx, c, resp)
	}
	return resp
}

// enrollingMessage handles a message on a token-authenticated connection: it
// may get a uid and one certificate, and nothing else.
func (c *conn) enrollingMessage(ctx context.Context, oc types.Connection, msg *protobufs.AgentToServer, resp *protobufs.ServerToAgent) *protobufs.ServerToAgent {
	if err := c.s.limits.check(msg); err != nil {
		return c.overLimit(err, resp)
	}
	if msg.AgentDescription != nil {
		c.enrollAttrs = attributes(msg.AgentDescription)
	}
	switch {
	case msg.Flags&uint64(protobufs.AgentToServerFlags_AgentToServerFlags_RequestInstanceUid) != 0:
		c.uid, c.uidSet = uuid.Must(uuid.NewV7()), true
		resp.AgentIdentification = &protobufs.AgentIdentification{NewInstanceUid: c.uid[:]}
		resp.InstanceUid = msg.InstanceUid
	case !c.uidSet:
		uid, err := uuid.FromBytes(msg.InstanceUid)
		if err != nil || uid == uuid.Nil {
			resp.ErrorResponse = badRequest("instance_uid must be 16 bytes (a UUID); set RequestInstanceUid to be given one")
			return resp
		}
		c.uid, c.uidSet = uid, true
	default:
		if uid, err := uuid.FromBytes(msg.InstanceUid); err != nil || uid != c.uid {
			resp.ErrorResponse = badRequest(fmt.Sprintf("instance_uid changed during enrollment (was %s)", c.uid))
			return resp
		}
	}
	if csr := csrOf(msg); csr != nil {
		if c.release == nil { // WebSocket: hold a slot while this CSR is handled
			c.handling.Store(true)
			defer c.handling.Store(false)
			if c.expired.Load() { // enroll_timeout passed: the timer is closing it
				return nil
			}
			release, ok := c.s.acquireEnroll()
			if !ok {
				c.s.metrics.Rejected.WithLabelValues(reasonOverloaded).Inc()
				resp.ErrorResponse = retryLater(c.s.cfg.EnrollRetryAfter, "too many agents enrolling at once")
				return c.sendAndClose(ctx, oc, resp)
			}
			defer release()
		}
		c.offerCertificate(ctx, csr, resp)
		if c.expired.Load() {
			// enroll_timeout passed while the CSR was handled: reply, then close.
			return c.sendAndClose(ctx, oc, resp)
		}
	}
	return resp
}

// overLimit refuses a message over a limit of opamp.limits: BadRequest
// naming the limit, nothing in the message applied.
func (c *conn) overLimit(err error, resp *protobufs.ServerToAgent) *protobufs.ServerToAgent {
	c.s.metrics.Rejected.WithLabelValues(reasonOverLimit).Inc()
	c.s.log.Warn("opamp message refused", "uid", c.uidString(), "remote", c.remote, "err", err)
	resp.ErrorResponse = badRequest(err.Error())
	return resp
}

// impersonation: a certificate for one agent used with another's uid. Answer
// BadRequest, close, audit (not rate-limited: it takes a valid certificate).
func (c *conn) impersonation(ctx context.Context, oc types.Connection, msg *protobufs.AgentToServer, resp *protobufs.ServerToAgent) *protobufs.ServerToAgent {
	claimed := fmt.Sprintf("%x", msg.InstanceUid)
	if uid, err := uuid.FromBytes(msg.InstanceUid); err == nil {
		claimed = uid.String()
	}
	c.s.metrics.Rejected.WithLabelValues(reasonImpersonation).Inc()
	c.s.log.Warn("impersonation attempt", "certificate_uid", c.uid, "claimed_uid", claimed, "remote", c.remote)
	err := c.s.auditRefusal(context.WithoutCancel(ctx), refusal{
		reason: reasonImpersonation, remote: c.remote, uid: c.uid.String(),
		detail: fmt.Sprintf("certificate %s for %s used with instance_uid %s", c.certSerial, c.uid, claimed),
	}, 0)
	if err != nil {
		c.s.log.Error("audit impersonation", "err", err)
	}
	c.s.event(ctx, c.policyAgent(), policies.EventImpersonation, map[string]string{"claimed_uid": claimed,
		"serial": c.certSerial, "remote": c.remote})
	resp.ErrorResponse = badRequest("instance_uid does not match the client certificate; connection closed")
	return c.sendAndClose(ctx, oc, resp)
}

// sendAndClose sends resp and closes a WebSocket. A plain-HTTP exchange ends
// with its response anyway, so it just returns resp.
func (c *conn) sendAndClose(ctx context.Context, oc types.Connection, resp *protobufs.ServerToAgent) *protobufs.ServerToAgent {
	if c.transport != transportWebSocket {
		return resp
	}
	if err := oc.Send(ctx, resp); err == nil {
		c.s.metrics.Messages.WithLabelValues("out").Inc()
	}
	oc.Disconnect()
	return nil
}

// observe merges a message into the registry record and persists it. It
// reports whether the agent must resend its full state: no description on
// record, or a gap in sequence numbers.
func (c *conn) observe(ctx context.Context, msg *protobufs.AgentToServer) (bool, error) {
	now := c.s.cfg.Clock()
	needFull := false
	if c.agent == nil {
		var a state.Agent
		err := c.s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
			a, err = tx.Agent(ctx, c.uid.String())
			return err
		})
		switch {
		case errors.Is(err, state.ErrNotFound):
			a = state.Agent{UID: c.uid.String(), EnrolledAt: now}
		case err != nil:
			return false, err
		}
		if a.SequenceNum+1 != msg.SequenceNum && msg.AgentDescription == nil {
			needFull = true
		}
		c.agent = &a
	} else if msg.SequenceNum != c.agent.SequenceNum+1 && msg.AgentDescription == nil {
		needFull = true
	}
	a := c.agent
	before := *a
	if detail, changed := identityChanged(a.Description, msg.AgentDescription); changed {
		c.s.log.Warn("agent identifying attributes changed", "uid", a.UID, "changes", detail)
		c.s.event(ctx, c.policyAgent(), policies.EventIdentityChanged, detail)
	}
	if msg.AgentDescription != nil {
		a.Description = marshalJSON(msg.AgentDescription)
	}
	if len(a.Description) == 0 || string(a.Description) == "{}" {
		needFull = true
	}
	if msg.Capabilities != 0 {
		a.Capabilities = msg.Capabilities
	}
	if msg.CustomCapabilities != nil {
		a.CustomCapabilities = msg.CustomCapabilities.Capabilities
	}
	if msg.Health != nil {
		a.Health = marshalJSON(msg.Health)
	}
	if msg.EffectiveConfig != nil {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(msg.EffectiveConfig)
		sum := sha256.Sum256(b)
		a.EffectiveConfigHash = sum[:]
	}
	if msg.PackageStatuses != nil {
		a.PackageStatuses = marshalJSON(msg.PackageStatuses)
	}
	if !a.Connected || a.Replica != c.s.cfg.ReplicaID || a.RemoteAddr != c.remote {
		a.ConnectedSince = c.since
	}
	a.Connected = msg.AgentDisconnect == nil
	a.Replica, a.RemoteAddr, a.Transport = c.s.cfg.ReplicaID, c.remote, c.transport
	a.LastSeen, a.SequenceNum = now, msg.SequenceNum
	a.CertSerial, a.CertNotAfter = c.certSerial, c.certNotAfter
	// A heartbeat that changes nothing but last_seen and the sequence
	// number is written at most every lastSeenWriteInterval: the registry's
	// last_seen is that coarse, and the single SQLite writer stays free for
	// trust changes.
	if !changed(before, *a) && now.Sub(c.persisted) < lastSeenWriteInterval {
		return needFull, nil
	}
	err := c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutAgent(ctx, *a) })
	if err == nil {
		c.persisted = now
	}
	return needFull, err
}

// lastSeenWriteInterval bounds how stale a registry's last_seen may be.
const lastSeenWriteInterval = 30 * time.Second

// changed reports whether anything but last_seen and the sequence number
// differs between two registry records.
func changed(a, b state.Agent) bool {
	return string(a.Description) != string(b.Description) || a.Capabilities != b.Capabilities ||
		string(a.Health) != string(b.Health) || string(a.EffectiveConfigHash) != string(b.EffectiveConfigHash) ||
		string(a.PackageStatuses) != string(b.PackageStatuses) || a.Connected != b.Connected ||
		a.Replica != b.Replica || a.RemoteAddr != b.RemoteAddr || a.Transport != b.Transport ||
		!a.ConnectedSince.Equal(b.ConnectedSince) || a.CertSerial != b.CertSerial ||
		strings.Join(a.CustomCapabilities, ",") != strings.Join(b.CustomCapabilities, ",")
}

func csrOf(msg *protobufs.AgentToServer) []byte {
	if r := msg.GetConnectionSettingsRequest().GetOpamp().GetCertificateRequest(); r != nil && len(r.Csr) > 0 {
		return r.Csr
	}
	return nil
}

func marshalJSON(m proto.Message) []byte {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}

func badRequest(msg string) *protobufs.ServerErrorResponse {
	return &protobufs.ServerErrorResponse{
		Type:         protobufs.ServerErrorResponseType_ServerErrorResponseType_BadRequest,
		ErrorMessage: msg,
	}
}

func retryLater(after time.Duration, msg string) *protobufs.ServerErrorResponse {
	return &protobufs.ServerErrorResponse{
		Type:         protobufs.ServerErrorResponseType_ServerErrorResponseType_Unavailable,
		ErrorMessage: msg,
		Details: &protobufs.ServerErrorResponse_RetryInfo{
			RetryInfo: &protobufs.RetryInfo{RetryAfterNanoseconds: uint64(after.Nanoseconds())},
		},
	}
}
