package api

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/trustamp/trustamp/release"
	"github.com/trustamp/trustamp/storage/state"
)

// Releases is what the API needs from the release service.
type Releases interface {
	AddPublisher(ctx context.Context, name string, publicKeyPEM []byte, types []string, actor string) (state.Publisher, error)
	Publish(ctx context.Context, p release.Publish, artifact io.Reader) (state.Release, error)
	List(ctx context.Context, f state.ReleaseFilter) ([]state.Release, error)
	Yank(ctx context.Context, typ, version, reason, actor string) ([]state.Release, error)
	Promote(ctx context.Context, typ, version string, selector map[string]string, actor string) (state.Pin, error)
	Pins(ctx context.Context) ([]state.Pin, error)
	Rollout(ctx context.Context, typ, version string) (release.Rollout, error)
}

// SignatureHeader carries the release's Sigstore bundle, base64, on
// POST /api/v1/packages (the body is the artifact itself, streamed).
const SignatureHeader = "Trustamp-Signature-Bundle"

// PublisherRequest is the body of POST /api/v1/publishers.
type PublisherRequest struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"` // PEM
	Types     []string `json:"types,omitempty"`
}

// Publisher is a trusted publisher as listed.
type Publisher struct {
	Name    string    `json:"name"`
	KeyHint string    `json:"key_hint"`
	Types   []string  `json:"types"`
	AddedAt time.Time `json:"added_at"`
	AddedBy string    `json:"added_by"`
}

// Release is a published release as listed.
type Release struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Version     string    `json:"version"`
	Platform    string    `json:"platform"`
	SHA256      string    `json:"sha256"`
	Size        int64     `json:"size"`
	Publisher   string    `json:"publisher"`
	PublishedAt time.Time `json:"published_at"`
	PublishedBy string    `json:"published_by"`
	State       string    `json:"state"`
	StateReason string    `json:"state_reason,omitempty"`
}

func releaseView(r state.Release) Release {
	return Release{ID: r.ID, Type: r.Type, Version: r.Version, Platform: r.Platform, SHA256: r.SHA256, Size: r.Size,
		Publisher: r.Publisher, PublishedAt: r.PublishedAt, PublishedBy: r.PublishedBy, State: string(r.State), StateReason: r.StateReason}
}

// YankRequest is the body of POST /api/v1/packages/{type}/{version}/yank.
type YankRequest struct {
	Reason string `json:"reason"`
}

func (a *API) addPublisher(w http.ResponseWriter, r *http.Request) {
	var req PublisherRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	p, err := a.cfg.Releases.AddPublisher(r.Context(), req.Name, []byte(req.PublicKey), req.Types, principal(r.Context()).Actor())
	if a.releaseError(w, "add publisher", err) {
		return
	}
	writeJSON(w, http.StatusCreated, Publisher{Name: p.Name, KeyHint: p.KeyHint, Types: nonNilStrings(p.Types), AddedAt: p.AddedAt, AddedBy: p.AddedBy})
}

func (a *API) listPublishers(w http.ResponseWriter, r *http.Request) {
	var ps []state.Publisher
	err := a.cfg.Store.View(r.Context(), func(tx *state.Tx) (err error) {
		ps, err = tx.Publishers(r.Context(), false)
		return err
	})
	if a.releaseError(w, "list publishers", err) {
		return
	}
	out := make([]Publisher, 0, len(ps))
	for _, p := range ps {
		out = append(out, Publisher{Name: p.Name, KeyHint: p.KeyHint, Types: nonNilStrings(p.Types), AddedAt: p.AddedAt, AddedBy: p.AddedBy})
	}
	writeJSON(w, http.StatusOK, out)
}

// publish: POST /api/v1/packages?type=&version=&platform=, the artifact as
// the body (streamed to blob storage, never buffered whole), its bundle in
// the Trustamp-Signature-Bundle header.
func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.ContentLength > a.cfg.MaxUploadBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "artifact of %d bytes is larger than %d bytes (admin.max_upload_bytes)", r.ContentLength, a.cfg.MaxUploadBytes)
		return
	}
	bundle, err := base64.StdEncoding.DecodeString(r.Header.Get(SignatureHeader))
	if err != nil || len(bundle) == 0 {
		writeError(w, http.StatusBadRequest, "header %s: the release's Sigstore bundle, base64", SignatureHeader)
		return
	}
	rel, err := a.cfg.Releases.Publish(r.Context(), release.Publish{Type: q.Get("type"), Version: q.Get("version"),
		Platform: q.Get("platform"), Bundle: bundle, Size: r.ContentLength, Actor: principal(r.Context()).Actor()},
		http.MaxBytesReader(w, r.Body, a.cfg.MaxUploadBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "artifact larger than %d bytes (admin.max_upload_bytes)", a.cfg.MaxUploadBytes)
		return
	}
	if a.releaseError(w, "publish", err) {
		return
	}
	writeJSON(w, http.StatusCreated, releaseView(rel))
}

