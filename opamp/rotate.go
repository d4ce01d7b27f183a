package opamp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/storage/state"
)

// CSRCapability is the custom capability through which trustamp asks an
// agent for a fresh CSR (OpAMP has no standard way for a server to do so);
// the contract is in package extension.
const CSRCapability = extension.CSRCapability

// Rotation methods, recorded per rotation.
const (
	methodCSRRequest = "csr-request"
	methodServerKey  = "server-key"
	methodAgentCSR   = "agent-csr"
)

// maxBackoff caps the retry delay of a stalled rotation.
const maxBackoff = time.Hour

// rotator schedules and drives rotations: it finds certificates past their
// renew point, and moves each open rotation forward with the means the agent
// supports, at a bounded fleet-wide rate.
type rotator struct {
	s     *Server
	fleet *rate.Limiter

	mu      sync.Mutex
	batches map[string]*rate.Limiter // per operator batch, when it set a rate
	agents  map[string]*rate.Limiter // agent-initiated CSRs, per agent
}

func newRotator(s *Server) *rotator {
	return &rotator{
		s:       s,
		fleet:   rate.NewLimiter(rate.Limit(s.cfg.RotationRate), max(1, int(s.cfg.RotationRate))),
		batches: map[string]*rate.Limiter{},
		agents:  map[string]*rate.Limiter{},
	}
}

// RunRotations schedules due certificates every ScanInterval and dispatches
// due rotations every second, until ctx ends. Ticks are injectable for
// tests; nil means real tickers.
func (s *Server) RunRotations(ctx context.Context) error {
	return s.rotation.run(ctx, nil, nil)
}

func (r *rotator) run(ctx context.Context, scan, dispatch <-chan time.Time) error {
	if scan == nil {
		t := time.NewTicker(r.s.cfg.ScanInterval)
		defer t.Stop()
		scan = t.C
	}
	if dispatch == nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		dispatch = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-scan:
			if err := r.schedule(ctx); err != nil && ctx.Err() == nil {
				r.s.log.Error("rotation scheduler", "err", err)
			}
		case <-dispatch:
			if err := r.dispatch(ctx); err != nil && ctx.Err() == nil {
				r.s.log.Error("rotation dispatcher", "err", err)
			}
		}
	}
}

// schedule opens a rotation for every confirmed certificate past its renew
// point. The unique index on open rotations makes concurrent schedulers (on
// other replicas) harmless.
func (r *rotator) schedule(ctx context.Context) error {
	now := r.s.cfg.Clock()
	var due []state.Certificate
	if err := r.s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		due, err = tx.CertificatesDue(ctx, now, 1000)
		return err
	}); err != nil {
		return err
	}
	for _, c := range due {
		rot := state.Rotation{ID: uuid.Must(uuid.NewV7()).String(), UID: c.UID, Destination: c.Destination, Reason: "scheduled",
			State: state.RotationPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now}
		err := r.s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, rot) })
		if err != nil && !errors.Is(err, state.ErrConflict) {
			return err
		}
	}
	return nil
}

// dispatch moves due rotations of agents connected here over WebSocket.
// Plain-HTTP agents are served on their next message (piggyback).
func (r *rotator) dispatch(ctx context.Context) error {
	now := r.s.cfg.Clock()
	var due []state.Rotation
	if err := r.s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		due, err = tx.DueRotations(ctx, now, 1000)
		return err
	}); err != nil {
		return err
	}
	// Each step waits on the store (and the agent's socket), so steps run
	// concurrently; the limiter, not the pool, bounds the rate. The round
	// ends before the next tick, so no rotation is dispatched twice.
	var g errgroup.Group
	g.SetLimit(dispatchWorkers)
	for _, rot := range due {
		c := r.s.conns.newest(rot.UID)
		if c == nil {
			continue
		}
		if err := r.wait(ctx, rot.BatchID); err != nil {
			break
		}
		g.Go(func() error {
			msg, err := r.advance(ctx, c, rot)
			if err != nil {
				r.s.log.Error("rotate", "uid", rot.UID, "rotation", rot.ID, "err", err)
				return nil
			}
			if msg != nil {
				if err := c.live.Send(ctx, msg); err != nil {
					r.s.log.Warn("push rotation", "uid", rot.UID, "err", err)
					return nil
				}
				r.s.metrics.Messages.WithLabelValues("out").Inc()
			}
			return nil
		})
	}
	g.Wait()
	return ctx.Err()
}

// dispatchWorkers bounds rotation steps in flight on one replica.
const dispatchWorkers = 64

