// Package vaultclient is trustamp's one way to talk to Vault (key custody
// in KV, the Vault PKI issuer): the address, TLS and namespace, and
// authentication by token or AppRole with a fresh login when Vault refuses
// an expired token. Secrets never appear in its errors.
package vaultclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Config locates Vault and says how to log in.
type Config struct {
	// Address is Vault's URL. Required.
	Address string
	// Token authenticates directly. Either Token or RoleID and SecretID.
	Token string
	// RoleID and SecretID log in with AppRole at AppRoleMount (default
	// "approle").
	RoleID, SecretID, AppRoleMount string
	// CACertFile verifies Vault's TLS certificate; empty: system roots.
	CACertFile string
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string
	// Timeout bounds each request (no hang when Vault is unreachable).
	// Zero means 10s.
	Timeout time.Duration
}

// Client is an authenticated Vault client.
type Client struct {
	cfg Config
	vc  *vault.Client

	mu       sync.Mutex
	loggedIn bool
}

// New checks cfg and makes a client; AppRole logs in at the first call.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault: address is required")
	}
	if cfg.Token == "" && (cfg.RoleID == "" || cfg.SecretID == "") {
		return nil, errors.New("vault: a token, or an AppRole role_id and secret_id, is required")
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	vc := vault.DefaultConfig()
	vc.Address = cfg.Address
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 1
	if cfg.CACertFile != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CACertFile}); err != nil {
			return nil, fmt.Errorf("vault: TLS: %w", err)
		}
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// The environment (VAULT_TOKEN) must not decide which token is used.
	c.ClearToken()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	if cfg.Token != "" {
		c.SetToken(cfg.Token)
	}
	return &Client{cfg: cfg, vc: c, loggedIn: cfg.Token != ""}, nil
}

// login obtains a token with AppRole when there is none (or force).
func (c *Client) login(ctx context.Context, force bool) error {
	if c.cfg.Token != "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loggedIn && !force {
		return nil
	}
	secret, err := c.vc.Logical().WriteWithContext(ctx, "auth/"+c.cfg.AppRoleMount+"/login",
		map[string]any{"role_id": c.cfg.RoleID, "secret_id": c.cfg.SecretID})
	if err != nil {
		return fmt.Errorf("vault AppRole login: %s", ErrorText(err))
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return errors.New("vault AppRole login: no token in the answer")
	}
	c.vc.SetToken(secret.Auth.ClientToken)
	c.loggedIn = true
	return nil
}

// Do runs op with an authenticated client, logging in again once when
// Vault refuses the token (an AppRole token expired).
func (c *Client) Do(ctx context.Context, op func(*vault.Client) error) error {
	if err := c.login(ctx, false); err != nil {
		return err
	}
	err := op(c.vc)
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && c.cfg.Token == "" {
		if lerr := c.login(ctx, true); lerr != nil {
			return lerr
		}
		err = op(c.vc)
	}
	return err
}

// ErrorText is Vault's answer without the request: the status and Vault's
// own messages (which never carry the token), or the transport error.
func ErrorText(err error) string {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("vault answered %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err.Error()
}

// Unavailable reports whether err means Vault could not be reached or is
// not serving (sealed, standby without forwarding, 5xx): a retry later may
// pass, unlike a refusal.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	}
	return true // transport: refused, timeout, DNS
}

// Health reports whether Vault answers and is unsealed (sys/health needs
// no token), for trustamp's /healthz.
func (c *Client) Health(ctx context.Context) error {
	h, err := c.vc.Sys().HealthWithContext(ctx)
	if err != nil {
		return errors.New(ErrorText(err))
	}
	if h.Sealed {
		return errors.New("vault is sealed")
	}
	if !h.Initialized {
		return errors.New("vault is not initialized")
	}
	return nil
}
