package tokens

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/trustamp/trustamp/audit"
	"github.com/trustamp/trustamp/storage/state"
)

// Roles an admin token can hold.
const (
	// RoleAdmin runs the server: agents, certificates, rotations, packages,
	// policies, and tokens of every role but security.
	RoleAdmin = "admin"
	// RoleSecurity revokes, releases quarantines and mints security tokens.
	RoleSecurity = "security"
	// RoleRelease publishes and manages packages.
	RoleRelease = "release"
	// RoleAuditor reads.
	RoleAuditor = "auditor"
)

// Bounds of an enrollment token.
const (
	MaxEnrollmentTTL  = 30 * 24 * time.Hour
	MaxEnrollmentUses = 1_000_000
)

// Errors the service returns; the API maps them to 400 and 403. Unknown
// tokens are state.ErrNotFound, tokens revoked already state.ErrConflict.
var (
	// ErrInvalid: the request is malformed (a TTL out of range, a bad name).
	ErrInvalid = errors.New("tokens: invalid request")
	// ErrForbidden: the caller's role may not do this to that role's token
	// (separation of duties).
	ErrForbidden = errors.New("tokens: not allowed")
)

// ServiceConfig wires a Service.
type ServiceConfig struct {
	// Store and Audit are required.
	Store *state.Store
	Audit *audit.Log
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Service mints, lists and revokes enrollment and admin tokens. Every
// change is written with its audit entry in one transaction, and the
// separation of duties between roles is decided here, not by the caller.
type Service struct {
	cfg ServiceConfig
}

// NewService returns a Service.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Service{cfg: cfg}
}

// EnrollmentRequest asks for an enrollment token.
type EnrollmentRequest struct {
	// TTL is how long it is valid: (0, MaxEnrollmentTTL]. Zero means 1h.
	TTL time.Duration
	// Uses is how many agents may enroll with it: [1, MaxEnrollmentUses].
	// Zero means 1.
	Uses int
	// Labels become each enrolled agent's labels.
	Labels map[string]string
	// Actor is who asks, as audited.
	Actor string
}

var (
	labelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)
)

// CreateEnrollment mints an enrollment token; the secret is in the
// returned Token only.
func (s *Service) CreateEnrollment(ctx context.Context, req EnrollmentRequest) (Token, state.EnrollmentToken, error) {
	if req.TTL == 0 {
		req.TTL = time.Hour
	}
	if req.TTL < 0 || req.TTL > MaxEnrollmentTTL {
		return Token{}, state.EnrollmentToken{}, fmt.Errorf("%w: ttl %s: want a positive duration up to %s", ErrInvalid, req.TTL, MaxEnrollmentTTL)
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	if req.Uses < 0 || req.Uses > MaxEnrollmentUses {
		return Token{}, state.EnrollmentToken{}, fmt.Errorf("%w: uses %d: want 1 to %d", ErrInvalid, req.Uses, MaxEnrollmentUses)
	}
	for k, v := range req.Labels {
		if !labelPattern.MatchString(k) || len(v) > 256 {
			return Token{}, state.EnrollmentToken{}, fmt.Errorf("%w: label %q: keys are letters, digits and ._/- (max 63), values at most 256 bytes", ErrInvalid, k)
		}
	}
	tok, err := New(EnrollPrefix)
	if err != nil {
		return Token{}, state.EnrollmentToken{}, err
	}
	now := s.cfg.Clock()
	rec := state.EnrollmentToken{ID: tok.ID, Hash: tok.Hash, Labels: req.Labels, MaxUses: req.Uses,
		ExpiresAt: now.Add(req.TTL), CreatedAt: now, CreatedBy: req.Actor}
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertEnrollmentToken(ctx, rec); err != nil {
			return err
		}
		_, err := s.cfg.Audit.Append(ctx, tx, audit.Record{
			Actor: req.Actor, Action: "enroll_token.create", Subject: tok.ID,
			Details: map[string]any{"uses": req.Uses, "expires_at": rec.ExpiresAt.Format(time.RFC3339), "labels": rec.Labels},
		})
		return err
	})
	if err != nil {
		return Token{}, state.EnrollmentToken{}, fmt.Errorf("tokens: create enrollment token: %w", err)
	}
	return tok, rec, nil
}

// Enrollments lists every enrollment token, newest first (hashes are
// blanked: a listing never carries them).
func (s *Service) Enrollments(ctx context.Context) ([]state.EnrollmentToken, error) {
	var out []state.EnrollmentToken
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		out, err = tx.EnrollmentTokens(ctx)
		return err
	})
	for i := range out {
		out[i].Hash = nil
	}
	return out, err
}

// RevokeEnrollment revokes an enrollment token: from the commit on, no
// agent can enroll with it (agents enrolled with it keep their
// certificates; revoke those separately).
func (s *Service) RevokeEnrollment(ctx context.Context, id, actor, note string) (state.EnrollmentToken, error) {
	var out state.EnrollmentToken
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.RevokeEnrollmentToken(ctx, id, actor, s.cfg.Clock()); err != nil {
			return err
		}
		var err error
		if out, err = tx.EnrollmentTokenByID(ctx, id); err != nil {
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "enroll_token.revoke", Subject: id,
			Details: map[string]any{"note": note, "uses": out.Uses, "max_uses": out.MaxUses}})
		return err
	})
	if err != nil {
		return state.EnrollmentToken{}, fmt.Errorf("tokens: revoke enrollment token %s: %w", id, err)
	}
	out.Hash = nil
	return out, nil
}

