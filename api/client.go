package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/trustamp/trustamp/revocation"
)

// Client calls the admin API; the CLI is built on it.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Server is the admin API's base URL, e.g. https://127.0.0.1:4321.
	Server string
	// Token is the admin bearer token.
	Token string
	// CAPEM verifies the server's certificate. Nil means the system roots.
	CAPEM []byte
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("api: no server: pass --server, set TRUSTAMP_SERVER, or use --data with a local server")
	}
	if cfg.Token == "" {
		return nil, errors.New("api: no token: pass --token, set TRUSTAMP_TOKEN, or use --data with a local server")
	}
	u, err := url.Parse(cfg.Server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("api: server %q: want https://host:port", cfg.Server)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("api: CA bundle holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	return &Client{base: u, token: cfg.Token, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment},
	}}, nil
}

// Agents lists agents; query holds the filters (label, connected, expiring_within).
func (c *Client) Agents(ctx context.Context, query url.Values) ([]Agent, error) {
	var out []Agent
	return out, c.do(ctx, http.MethodGet, "/api/v1/agents?"+query.Encode(), nil, &out)
}

// Agent returns one agent.
func (c *Client) Agent(ctx context.Context, uid string) (Agent, error) {
	var out Agent
	return out, c.do(ctx, http.MethodGet, "/api/v1/agents/"+url.PathEscape(uid), nil, &out)
}

// Tokens lists the enrollment tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]EnrollmentToken, error) {
	var out []EnrollmentToken
	return out, c.do(ctx, http.MethodGet, "/api/v1/tokens", nil, &out)
}

// RevokeToken revokes an enrollment token by id.
func (c *Client) RevokeToken(ctx context.Context, id, note string) (EnrollmentToken, error) {
	var out EnrollmentToken
	return out, c.do(ctx, http.MethodPost, "/api/v1/tokens/"+url.PathEscape(id)+"/revoke", RevokeTokenRequest{Note: note}, &out)
}

// AdminTokens lists the admin tokens (never their secrets).
func (c *Client) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	var out []AdminToken
	return out, c.do(ctx, http.MethodGet, "/api/v1/admin-tokens", nil, &out)
}

// RevokeAdminToken revokes an admin token by id.
func (c *Client) RevokeAdminToken(ctx context.Context, id, note string) (AdminToken, error) {
	var out AdminToken
	return out, c.do(ctx, http.MethodPost, "/api/v1/admin-tokens/"+url.PathEscape(id)+"/revoke", RevokeTokenRequest{Note: note}, &out)
}

// CreateToken mints an enrollment token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	var out TokenResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/tokens", req, &out)
}

// Certificates lists certificates; query holds the filters (expiring_within, uid, status).
func (c *Client) Certificates(ctx context.Context, query url.Values) ([]Certificate, error) {
	var out []Certificate
	return out, c.do(ctx, http.MethodGet, "/api/v1/certificates?"+query.Encode(), nil, &out)
}

// Rotate starts a rotation batch.
func (c *Client) Rotate(ctx context.Context, req RotationRequest) (RotationStatus, error) {
	var out RotationStatus
	return out, c.do(ctx, http.MethodPost, "/api/v1/rotations", req, &out)
}

// Rotation returns a batch's progress.
func (c *Client) Rotation(ctx context.Context, id string) (RotationStatus, error) {
	var out RotationStatus
	return out, c.do(ctx, http.MethodGet, "/api/v1/rotations/"+url.PathEscape(id), nil, &out)
}

// RotateIntermediate rolls the CA's intermediate over.
func (c *Client) RotateIntermediate(ctx context.Context) (IntermediateRollover, error) {
	var out IntermediateRollover
	return out, c.do(ctx, http.MethodPost, "/api/v1/ca/rotate-intermediate", struct{}{}, &out)
}

// RotateRoot starts a root rollover; with finish it ends the overlap.
func (c *Client) RotateRoot(ctx context.Context, finish bool) (IntermediateRollover, error) {
	var out IntermediateRollover
	if finish {
		var status map[string]string
		return out, c.do(ctx, http.MethodPost, "/api/v1/ca/rotate-root?finish=true", struct{}{}, &status)
	}
	return out, c.do(ctx, http.MethodPost, "/api/v1/ca/rotate-root", struct{}{}, &out)
}

// WithToken returns a client for the same server authenticating with
// another token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// CreateAdminToken mints an admin API token with a role.
func (c *Client) CreateAdminToken(ctx context.Context, req AdminTokenRequest) (AdminTokenResponse, error) {
	var out AdminTokenResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/admin-tokens", req, &out)
}

// AddPublisher trusts a publisher key.
func (c *Client) AddPublisher(ctx context.Context, req PublisherRequest) (Publisher, error) {
	var out Publisher
	return out, c.do(ctx, http.MethodPost, "/api/v1/publishers", req, &out)
}

