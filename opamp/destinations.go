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
	"github.com/trustamp/trustamp/policies"
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

// profileFor is the certificate profile for agent a's next certificate for
// dest: the first certificate_profile policy rule that matches the agent
// and its current certificate, else the destination's configured profile,
// else Config.Profile. A rule naming a profile that is not configured
// cannot load (see CheckPolicies), so its profile is always there.
func (s *Server) profileFor(a policies.Agent, cur policies.Cert, dest string) ca.Profile {
	static := s.cfg.Profile
	if d, ok := s.cfg.Destinations[dest]; ok && d.Profile != "" {
		static = d.Profile
	}
	name := static
	cur.Profile, cur.Destination = static, dest
	if r := s.policies().Profile(a, cur, s.cfg.Clock()); r != nil {
		if s.knownProfile(r.Profile) {
			name = r.Profile
		} else {
			s.log.Error("policy names an unknown certificate profile; using the configured one", "rule", r.Ref(), "profile", r.Profile)
		}
	}
	p, ok := s.cfg.Profiles[name]
	if !ok {
		p = ca.Profile{}
	}
	if p.Name == "" {
		p.Name = name
	}
	return p.WithDefaults()
}

// CheckPolicies refuses a policy set whose certificate_profile rules name
// profiles the configuration does not define.
func (s *Server) CheckPolicies(set *policies.Set) error {
	known := []string{s.cfg.Profile}
	for name := range s.cfg.Profiles {
		if name != s.cfg.Profile {
			known = append(known, name)
		}
	}
	sort.Strings(known[1:])
	return set.CheckProfiles(known)
}

// knownProfile reports whether a profile name is configured (the default
// profile exists even when the configuration leaves it to the defaults).
func (s *Server) knownProfile(name string) bool {
	_, ok := s.cfg.Profiles[name]
	return ok || name == s.cfg.Profile
}

// policies is the policy set in force (nil: none).
func (s *Server) policies() *policies.Set {
	if s.cfg.Policies == nil {
		return nil
	}
	return s.cfg.Policies()
}

// certView is an agent's current OpAMP certificate as policies see it.
func certView(a *state.Agent) policies.Cert {
	if a == nil {
		return policies.Cert{}
	}
	return policies.Cert{Serial: a.CertSerial, NotAfter: a.CertNotAfter}
}

// policyAgent is this connection's agent as policies see it; while
// enrolling, what it has said so far and its token's labels.
func (c *conn) policyAgent() policies.Agent {
	if c.agent != nil {
		return PolicyAgent(*c.agent)
	}
	return agentView(state.Agent{UID: c.uid.String(), Labels: c.token.Labels}, c.enrollAttrs)
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