// piggyback adds a due rotation's message to the reply to a plain-HTTP agent.
func (r *rotator) piggyback(ctx context.Context, c *conn, resp *protobufs.ServerToAgent) {
	dests := []string{OpAMPDestination}
	for name := range r.s.cfg.Destinations {
		dests = append(dests, name)
	}
	var (
		rot   state.Rotation
		found bool
	)
	err := r.s.cfg.Store.View(ctx, func(tx *state.Tx) error {
		for _, d := range dests {
			candidate, err := tx.OpenRotation(ctx, c.uid.String(), d)
			if errors.Is(err, state.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if candidate.State != state.RotationAwaitingAgent && !candidate.NextAttemptAt.After(r.s.cfg.Clock()) {
				rot, found = candidate, true
				return nil
			}
		}
		return nil
	})
	if err != nil || !found {
		return
	}
	if !r.fleet.Allow() {
		return // next poll
	}
	msg, err := r.advance(ctx, c, rot)
	if err != nil {
		r.s.log.Error("rotate", "uid", rot.UID, "rotation", rot.ID, "err", err)
		return
	}
	if msg != nil {
		resp.CustomMessage = msg.CustomMessage
		resp.ConnectionSettings = msg.ConnectionSettings
	}
}

func (r *rotator) wait(ctx context.Context, batchID string) error {
	if batchID != "" {
		if l := r.batchLimiter(ctx, batchID); l != nil {
			if err := l.Wait(ctx); err != nil {
				return err
			}
		}
	}
	return r.fleet.Wait(ctx)
}

func (r *rotator) batchLimiter(ctx context.Context, id string) *rate.Limiter {
	r.mu.Lock()
	l, ok := r.batches[id]
	r.mu.Unlock()
	if ok {
		return l
	}
	var b state.RotationBatch
	if err := r.s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) { b, err = tx.RotationBatch(ctx, id); return err }); err != nil {
		return nil
	}
	if b.Rate > 0 {
		l = rate.NewLimiter(rate.Limit(b.Rate), max(1, int(b.Rate)))
	}
	r.mu.Lock()
	r.batches[id] = l
	r.mu.Unlock()
	return l
}

// advance takes one step on a due rotation for the agent on c and returns
// the message that carries it, having recorded the new state first. An
// offer or request that timed out is marked stalled and retried.
func (r *rotator) advance(ctx context.Context, c *conn, rot state.Rotation) (*protobufs.ServerToAgent, error) {
	now := r.s.cfg.Clock()
	// A rotation whose request or offer timed out is stalled, and stays so
	// (visibly, in the API and metrics) while it is retried, until confirmed.
	stalled := rot.State == state.RotationStalled
	if rot.State == state.RotationRequested || rot.State == state.RotationOffered {
		stalled = true
		r.s.metrics.Rotations.WithLabelValues("stalled").Inc()
		rot.Error = fmt.Sprintf("%s not confirmed within %s (attempt %d)", rot.State, r.s.cfg.OfferTimeout, rot.Attempts)
	}
	next := func(s state.RotationState) state.RotationState {
		if stalled {
			return state.RotationStalled
		}
		return s
	}
	var agent state.Agent
	if err := r.s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) { agent, err = tx.Agent(ctx, rot.UID); return err }); err != nil {
		return nil, err
	}
	rot.Attempts++
	rot.UpdatedAt = now
	rot.NextAttemptAt = now.Add(r.backoff(rot.Attempts))
	uid := uuid.MustParse(rot.UID)
	dest := rot.Destination
	if dest == "" {
		dest = OpAMPDestination
	}
	accepts := protobufs.AgentCapabilities_AgentCapabilities_AcceptsOpAMPConnectionSettings
	if dest != OpAMPDestination {
		accepts = extension.DestinationCapability(dest)
	}
	profile := r.s.profileFor(PolicyAgent(agent), certView(&agent), dest)
	switch {
	case hasString(agent.CustomCapabilities, CSRCapability):
		rot.State, rot.Method = next(state.RotationRequested), methodCSRRequest
		if err := r.s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, rot) }); err != nil {
			return nil, err
		}
		data, _ := json.Marshal(extension.CSRMessage{Rotation: rot.ID, Reason: rot.Reason, Destination: dest})
		r.s.metrics.Rotations.WithLabelValues("requested").Inc()
		return &protobufs.ServerToAgent{InstanceUid: uid[:], CustomMessage: &protobufs.CustomMessage{
			Capability: CSRCapability, Type: extension.CSRRequestType, Data: data}}, nil

	case profile.ServerMadeKeys && agent.Capabilities&uint64(accepts) != 0:
		offer, serial, err := c.issueServerKey(ctx, &rot, next(state.RotationOffered), profile, attributesJSON(agent.Description))
		if err != nil {
			return nil, err
		}
		r.s.log.Info("rotation offered", "uid", rot.UID, "serial", serial, "method", methodServerKey)
		return &protobufs.ServerToAgent{InstanceUid: uid[:], ConnectionSettings: offer}, nil

	default:
		rot.State, rot.Method, rot.NextAttemptAt = state.RotationAwaitingAgent, "", time.Time{}
		rot.Error = "agent declares neither " + CSRCapability + " nor accepts server-made keys under profile " + profile.Name
		r.s.metrics.Rotations.WithLabelValues("awaiting-agent-renewal").Inc()
		return nil, r.s.cfg.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutRotation(ctx, rot) })
	}
}

