package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/trustamp/trustamp/revocation"
	"github.com/trustamp/trustamp/storage/state"
)

// Revoker is what the API needs from the revocation service.
type Revoker interface {
	Revoke(ctx context.Context, req revocation.Request) (revocation.Result, error)
	Undo(ctx context.Context, serial, actor, note string) (state.Revocation, error)
	Release(ctx context.Context, uid, actor, note string) (state.Quarantine, error)
	Report(ctx context.Context, from, to time.Time) (revocation.Report, error)
}

// RevocationRequest is the body of POST /api/v1/revocations: agents (by uid
// or by labels, each revoked as a whole and quarantined) and single
// certificates (by serial), with a required RFC 5280 reason.
type RevocationRequest struct {
	UIDs    []string          `json:"uids,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Serials []string          `json:"serials,omitempty"`
	Reason  string            `json:"reason"`
	Note    string            `json:"note,omitempty"`
}

// UndoRequest is the body of POST /api/v1/revocations/undo.
type UndoRequest struct {
	Serial string `json:"serial"`
	Note   string `json:"note,omitempty"`
}

// UndoResponse says what an undo lifted.
type UndoResponse struct {
	Serial   string    `json:"serial"`
	UID      string    `json:"uid"`
	Reason   string    `json:"reason"`
	UndoneAt time.Time `json:"undone_at"`
}

// ReleaseRequest is the body of POST /api/v1/agents/{uid}/release.
type ReleaseRequest struct {
	Note string `json:"note"`
}

// Quarantine is an agent's quarantine, as listed with the agent.
type Quarantine struct {
	Reason    string    `json:"reason"`
	Note      string    `json:"note,omitempty"`
	Actor     string    `json:"actor"`
	RequestID string    `json:"request_id"`
	Since     time.Time `json:"since"`
}

func quarantineView(q state.Quarantine) *Quarantine {
	return &Quarantine{Reason: q.Reason, Note: q.Note, Actor: q.Actor, RequestID: q.RequestID, Since: q.Since}
}

// createRevocation: POST /api/v1/revocations. It answers once the
// revocation is durable, in force for handshakes, live connections using it
// are closed on this replica and the CRL lists it.
func (a *API) createRevocation(w http.ResponseWriter, r *http.Request) {
	var req RevocationRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	if len(req.UIDs) > 0 && len(req.Labels) > 0 {
		writeError(w, http.StatusBadRequest, "give uids or labels, not both")
		return
	}
	uids := req.UIDs
	if len(req.Labels) > 0 {
		var agents []state.Agent
		err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
			agents, err = tx.Agents(r.Context(), state.AgentFilter{Labels: req.Labels})
			return err
		})
		if err != nil {
			a.log.Error("select agents to revoke", "err", err)
			writeError(w, http.StatusServiceUnavailable, "state store unavailable")
			return
		}
		if len(agents) == 0 {
			writeError(w, http.StatusNotFound, "no agent matches the selector %s", selectorOf(RotationRequest{Labels: req.Labels}))
			return
		}
		for _, ag := range agents {
			uids = append(uids, ag.UID)
		}
	}
	res, err := a.cfg.Revocations.Revoke(r.Context(), revocation.Request{UIDs: uids, Serials: req.Serials,
		Reason: req.Reason, Note: req.Note, Actor: principal(r.Context()).Actor()})
	if a.revocationError(w, "revoke", err) {
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// undoRevocation: POST /api/v1/revocations/undo (certificateHold only).
func (a *API) undoRevocation(w http.ResponseWriter, r *http.Request) {
	var req UndoRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	rev, err := a.cfg.Revocations.Undo(r.Context(), req.Serial, principal(r.Context()).Actor(), req.Note)
	if a.revocationError(w, "undo revocation", err) {
		return
	}
	writeJSON(w, http.StatusOK, UndoResponse{Serial: rev.Serial, UID: rev.UID, Reason: rev.Reason, UndoneAt: rev.UndoneAt})
}

// releaseAgent: POST /api/v1/agents/{uid}/release (role security).
func (a *API) releaseAgent(w http.ResponseWriter, r *http.Request) {
	var req ReleaseRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	q, err := a.cfg.Revocations.Release(r.Context(), r.PathValue("uid"), principal(r.Context()).Actor(), req.Note)
	if a.revocationError(w, "release", err) {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		UID        string      `json:"uid"`
		Released   bool        `json:"released"`
		Quarantine *Quarantine `json:"quarantine"`
	}{r.PathValue("uid"), true, quarantineView(q)})
}

// revocationReport: GET /api/v1/reports/revocations?from=&to= (RFC 3339 or
// a date; to defaults to now).
func (a *API) revocationReport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := a.cfg.Clock()
	from, err := ParseTime(q.Get("from"), now)
	if err != nil || q.Get("from") == "" {
		writeError(w, http.StatusBadRequest, "from=%q: want an RFC 3339 time, a date (2006-01-02) or a duration ago (24h)", q.Get("from"))
		return
	}
	to := now
	if s := q.Get("to"); s != "" {
		if to, err = ParseTime(s, now); err != nil {
			writeError(w, http.StatusBadRequest, "to=%q: want an RFC 3339 time, a date (2006-01-02) or a duration ago", s)
			return
		}
	}
	rep, err := a.cfg.Revocations.Report(r.Context(), from, to)
	if a.revocationError(w, "revocation report", err) {
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// ParseTime reads an RFC 3339 time, a date (midnight UTC), or a duration
// meaning that long before now.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, err
	}
	return now.Add(-d), nil
}

// revocationError writes the response for a failed revocation call and
// reports whether there was one.
func (a *API) revocationError(w http.ResponseWriter, what string, err error) bool {
	return a.domainError(w, what, err, "state store unavailable", errStatus{revocation.ErrInvalid, http.StatusBadRequest})
}

// errStatus maps a domain error to the HTTP status it is answered with.
type errStatus struct {
	err    error
	status int
}

// domainError answers err with the status of the first class it matches
// (then not found and conflict, which every domain shares), or logs it and
// answers 503 with unavailable: errors are translated here, at the edge, and
// an unexpected one never leaks its text. It reports whether there was one.
func (a *API) domainError(w http.ResponseWriter, what string, err error, unavailable string, classes ...errStatus) bool {
	if err == nil {
		return false
	}
	classes = append(classes, errStatus{state.ErrNotFound, http.StatusNotFound}, errStatus{state.ErrConflict, http.StatusConflict})
	for _, c := range classes {
		if errors.Is(err, c.err) {
			writeError(w, c.status, "%v", err)
			return true
		}
	}
	a.log.Error(what, "err", err)
	writeError(w, http.StatusServiceUnavailable, "%s failed: %s", what, unavailable)
	return true
}
