package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trustamp/trustamp/storage/state"
)

// Agent is the API's view of a registry record.
type Agent struct {
	UID                 string            `json:"uid"`
	Labels              map[string]string `json:"labels"`
	Description         json.RawMessage   `json:"description,omitempty"`
	Capabilities        uint64            `json:"capabilities"`
	Health              json.RawMessage   `json:"health,omitempty"`
	EffectiveConfigHash string            `json:"effective_config_hash,omitempty"`
	PackageStatuses     json.RawMessage   `json:"package_statuses,omitempty"`
	Connected           bool              `json:"connected"`
	Replica             string            `json:"replica,omitempty"`
	RemoteAddr          string            `json:"remote_addr,omitempty"`
	Transport           string            `json:"transport,omitempty"`
	ConnectedSince      *time.Time        `json:"connected_since,omitempty"`
	LastSeen            *time.Time        `json:"last_seen,omitempty"`
	SequenceNum         uint64            `json:"sequence_num"`
	CertSerial          string            `json:"cert_serial,omitempty"`
	CertNotAfter        *time.Time        `json:"cert_not_after,omitempty"`
	EnrolledAt          *time.Time        `json:"enrolled_at,omitempty"`
	EnrollmentToken     string            `json:"enrollment_token,omitempty"`
	// Quarantine is set while the identity is quarantined.
	Quarantine *Quarantine `json:"quarantine,omitempty"`
	// Packages are what the agent was offered per package type, the rule
	// that chose it, and how far it got (GET /api/v1/agents/{uid} only).
	Packages []AgentPackage `json:"packages,omitempty"`
	// EncodeError is set when the agent's description, health or package
	// statuses could not be served (too large or not encodable, e.g. a row
	// stored before ingest limits existed): those fields are left out and
	// the rest of the record is served.
	EncodeError string `json:"encode_error,omitempty"`
}

// encodeAgent encodes one agent on its own, so that no row can break a
// listing: agent-reported fields over the state store's backstop limits
// (rows stored before they existed), or that fail to encode, are replaced by
// an EncodeError naming why.
func encodeAgent(v Agent) json.RawMessage {
	var why string
	for name, f := range map[string]json.RawMessage{"description": v.Description, "health": v.Health, "package_statuses": v.PackageStatuses} {
		if err := state.CheckAgentJSON(v.UID, name, f); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		b, err := json.Marshal(v)
		if err == nil {
			return b
		}
		why = err.Error()
	}
	v.Description, v.Health, v.PackageStatuses = nil, nil, nil
	v.EncodeError = "agent-reported fields not served: " + why
	b, err := json.Marshal(v)
	if err != nil { // cannot happen: what is left is server-made
		b, _ = json.Marshal(map[string]string{"uid": v.UID, "encode_error": err.Error()})
	}
	return b
}

func agentView(a state.Agent) Agent {
	v := Agent{
		UID: a.UID, Labels: a.Labels, Capabilities: a.Capabilities, Connected: a.Connected,
		Replica: a.Replica, RemoteAddr: a.RemoteAddr, Transport: a.Transport, SequenceNum: a.SequenceNum,
		CertSerial: a.CertSerial, EnrollmentToken: a.TokenID,
		ConnectedSince: timePtr(a.ConnectedSince), LastSeen: timePtr(a.LastSeen),
		CertNotAfter: timePtr(a.CertNotAfter), EnrolledAt: timePtr(a.EnrolledAt),
	}
	if len(a.EffectiveConfigHash) > 0 {
		v.EffectiveConfigHash = hexString(a.EffectiveConfigHash)
	}
	for dst, src := range map[*json.RawMessage]json.RawMessage{&v.Description: a.Description, &v.Health: a.Health, &v.PackageStatuses: a.PackageStatuses} {
		if len(src) > 0 && string(src) != "{}" {
			*dst = src
		}
	}
	return v
}

// listAgents: GET /api/v1/agents?label=k=v&connected=true&expiring_within=24h
func (a *API) listAgents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f state.AgentFilter
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			writeError(w, http.StatusBadRequest, "label filter %q: want key=value", l)
			return
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	if c := q.Get("connected"); c != "" {
		b, err := strconv.ParseBool(c)
		if err != nil {
			writeError(w, http.StatusBadRequest, "connected=%q: want true or false", c)
			return
		}
		f.Connected = &b
	}
	if e := q.Get("expiring_within"); e != "" {
		d, err := time.ParseDuration(e)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "expiring_within=%q: want a positive duration such as 24h", e)
			return
		}
		f.CertExpiringBefore = a.cfg.Clock().Add(d)
	}
	var (
		agents      []state.Agent
		quarantines []state.Quarantine
	)
	err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
		if agents, err = tx.Agents(r.Context(), f); err != nil {
			return err
		}
		quarantines, err = tx.Quarantines(r.Context())
		return err
	})
	if err != nil {
		a.log.Error("list agents", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	held := make(map[string]state.Quarantine, len(quarantines))
	for _, q := range quarantines {
		held[q.UID] = q
	}
	out := make([]json.RawMessage, 0, len(agents))
	for _, ag := range agents {
		v := agentView(ag)
		if q, ok := held[ag.UID]; ok {
			v.Quarantine = quarantineView(q)
		}
		out = append(out, encodeAgent(v))
	}
	writeJSON(w, http.StatusOK, out)
}

// getAgent: GET /api/v1/agents/{uid}
func (a *API) getAgent(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	var (
		ag          state.Agent
		q           state.Quarantine
		quarantined bool
		pkgs        []state.AgentPackage
	)
	err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
		if ag, err = tx.Agent(r.Context(), uid); err != nil {
			return err
		}
		pkgs, err = tx.AgentPackages(r.Context(), uid, "", "")
		if err != nil {
			return err
		}
		q, err = tx.QuarantineOf(r.Context(), uid)
		quarantined = err == nil
		if errors.Is(err, state.ErrNotFound) {
			err = nil
		}
		return err
	})
	switch {
	case errors.Is(err, state.ErrNotFound):
		writeError(w, http.StatusNotFound, "no agent %s", uid)
	case err != nil:
		a.log.Error("get agent", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
	default:
		v := agentView(ag)
		if quarantined {
			v.Quarantine = quarantineView(q)
		}
		for _, p := range pkgs {
			v.Packages = append(v.Packages, agentPackageView(p))
		}
		writeJSON(w, http.StatusOK, encodeAgent(v))
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