// AdminRequest asks for an admin token.
type AdminRequest struct {
	// Name says whose token it is ("alice", "ci-release").
	Name string
	// Role is the new token's role.
	Role string
	// Actor is who asks, as audited, and ActorRole the role of the token
	// they asked with: it decides which roles they may mint (MayMint).
	Actor, ActorRole string
}

// MayMint reports whether a caller with role actor may mint a token with
// role: admin mints admin, release and auditor tokens; only security mints
// security tokens, so that the role that runs the fleet cannot give itself
// the power to lift the quarantines the security team sets. The first
// security token is minted on the server's host (BootstrapSecurity).
func MayMint(actor, role string) error {
	if err := validRole(role); err != nil {
		return err
	}
	allowed := map[string][]string{
		RoleAdmin:    {RoleAdmin, RoleRelease, RoleAuditor},
		RoleSecurity: {RoleSecurity},
	}[actor]
	if !slices.Contains(allowed, role) {
		if role == RoleSecurity {
			return fmt.Errorf("%w: only a security token may mint security tokens (separation of duties); the first one is made on the server host with `trustamp admin-token bootstrap-security --data DIR`", ErrForbidden)
		}
		return fmt.Errorf("%w: role %q may not mint %q tokens", ErrForbidden, actor, role)
	}
	return nil
}

// MayRevoke reports whether a caller with role actor may revoke a token
// with role: whoever may mint it, and security any token (a security team
// must be able to kill a leaked admin token).
func MayRevoke(actor, role string) error {
	if actor == RoleSecurity {
		return nil
	}
	if err := MayMint(actor, role); err != nil {
		return fmt.Errorf("%w: role %q may not revoke %q tokens", ErrForbidden, actor, role)
	}
	return nil
}

func validRole(role string) error {
	switch role {
	case RoleAdmin, RoleSecurity, RoleRelease, RoleAuditor:
		return nil
	}
	return fmt.Errorf("%w: role %q: want admin, security, release or auditor", ErrInvalid, role)
}

// CreateAdmin mints an admin token if the caller's role may (MayMint).
func (s *Service) CreateAdmin(ctx context.Context, req AdminRequest) (Token, state.AdminToken, error) {
	if !namePattern.MatchString(req.Name) {
		return Token{}, state.AdminToken{}, fmt.Errorf("%w: name %q: letters, digits and ._@- (max 63)", ErrInvalid, req.Name)
	}
	if err := MayMint(req.ActorRole, req.Role); err != nil {
		return Token{}, state.AdminToken{}, err
	}
	return s.mintAdmin(ctx, req.Name, req.Role, req.Actor, "admin_token.create")
}

// BootstrapSecurity mints a security token without asking a security
// token: for the server's host only (`trustamp admin-token
// bootstrap-security --data DIR`, which needs the data dir), never reached
// from the API. It is audited as its own action.
func (s *Service) BootstrapSecurity(ctx context.Context, name, actor string) (Token, state.AdminToken, error) {
	if !namePattern.MatchString(name) {
		return Token{}, state.AdminToken{}, fmt.Errorf("%w: name %q: letters, digits and ._@- (max 63)", ErrInvalid, name)
	}
	return s.mintAdmin(ctx, name, RoleSecurity, actor, "admin_token.bootstrap_security")
}

func (s *Service) mintAdmin(ctx context.Context, name, role, actor, action string) (Token, state.AdminToken, error) {
	tok, err := New(AdminPrefix)
	if err != nil {
		return Token{}, state.AdminToken{}, err
	}
	rec := state.AdminToken{ID: tok.ID, Name: name, Role: role, Hash: tok.Hash, CreatedAt: s.cfg.Clock(), CreatedBy: actor}
	err = s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertAdminToken(ctx, rec); err != nil {
			return err
		}
		_, err := s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: action, Subject: tok.ID,
			Details: map[string]any{"name": name, "role": role}})
		return err
	})
	if err != nil {
		return Token{}, state.AdminToken{}, fmt.Errorf("tokens: create admin token: %w", err)
	}
	rec.Hash = nil
	return tok, rec, nil
}

// Admins lists every admin token, newest first, without hashes.
func (s *Service) Admins(ctx context.Context) ([]state.AdminToken, error) {
	var out []state.AdminToken
	err := s.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		out, err = tx.AdminTokens(ctx)
		return err
	})
	for i := range out {
		out[i].Hash = nil
	}
	return out, err
}

// RevokeAdmin revokes an admin token if the caller's role may
// (MayRevoke): from the commit on, every request with it is refused.
func (s *Service) RevokeAdmin(ctx context.Context, id, actor, actorRole, note string) (state.AdminToken, error) {
	var out state.AdminToken
	err := s.cfg.Store.Update(ctx, func(tx *state.Tx) error {
		t, err := tx.AdminTokenByID(ctx, id)
		if err != nil {
			return err
		}
		if err := MayRevoke(actorRole, t.Role); err != nil {
			return err
		}
		if err := tx.RevokeAdminToken(ctx, id, actor, s.cfg.Clock()); err != nil {
			return err
		}
		if out, err = tx.AdminTokenByID(ctx, id); err != nil {
			return err
		}
		_, err = s.cfg.Audit.Append(ctx, tx, audit.Record{Actor: actor, Action: "admin_token.revoke", Subject: id,
			Details: map[string]any{"name": out.Name, "role": out.Role, "note": note}})
		return err
	})
	if err != nil {
		return state.AdminToken{}, fmt.Errorf("tokens: revoke admin token %s: %w", id, err)
	}
	out.Hash = nil
	return out, nil
}
