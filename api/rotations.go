package api

import (
	"errors"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

// RotationRequest is the body of POST /api/v1/rotations: which agents to
// rotate (exactly one of UIDs, Labels or All) and how fast.
type RotationRequest struct {
	UIDs   []string          `json:"uids,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	All    bool              `json:"all,omitempty"`
	// Rate is rotations per second for this batch; 0 means the fleet rate.
	Rate float64 `json:"rate,omitempty"`
	// Destination is the certificate to rotate: "opamp" (default) or a
	// configured destination.
	Destination string `json:"destination,omitempty"`
}

// RotationStatus is a batch and where each of its rotations is.
type RotationStatus struct {
	ID          string         `json:"id"`
	RequestedBy string         `json:"requested_by"`
	Selector    string         `json:"selector"`
	Rate        float64        `json:"rate"`
	CreatedAt   time.Time      `json:"created_at"`
	Total       int            `json:"total"`
	Skipped     []string       `json:"skipped,omitempty"` // agents already rotating when requested
	States      map[string]int `json:"states"`
	Done        bool           `json:"done"` // nothing left pending, requested or offered
	Rotations   []RotationView `json:"rotations"`
}

// RotationView is one agent's rotation.
type RotationView struct {
	UID      string `json:"uid"`
	State    string `json:"state"`
	Method   string `json:"method,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
}

// createRotation: POST /api/v1/rotations. The batch, its rotations and the
// audit entry commit together; the server then works through them at the
// batch's rate.
func (a *API) createRotation(w http.ResponseWriter, r *http.Request) {
	var req RotationRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	chosen := 0
	for _, b := range []bool{len(req.UIDs) > 0, len(req.Labels) > 0, req.All} {
		if b {
			chosen++
		}
	}
	if chosen != 1 || req.Rate < 0 {
		writeError(w, http.StatusBadRequest, "give exactly one of uids, labels or all (and a non-negative rate)")
		return
	}
	if req.Destination == "" {
		req.Destination = "opamp"
	}
	if req.Destination != "opamp" && !slices.Contains(a.cfg.Destinations, req.Destination) {
		writeError(w, http.StatusBadRequest, "destination %q is not configured (configured: opamp %s)", req.Destination, strings.Join(a.cfg.Destinations, " "))
		return
	}
	p := principal(r.Context())
	now := a.cfg.Clock()
	batch := state.RotationBatch{ID: uuid.Must(uuid.NewV7()).String(), RequestedBy: p.Actor(), Selector: selector(req), Rate: req.Rate, CreatedAt: now}
	var skipped []string
	err := a.cfg.Store.Update(r.Context(), func(tx *state.Tx) error {
		uids, err := a.selectAgents(r, tx, req)
		if err != nil {
			return err
		}
		for _, uid := range uids {
			rot := state.Rotation{ID: uuid.Must(uuid.NewV7()).String(), BatchID: batch.ID, UID: uid, Destination: req.Destination,
				Reason: "operator", State: state.RotationPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now}
			if _, err := tx.OpenRotation(r.Context(), uid, req.Destination); err == nil {
				skipped = append(skipped, uid)
				continue
			}
			if err := tx.PutRotation(r.Context(), rot); err != nil {
				return err
			}
			batch.Total++
		}
		if err := tx.InsertRotationBatch(r.Context(), batch); err != nil {
			return err
		}
		_, err = a.cfg.Audit.Append(r.Context(), tx, audit.Record{Actor: p.Actor(), Action: "cert.rotation_request", Subject: batch.ID,
			Details: map[string]any{"selector": batch.Selector, "rate": req.Rate, "destination": req.Destination,
				"agents": batch.Total, "skipped_already_rotating": len(skipped)}})
		return err
	})
	var nf *notFoundError
	switch {
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, "%s", nf.msg)
		return
	case err != nil:
		a.log.Error("create rotation", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	st, err := a.rotationStatus(r, batch.ID)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
		return
	}
	st.Skipped = skipped
	writeJSON(w, http.StatusCreated, st)
}

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

func (a *API) selectAgents(r *http.Request, tx *state.Tx, req RotationRequest) ([]string, error) {
	if len(req.UIDs) > 0 {
		for _, uid := range req.UIDs {
			if _, err := tx.Agent(r.Context(), uid); errors.Is(err, state.ErrNotFound) {
				return nil, &notFoundError{msg: "no agent " + uid}
			} else if err != nil {
				return nil, err
			}
		}
		return req.UIDs, nil
	}
	agents, err := tx.Agents(r.Context(), state.AgentFilter{Labels: req.Labels})
	if err != nil {
		return nil, err
	}
	uids := make([]string, 0, len(agents))
	for _, ag := range agents {
		uids = append(uids, ag.UID)
	}
	return uids, nil
}

func selector(req RotationRequest) string {
	sel := selectorOf(req)
	if req.Destination != "" && req.Destination != "opamp" {
		sel += " destination:" + req.Destination
	}
	return sel
}

func selectorOf(req RotationRequest) string {
	switch {
	case req.All:
		return "all"
	case len(req.Labels) > 0:
		parts := make([]string, 0, len(req.Labels))
		for k, v := range req.Labels {
			parts = append(parts, k+"="+v)
		}
		sort.Strings(parts)
		return "labels:" + strings.Join(parts, ",")
	default:
		return "uids:" + strings.Join(req.UIDs, ",")
	}
}

// getRotation: GET /api/v1/rotations/{id}
func (a *API) getRotation(w http.ResponseWriter, r *http.Request) {
	st, err := a.rotationStatus(r, r.PathValue("id"))
	switch {
	case errors.Is(err, state.ErrNotFound):
		writeError(w, http.StatusNotFound, "no rotation batch %s", r.PathValue("id"))
	case err != nil:
		a.log.Error("get rotation", "err", err)
		writeError(w, http.StatusServiceUnavailable, "state store unavailable")
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

func (a *API) rotationStatus(r *http.Request, id string) (RotationStatus, error) {
	var (
		b    state.RotationBatch
		rots []state.Rotation
	)
	err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
		if b, err = tx.RotationBatch(r.Context(), id); err != nil {
			return err
		}
		rots, err = tx.BatchRotations(r.Context(), id)
		return err
	})
	if err != nil {
		return RotationStatus{}, err
	}
	st := RotationStatus{ID: b.ID, RequestedBy: b.RequestedBy, Selector: b.Selector, Rate: b.Rate, CreatedAt: b.CreatedAt,
		Total: b.Total, States: map[string]int{}, Done: true, Rotations: make([]RotationView, 0, len(rots))}
	for _, rot := range rots {
		st.States[string(rot.State)]++
		switch rot.State {
		case state.RotationPending, state.RotationRequested, state.RotationOffered:
			st.Done = false
		}
		st.Rotations = append(st.Rotations, RotationView{UID: rot.UID, State: string(rot.State), Method: rot.Method,
			Serial: rot.Serial, Attempts: rot.Attempts, Error: rot.Error})
	}
	return st, nil
}