func (a *API) listPackages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rs, err := a.cfg.Releases.List(r.Context(), state.ReleaseFilter{Type: q.Get("type"), Version: q.Get("version"), Platform: q.Get("platform")})
	if a.releaseError(w, "list packages", err) {
		return
	}
	out := make([]Release, 0, len(rs))
	for _, rel := range rs {
		out = append(out, releaseView(rel))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) yank(w http.ResponseWriter, r *http.Request) {
	var req YankRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	rs, err := a.cfg.Releases.Yank(r.Context(), r.PathValue("type"), r.PathValue("version"), req.Reason, principal(r.Context()).Actor())
	if a.releaseError(w, "yank", err) {
		return
	}
	out := make([]Release, 0, len(rs))
	for _, rel := range rs {
		out = append(out, releaseView(rel))
	}
	writeJSON(w, http.StatusOK, out)
}

// PromoteRequest is the body of POST /api/v1/packages/{type}/{version}/promote.
type PromoteRequest struct {
	// Labels select the agents the pin applies to; empty pins the type's
	// default channel.
	Labels map[string]string `json:"labels,omitempty"`
}

// Pin is a version assigned to the agents of a type whose labels match.
type Pin struct {
	Type     string    `json:"type"`
	Selector string    `json:"selector"`
	Version  string    `json:"version"`
	PinnedAt time.Time `json:"pinned_at"`
	PinnedBy string    `json:"pinned_by"`
}

func pinView(p state.Pin) Pin {
	return Pin{Type: p.Type, Selector: p.Selector, Version: p.Version, PinnedAt: p.PinnedAt, PinnedBy: p.PinnedBy}
}

// AgentPackage is what an agent was offered for one package type and how
// far it got.
type AgentPackage struct {
	UID       string    `json:"uid"`
	Type      string    `json:"type"`
	Version   string    `json:"version"`
	SHA256    string    `json:"sha256"`
	State     string    `json:"state"`
	Message   string    `json:"message,omitempty"`
	Rule      string    `json:"rule"`
	Downgrade bool      `json:"downgrade"`
	OfferedAt time.Time `json:"offered_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func agentPackageView(p state.AgentPackage) AgentPackage {
	return AgentPackage{UID: p.UID, Type: p.Type, Version: p.Version, SHA256: p.SHA256, State: p.State, Message: p.Message,
		Rule: p.Rule, Downgrade: p.Downgrade, OfferedAt: p.OfferedAt, UpdatedAt: p.UpdatedAt}
}

// Rollout is GET /api/v1/packages/{type}/{version}/status.
type Rollout struct {
	Type     string         `json:"type"`
	Version  string         `json:"version"`
	Releases []Release      `json:"releases"`
	Counts   map[string]int `json:"counts"`
	Failures []AgentPackage `json:"failures"`
}

func (a *API) promote(w http.ResponseWriter, r *http.Request) {
	var req PromoteRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	p, err := a.cfg.Releases.Promote(r.Context(), r.PathValue("type"), r.PathValue("version"), req.Labels, principal(r.Context()).Actor())
	if a.releaseError(w, "promote", err) {
		return
	}
	writeJSON(w, http.StatusOK, pinView(p))
}

func (a *API) listPins(w http.ResponseWriter, r *http.Request) {
	ps, err := a.cfg.Releases.Pins(r.Context())
	if a.releaseError(w, "list pins", err) {
		return
	}
	out := make([]Pin, 0, len(ps))
	for _, p := range ps {
		out = append(out, pinView(p))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) rolloutStatus(w http.ResponseWriter, r *http.Request) {
	ro, err := a.cfg.Releases.Rollout(r.Context(), r.PathValue("type"), r.PathValue("version"))
	if a.releaseError(w, "rollout status", err) {
		return
	}
	out := Rollout{Type: ro.Type, Version: ro.Version, Counts: ro.Counts, Releases: []Release{}, Failures: []AgentPackage{}}
	for _, rel := range ro.Releases {
		out.Releases = append(out.Releases, releaseView(rel))
	}
	for _, f := range ro.Failures {
		out.Failures = append(out.Failures, agentPackageView(f))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) releaseError(w http.ResponseWriter, what string, err error) bool {
	return a.domainError(w, what, err, "state or blob storage unavailable",
		errStatus{release.ErrInvalid, http.StatusBadRequest}, errStatus{release.ErrHashMismatch, http.StatusBadRequest},
		errStatus{release.ErrUntrusted, http.StatusForbidden}, errStatus{release.ErrWrongType, http.StatusForbidden})
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