// Publishers lists trusted publishers.
func (c *Client) Publishers(ctx context.Context) ([]Publisher, error) {
	var out []Publisher
	return out, c.do(ctx, http.MethodGet, "/api/v1/publishers", nil, &out)
}

// Publish streams an artifact with its bundle; size may be -1.
func (c *Client) Publish(ctx context.Context, typ, version, platform string, bundle []byte, artifact io.Reader, size int64) (Release, error) {
	q := url.Values{"type": {typ}, "version": {version}, "platform": {platform}}
	ref, _ := url.Parse("/api/v1/packages?" + q.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.ResolveReference(ref).String(), artifact)
	if err != nil {
		return Release{}, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(SignatureHeader, base64.StdEncoding.EncodeToString(bundle))
	var out Release
	return out, c.finish(req, &out)
}

// Packages lists releases; query may filter type, version, platform.
func (c *Client) Packages(ctx context.Context, query url.Values) ([]Release, error) {
	var out []Release
	return out, c.do(ctx, http.MethodGet, "/api/v1/packages?"+query.Encode(), nil, &out)
}

// Yank withdraws a version.
func (c *Client) Yank(ctx context.Context, typ, version, reason string) ([]Release, error) {
	var out []Release
	return out, c.do(ctx, http.MethodPost, "/api/v1/packages/"+url.PathEscape(typ)+"/"+url.PathEscape(version)+"/yank", YankRequest{Reason: reason}, &out)
}

// Promote pins typ to version for agents matching labels (nil: every agent
// of the type without a more specific pin).
func (c *Client) Promote(ctx context.Context, typ, version string, labels map[string]string) (Pin, error) {
	var out Pin
	return out, c.do(ctx, http.MethodPost, "/api/v1/packages/"+url.PathEscape(typ)+"/"+url.PathEscape(version)+"/promote", PromoteRequest{Labels: labels}, &out)
}

// Pins lists the version pins in force.
func (c *Client) Pins(ctx context.Context) ([]Pin, error) {
	var out []Pin
	return out, c.do(ctx, http.MethodGet, "/api/v1/pins", nil, &out)
}

// Rollout reports a release's rollout progress.
func (c *Client) Rollout(ctx context.Context, typ, version string) (Rollout, error) {
	var out Rollout
	return out, c.do(ctx, http.MethodGet, "/api/v1/packages/"+url.PathEscape(typ)+"/"+url.PathEscape(version)+"/status", nil, &out)
}

// Policies describes the policy set in force.
func (c *Client) Policies(ctx context.Context) (PolicySet, error) {
	var out PolicySet
	return out, c.do(ctx, http.MethodGet, "/api/v1/policies", nil, &out)
}

// ReloadPolicies makes the server read its policy directory again.
func (c *Client) ReloadPolicies(ctx context.Context) (PolicySet, error) {
	var out PolicySet
	return out, c.do(ctx, http.MethodPost, "/api/v1/policies/reload", nil, &out)
}

// SimulatePolicies shows what every agent would get under candidate
// policy files (by name), changing nothing.
func (c *Client) SimulatePolicies(ctx context.Context, files map[string]string) (SimulateResult, error) {
	var out SimulateResult
	return out, c.do(ctx, http.MethodPost, "/api/v1/policies/simulate", SimulateRequest{Files: files}, &out)
}

// Revoke revokes agents and certificates.
func (c *Client) Revoke(ctx context.Context, req RevocationRequest) (revocation.Result, error) {
	var out revocation.Result
	return out, c.do(ctx, http.MethodPost, "/api/v1/revocations", req, &out)
}

// UndoRevocation lifts a certificateHold.
func (c *Client) UndoRevocation(ctx context.Context, req UndoRequest) (UndoResponse, error) {
	var out UndoResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/revocations/undo", req, &out)
}

// Release lifts an agent's quarantine.
func (c *Client) Release(ctx context.Context, uid, note string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/agents/"+url.PathEscape(uid)+"/release", ReleaseRequest{Note: note}, nil)
}

// RevocationReport fetches the compliance report for [from, to).
func (c *Client) RevocationReport(ctx context.Context, from, to time.Time) (revocation.Report, error) {
	var out revocation.Report
	q := url.Values{"from": {from.UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}}
	return out, c.do(ctx, http.MethodGet, "/api/v1/reports/revocations?"+q.Encode(), nil, &out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ref, _ := url.Parse(path)
	req, err := http.NewRequestWithContext(ctx, method, c.base.ResolveReference(ref).String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.finish(req, out)
}

// finish sends req and decodes a JSON answer into out (nil: ignore it),
// turning an error answer into an error that carries its message.
func (c *Client) finish(req *http.Request, out any) error {
	method, ref := req.Method, req.URL
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, ref.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, ref.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("api: %s %s: %s (HTTP %d)", method, ref.Path, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("api: %s %s: HTTP %d", method, ref.Path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("api: %s %s: decode response: %w", method, ref.Path, err)
	}
	return nil
}
