package opamp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trustamp/trustamp/ca"
	"github.com/trustamp/trustamp/opamp/extension"
	"github.com/trustamp/trustamp/storage/state"
)

// OpAMPDestination names the OpAMP connection among certificate destinations.
const OpAMPDestination = extension.OpAMPDestination

// Destination is a connection other than OpAMP for which agents get a client
// certificate: own_metrics, own_traces, own_logs, or another name (sent in
// other_connections).
type Destination struct {
	Endpoint string
	Headers  map[string]string
	// Profile names the certificate profile; empty means Config.Profile.
	Profile string
}

// profileFor is the certificate profile of a destination.
func (s *Server) profileFor(dest string) ca.Profile {
	if d, ok := s.cfg.Destinations[dest]; ok && d.Profile != "" {
		if p, ok := s.cfg.Profiles[d.Profile]; ok {
			if p.Name == "" {
				p.Name = d.Profile
			}
			return p.WithDefaults()
		}
	}
	return s.profile()
}

// offerFor builds the offer for an issued certificate and its destination.
// Every distinct offer gets a distinct hash: opamp-go skips a hash it has
// seen, and agents name offers by it in ConnectionSettingsStatus.
func (s *Server) offerFor(dest string, iss *ca.Issued, keyPEM []byte) *protobufs.ConnectionSettingsOffers {
	hash := sha256.Sum256(iss.CertPEM)
	cert := &protobufs.TLSCertificate{Cert: iss.CertPEM, PrivateKey: keyPEM, CaCert: s.cfg.CA.RootPEM()}
	offer := &protobufs.ConnectionSettingsOffers{Hash: hash[:]}
	if dest == OpAMPDestination {
		offer.Opamp = &protobufs.OpAMPConnectionSettings{
			Certificate:              cert,
			HeartbeatIntervalSeconds: uint64(s.cfg.HeartbeatInterval / time.Second),
		}
		return offer
	}
	d := s.cfg.Destinations[dest]
	tel := &protobufs.TelemetryConnectionSettings{DestinationEndpoint: d.Endpoint, Headers: headers(d.Headers), Certificate: cert}
	switch dest {
	case "own_metrics":
		offer.OwnMetrics = tel
	case "own_traces":
		offer.OwnTraces = tel
	case "own_logs":
		offer.OwnLogs = tel
	default:
		offer.OtherConnections = map[string]*protobufs.OtherConnectionSettings{
			dest: {DestinationEndpoint: d.Endpoint, Headers: headers(d.Headers), Certificate: cert},
		}
	}
	return offer
}

func headers(m map[string]string) *protobufs.Headers {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := &protobufs.Headers{}
	for _, k := range keys {
		h.Headers = append(h.Headers, &protobufs.Header{Key: k, Value: m[k]})
	}
	return h
}

// ensureDestinations opens an initial rotation for every configured
// destination the agent can use and has no certificate (or rotation) for.
// It runs once per connection.
func (c *conn) ensureDestinations(ctx context.Context, capabilities uint64) error {
	if len(c.s.cfg.Destinations) == 0 {
		return nil
	}
	now := c.s.cfg.Clock()
	uid := c.uid.String()
	return c.s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		certs, err := tx.Certificates(ctx, state.CertFilter{UID: uid, Statuses: []state.CertStatus{state.CertOffered, state.CertConfirmed}})
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, ct := range certs {
			if ct.NotAfter.After(now) {
				have[ct.Destination] = true
			}
		}
		for name := range c.s.cfg.Destinations {
			if have[name] || capabilities&uint64(extension.DestinationCapability(name)) == 0 {
				continue
			}
			if _, err := tx.OpenRotation(ctx, uid, name); err == nil {
				continue
			} else if !errors.Is(err, state.ErrNotFound) {
				return err
			}
			if err := tx.PutRotation(ctx, state.Rotation{ID: uuid.Must(uuid.NewV7()).String(), UID: uid, Destination: name,
				Reason: "initial", State: state.RotationPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
}

// destinationCSR handles an agent's CSR for a destination, sent as an
// io.trustamp.csr CustomMessage of type "csr".
func (c *conn) destinationCSR(ctx context.Context, cm *protobufs.CustomMessage, resp *protobufs.ServerToAgent) {
	var m extension.CSRMessage
	if err := json.Unmarshal(cm.Data, &m); err != nil || m.CSR == "" {
		resp.ErrorResponse = badRequest("io.trustamp.csr reply: want JSON {destination, csr}")
		return
	}
	if _, ok := c.s.cfg.Destinations[m.Destination]; !ok {
		resp.ErrorResponse = badRequest(fmt.Sprintf("io.trustamp.csr reply: no destination %q is configured", m.Destination))
		return
	}
	c.offerCertificateFor(ctx, m.Destination, []byte(m.CSR), resp)
}

// attributes flattens an agent description's string attributes (identifying
// and non-identifying) for SAN templates.
func attributes(d *protobufs.AgentDescription) map[string]string {
	out := map[string]string{}
	for _, kv := range append(d.GetNonIdentifyingAttributes(), d.GetIdentifyingAttributes()...) {
		if v, ok := kv.GetValue().GetValue().(*protobufs.AnyValue_StringValue); ok {
			out[kv.Key] = v.StringValue
		}
	}
	return out
}

// attributesJSON is attributes for a description as the registry stores it.
func attributesJSON(raw []byte) map[string]string {
	var d protobufs.AgentDescription
	if len(raw) == 0 || protojson.Unmarshal(raw, &d) != nil {
		return map[string]string{}
	}
	return attributes(&d)
}

// attributes returns what the agent on c has reported about itself.
func (c *conn) attributes() map[string]string {
	if c.agent != nil {
		return attributesJSON(c.agent.Description)
	}
	return c.enrollAttrs
}