func (r *rotator) backoff(attempts int) time.Duration {
	d := r.s.cfg.OfferTimeout
	for i := 1; i < attempts && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// allowAgentCSR rate-limits CSRs an agent sends on its own.
func (r *rotator) allowAgentCSR(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.agents[uid]
	if !ok {
		l = rate.NewLimiter(rate.Every(r.s.cfg.AgentCSRInterval), 3)
		r.agents[uid] = l
	}
	return l.Allow()
}

// settingsStatus records an agent's verdict on an offer, which it names by
// the offer's hash. FAILED stalls the rotation with the agent's message, to be
// retried with backoff. APPLIED confirms a certificate for another
// destination (an OpAMP certificate is confirmed by reconnecting with it).
func (r *rotator) settingsStatus(ctx context.Context, c *conn, st *protobufs.ConnectionSettingsStatus) {
	failed := st.Status == protobufs.ConnectionSettingsStatuses_ConnectionSettingsStatuses_FAILED
	applied := st.Status == protobufs.ConnectionSettingsStatuses_ConnectionSettingsStatuses_APPLIED
	if (!failed && !applied) || len(st.LastConnectionSettingsHash) == 0 {
		return
	}
	uid := c.uid.String()
	err := r.s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		cert, err := tx.CertificateByOfferHash(ctx, uid, st.LastConnectionSettingsHash)
		if errors.Is(err, state.ErrNotFound) || (err == nil && cert.Status != state.CertOffered) {
			return nil
		}
		if err != nil {
			return err
		}
		now := r.s.cfg.Clock()
		if applied {
			if cert.Destination == OpAMPDestination {
				return nil
			}
			if _, err := tx.ConfirmCertificate(ctx, cert.Serial, now); err != nil {
				return err
			}
			if err := r.s.confirmRotation(ctx, tx, cert.Serial); err != nil {
				return err
			}
			_, err := r.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "agent:" + uid, Action: "cert.confirm", Subject: cert.Serial,
				Details: map[string]any{"uid": uid, "destination": cert.Destination, "not_after": cert.NotAfter.Format(time.RFC3339)}})
			return err
		}
		rot, err := tx.RotationBySerial(ctx, cert.Serial)
		if errors.Is(err, state.ErrNotFound) || (err == nil && rot.State == state.RotationConfirmed) {
			return nil
		}
		if err != nil {
			return err
		}
		rot.State, rot.UpdatedAt = state.RotationStalled, now
		rot.Error = "agent reported FAILED: " + st.ErrorMessage
		rot.NextAttemptAt = now.Add(r.backoff(rot.Attempts))
		r.s.metrics.Rotations.WithLabelValues("stalled").Inc()
		if err := tx.PutRotation(ctx, rot); err != nil {
			return err
		}
		_, err = r.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "agent:" + uid, Action: "cert.offer_failed", Subject: cert.Serial,
			Details: map[string]any{"rotation": rot.ID, "destination": cert.Destination, "error": st.ErrorMessage}})
		return err
	})
	if err != nil {
		r.s.log.Error("record connection settings status", "uid", c.uid, "err", err)
	}
}

// issueServerKey issues a certificate with a server-made key for rot's agent,
// records it with the rotation and its audit entry, and returns the offer
// carrying the private key. The key exists only in memory and in the offer.
func (c *conn) issueServerKey(ctx context.Context, rot *state.Rotation, next state.RotationState, profile ca.Profile, attrs map[string]string) (*protobufs.ConnectionSettingsOffers, string, error) {
	dest := rot.Destination
	if dest == "" {
		dest = OpAMPDestination
	}
	uid := uuid.MustParse(rot.UID)
	start := time.Now()
	iss, keyPEM, err := c.s.cfg.CA.IssueAgentServerKey(ctx, uid, profile, attrs)
	if err != nil {
		return nil, "", err
	}
	offer := c.s.offerFor(dest, iss, keyPEM)
	rot.State, rot.Method, rot.Serial = next, methodServerKey, iss.Serial
	err = c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := c.s.recordIssued(ctx, tx, iss, rot.UID, dest, offer.Hash, true); err != nil {
			return err
		}
		if err := tx.PutRotation(ctx, *rot); err != nil {
			return err
		}
		_, err := c.s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: "system:rotation", Action: "cert.issue", Subject: iss.Serial,
			Details: issueDetails(iss, rot.UID, "", map[string]any{"rotation": rot.ID, "server_made_key": true, "reason": rot.Reason, "destination": dest})})
		return err
	})
	if err != nil {
		return nil, "", err
	}
	c.s.metrics.observeIssue(time.Since(start))
	c.s.metrics.Rotations.WithLabelValues("offered").Inc()
	return offer, iss.Serial, nil
}

// confirmRotation marks the rotation that offered serial confirmed, in the
// confirming transaction.
func (s *Server) confirmRotation(ctx context.Context, tx *state.Tx, serial string) error {
	rot, err := tx.RotationBySerial(ctx, serial)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rot.State, rot.UpdatedAt, rot.NextAttemptAt, rot.Error = state.RotationConfirmed, s.cfg.Clock(), time.Time{}, ""
	s.metrics.Rotations.WithLabelValues("confirmed").Inc()
	return tx.PutRotation(ctx, rot)
}

func hasString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
