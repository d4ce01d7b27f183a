// Package policies decides, from operator-written rules, who gets what:
// which certificate profile an agent's certificates use, which release it
// should run, how a release rolls out in waves, and which events revoke or
// quarantine an agent. Rules live in YAML files with conditions in CEL,
// compiled and type-checked once when the files load: a file that does not
// parse or check is refused as a whole (file, line and the CEL error), so a
// running server keeps the previous set.
//
// Within a kind, rules are evaluated in file order (files by name) and the
// first match wins. A condition that fails to evaluate for an agent (such as
// agent.labels["region"] on an agent without that label) does not match it:
// one unlabelled agent must not stop the rules below from applying to it.
// Such failures are counted per rule (EvalErrors) so a rule that never
// works shows up; write `"region" in agent.labels && ...` to be explicit.
package policies

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"go.yaml.in/yaml/v3"
)

// Agent is what rules see of an agent, as `agent`.
type Agent struct {
	UID    string            `cel:"uid"`
	Labels map[string]string `cel:"labels"`
	// Attributes are its description's attributes (identifying and not).
	Attributes map[string]string `cel:"attributes"`
	// Capabilities are the names of its OpAMP capabilities
	// ("AcceptsPackages", ...) and custom capabilities.
	Capabilities []string `cel:"capabilities"`
	Type         string   `cel:"type"`     // package type (service.name)
	Platform     string   `cel:"platform"` // os.type/host.arch
	// Packages are the versions it runs, by package name ("" = its own).
	Packages  map[string]string `cel:"packages"`
	Connected bool              `cel:"connected"`
	Healthy   bool              `cel:"healthy"`
}

// Cert is what rules see of a certificate, as `cert`.
type Cert struct {
	Serial   string    `cel:"serial"`
	NotAfter time.Time `cel:"not_after"`
	Profile  string    `cel:"profile"`
	// Destination is what the certificate is for: "opamp" or one of
	// certificates' other destinations (own_metrics, an exporter).
	Destination string `cel:"destination"`
}

// Release is what rules see of a release, as `release`.
type Release struct {
	Type    string            `cel:"type"`
	Version string            `cel:"version"`
	Labels  map[string]string `cel:"labels"`
}

// Event is what auto_revoke rules see, as `event`.
type Event struct {
	// Kind is impersonation, revoked_certificate_presented,
	// identity_changed or csr_refused.
	Kind string `cel:"kind"`
	// Count is how many such events the agent had in the last hour.
	Count  int               `cel:"count"`
	Detail map[string]string `cel:"detail"`
}

// Event kinds auto_revoke rules see as event.kind.
const (
	// EventImpersonation: a valid certificate for one agent used with
	// another agent's instance_uid.
	EventImpersonation = "impersonation"
	// EventRevokedPresented: a handshake presented a revoked certificate.
	EventRevokedPresented = "revoked_certificate_presented"
	// EventIdentityChanged: an enrolled agent's identifying attributes
	// (service.name, host.name, ...) changed.
	EventIdentityChanged = "identity_changed"
	// EventCSRRefused: the agent's CSR was refused (wrong key type, wrong
	// subject, quarantined).
	EventCSRRefused = "csr_refused"
)

// Rule kinds.
const (
	KindCertificateProfile = "certificate_profile"
	KindPackageTarget      = "package_target"
	KindRollout            = "rollout"
	KindAutoRevoke         = "auto_revoke"
)

// Target is what a package_target rule assigns.
type Target struct {
	Type           string `yaml:"type"`
	Version        string `yaml:"version"`
	Channel        string `yaml:"channel"`
	AllowDowngrade bool   `yaml:"allow_downgrade"`
}

// Rule is one rule as written, compiled.
type Rule struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	When string `yaml:"when"`
	// certificate_profile
	Profile string `yaml:"profile"`
	// package_target
	Target *Target `yaml:"target"`
	// rollout: cumulative percentages of the matching agents per wave,
	// the minimum time between waves, and the failure rate that halts it.
	Waves           []float64     `yaml:"waves"`
	Soak            time.Duration `yaml:"soak"`
	HaltFailureRate float64       `yaml:"halt_failure_rate"`
	// Agents selects who takes part in a rollout (CEL over agent); empty
	// means every agent the release is for.
	Agents string `yaml:"agents"`
	// auto_revoke: revoke or quarantine, and the RFC 5280 reason.
	Action string `yaml:"action"`
	Reason string `yaml:"reason"`

	// File and Line locate the rule for messages and `agents show`.
	File string `yaml:"-"`
	Line int    `yaml:"-"`

	when, agents cel.Program
	evalErrors   atomic.Int64
}

// EvalErrors is how many evaluations of the rule's conditions failed (and
// were taken as no match) since it loaded.
func (r *Rule) EvalErrors() int64 { return r.evalErrors.Load() }

// Ref names a rule for people: file:line name.
func (r *Rule) Ref() string { return fmt.Sprintf("%s:%d %s", r.File, r.Line, r.Name) }

// File is one loaded policy file and its hash (audited on every change).
type File struct {
	Name   string
	SHA256 string
}

// Set is a compiled, immutable set of rules.
type Set struct {
	Files []File
	rules map[string][]*Rule // by kind, in evaluation order
	// ctx interrupts evaluations (WithContext); nil means none.
	ctx context.Context
}

// WithContext returns the set bound to ctx: every condition the returned
// set evaluates stops early, as no match, once ctx is done. The API binds a
// set to its request so that a client that disconnects stops the work
// (like http.Request.WithContext, the set itself is shared, not copied).
// Evaluations outside a request need no context: the cost limit bounds each.
func (s *Set) WithContext(ctx context.Context) *Set {
	if s == nil {
		return nil
	}
	out := *s
	out.ctx = ctx
	return &out
}

// Load reads every *.yaml and *.yml file in dir (not recursively), by name,
// under the default Limits. A missing dir is an empty set.
func Load(dir string) (*Set, error) { return Limits{}.Load(dir) }

// Load reads every *.yaml and *.yml file in dir (not recursively), by name,
// under l. A missing dir is an empty set.
func (l Limits) Load(dir string) (*Set, error) {
	files, err := ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return &Set{rules: map[string][]*Rule{}}, nil
	}
	if err != nil {
		return nil, err
	}
	return l.Compile(files)
}

// ReadDir returns the contents of the policy files in dir by name: the
// files Load compiles (`policy simulate` sends them to the server).
func ReadDir(dir string) (map[string][]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		if e.IsDir() || !isPolicyFile(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("policies: %w", err)
		}
		files[e.Name()] = b
	}
	return files, nil
}

// isPolicyFile reports whether a file name is one Load reads (editors' swap
// and backup files are not).
func isPolicyFile(name string) bool {
	base := filepath.Base(name)
	return !strings.HasPrefix(base, ".") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml"))
}

// Len is how many rules the set holds.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, rs := range s.rules {
		n += len(rs)
	}
	return n
}

// Compile builds a Set from file contents by name under the default
// Limits.
func Compile(files map[string][]byte) (*Set, error) { return Limits{}.Compile(files) }

// Compile builds a Set from file contents by name. A condition longer,
// deeper or (by estimate) costlier than l allows refuses the whole set,
// naming the rule and the limit.
func (l Limits) Compile(files map[string][]byte) (*Set, error) {
	envs, err := newEnvs(l.withDefaults())
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	s := &Set{rules: map[string][]*Rule{}}
	seen := map[string]string{}
	for _, name := range names {
		sum := sha256.Sum256(files[name])
		s.Files = append(s.Files, File{Name: name, SHA256: hex.EncodeToString(sum[:])})
		rules, err := parseFile(name, files[name])
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if prev, dup := seen[r.Name]; dup {
				return nil, fmt.Errorf("%s:%d: rule %q: name already used at %s", r.File, r.Line, r.Name, prev)
			}
			seen[r.Name] = fmt.Sprintf("%s:%d", r.File, r.Line)
			if err := r.compile(envs); err != nil {
				return nil, fmt.Errorf("%s:%d: rule %q: %w", r.File, r.Line, r.Name, err)
			}
			s.rules[r.Kind] = append(s.rules[r.Kind], r)
		}
	}
	return s, nil
}

func parseFile(name string, b []byte) ([]*Rule, error) {
	var top struct {
		Rules []yaml.Node `yaml:"rules"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&top); errors.Is(err, io.EOF) {
		return nil, nil // an empty file
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var out []*Rule
	for i := range top.Rules {
		n := &top.Rules[i]
		var r Rule
		// Decode strictly: a misspelt key is an error, not a rule that
		// silently does less.
		raw, _ := yaml.Marshal(n)
		d := yaml.NewDecoder(bytes.NewReader(raw))
		d.KnownFields(true)
		if err := d.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n.Line, err)
		}
		r.File, r.Line = name, n.Line
		out = append(out, &r)
	}
	return out, nil
}

// envs are the CEL environments per rule kind: each declares only what
// that kind can see, so a profile rule that reads `release` fails to check.
// All share the limits.
type envs struct {
	kinds  map[string]*cel.Env
	limits Limits
}

func newEnvs(l Limits) (envs, error) {
	native := ext.NativeTypes(ext.ParseStructTags(true),
		reflect.TypeOf(Agent{}), reflect.TypeOf(Cert{}), reflect.TypeOf(Release{}), reflect.TypeOf(Event{}))
	obj := func(v string, t any) cel.EnvOption {
		return cel.Variable(v, cel.ObjectType("policies."+reflect.TypeOf(t).Name()))
	}
	now := cel.Variable("now", cel.TimestampType)
	out := envs{kinds: map[string]*cel.Env{}, limits: l}
	for kind, vars := range map[string][]cel.EnvOption{
		KindCertificateProfile: {obj("agent", Agent{}), obj("cert", Cert{}), now},
		KindPackageTarget:      {obj("agent", Agent{}), now},
		KindRollout:            {obj("release", Release{}), now},
		"rollout.agents":       {obj("agent", Agent{}), obj("release", Release{}), now},
		KindAutoRevoke:         {obj("agent", Agent{}), obj("event", Event{}), now},
	} {
		opts := append([]cel.EnvOption{native, ext.Strings()}, l.envOptions()...)
		e, err := cel.NewEnv(append(opts, vars...)...)
		if err != nil {
			return envs{}, fmt.Errorf("policies: CEL environment: %w", err)
		}
		out.kinds[kind] = e
	}
	return out, nil
}

// program compiles expr for kind: parsed within the size and nesting
// limits, type-checked, its estimated cost within the cost limit, and run
// with the cost limit and interruptible.
func (e envs) program(kind, expr string) (cel.Program, error) {
	if n := len([]rune(expr)); n > e.limits.MaxExpressionSize {
		return nil, fmt.Errorf("%w: %d characters, over the limit of %d (policies.max_expression_size)",
			ErrTooExpensive, n, e.limits.MaxExpressionSize)
	}
	env := e.kinds[kind]
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("must be a bool expression, is %s", ast.OutputType())
	}
	if err := e.limits.checkCost(env, ast); err != nil {
		return nil, err
	}
	return env.Program(ast, e.limits.programOptions()...)
}

var revocationReasons = map[string]bool{"unspecified": true, "keyCompromise": true, "affiliationChanged": true,
	"superseded": true, "cessationOfOperation": true, "certificateHold": true, "privilegeWithdrawn": true}

func (r *Rule) compile(e envs) error {
	if r.Name == "" {
		return errors.New("name is required")
	}
	if r.When == "" {
		return errors.New("when is required (use `true` to match everything)")
	}
	if _, ok := e.kinds[r.Kind]; !ok || r.Kind == "rollout.agents" {
		return fmt.Errorf("kind %q is not one of %s, %s, %s, %s", r.Kind, KindCertificateProfile, KindPackageTarget, KindRollout, KindAutoRevoke)
	}
	var err error
	if r.when, err = e.program(r.Kind, r.When); err != nil {
		return fmt.Errorf("when: %w", err)
	}
	switch r.Kind {
	case KindCertificateProfile:
		if r.Profile == "" {
			return errors.New("profile is required")
		}
	case KindPackageTarget:
		if r.Target == nil || (r.Target.Version == "") == (r.Target.Channel == "") {
			return errors.New("target needs a version or a channel (not both)")
		}
	case KindRollout:
		if len(r.Waves) == 0 {
			return errors.New("waves are required, e.g. [1, 10, 100]")
		}
		prev := 0.0
		for _, w := range r.Waves {
			if w <= prev || w > 100 {
				return fmt.Errorf("waves must increase within (0, 100], got %v", r.Waves)
			}
			prev = w
		}
		if r.Waves[len(r.Waves)-1] != 100 {
			return fmt.Errorf("the last wave must be 100, got %v", r.Waves)
		}
		if r.Soak < 0 || r.HaltFailureRate < 0 || r.HaltFailureRate > 1 {
			return errors.New("soak must not be negative and halt_failure_rate must be within [0, 1]")
		}
		if r.Agents != "" {
			if r.agents, err = e.program("rollout.agents", r.Agents); err != nil {
				return fmt.Errorf("agents: %w", err)
			}
		}
	case KindAutoRevoke:
		if r.Action != "revoke" && r.Action != "quarantine" {
			return fmt.Errorf("action %q is not revoke or quarantine", r.Action)
		}
		if r.Action == "revoke" && !revocationReasons[r.Reason] {
			return fmt.Errorf("reason %q is not an RFC 5280 reason", r.Reason)
		}
	}
	return nil
}

// first returns the first rule of kind whose when holds and that keep
// accepts (nil: any). A nil set has no rules.
func (s *Set) first(kind string, vars map[string]any, keep func(*Rule) bool) *Rule {
	if s == nil {
		return nil
	}
	ctx := s.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	for _, r := range s.rules[kind] {
		if keep != nil && !keep(r) {
			continue
		}
		if ctx.Err() != nil {
			return nil // the caller is gone; its answer no longer matters
		}
		ok, err := evalBool(ctx, r.when, vars)
		if errors.Is(err, errBudgetSpent) {
			return nil // the caller's budget, not the rule's fault
		}
		if err != nil {
			if ctx.Err() == nil {
				r.evalErrors.Add(1) // a cancelled caller is not the rule's fault
			}
			continue
		}
		if ok {
			return r
		}
	}
	return nil
}

// Profile picks the certificate profile for an agent's certificate; nil
// when no rule matches (the configured default applies).
func (s *Set) Profile(a Agent, c Cert, now time.Time) *Rule {
	return s.first(KindCertificateProfile, map[string]any{"agent": a, "cert": c, "now": now}, nil)
}

// Target picks what release an agent should run; nil when no rule matches.
// A rule whose target names a type applies only to agents of that type.
func (s *Set) Target(a Agent, now time.Time) *Rule {
	return s.first(KindPackageTarget, map[string]any{"agent": a, "now": now},
		func(r *Rule) bool { return r.Target.Type == "" || r.Target.Type == a.Type })
}

// Rollout picks the rollout rule governing a release; nil means it goes to
// every targeted agent at once.
func (s *Set) Rollout(rel Release, now time.Time) *Rule {
	return s.first(KindRollout, map[string]any{"release": rel, "now": now}, nil)
}

// AutoRevoke picks what to do about an event; nil means nothing.
func (s *Set) AutoRevoke(a Agent, e Event, now time.Time) *Rule {
	return s.first(KindAutoRevoke, map[string]any{"agent": a, "event": e, "now": now}, nil)
}

// CheckProfiles refuses certificate_profile rules naming a profile other
// than the known ones (the server's configured profiles): such a rule
// would otherwise silently fall back to the default.
func (s *Set) CheckProfiles(known []string) error {
	for _, r := range s.Rules(KindCertificateProfile) {
		if !slices.Contains(known, r.Profile) {
			return fmt.Errorf("%s:%d: rule %q: profile %q is not configured (certificates.profiles has %s)",
				r.File, r.Line, r.Name, r.Profile, strings.Join(known, ", "))
		}
	}
	return nil
}

// Rules lists the rules of a kind, in evaluation order.
func (s *Set) Rules(kind string) []*Rule {
	if s == nil {
		return nil
	}
	return s.rules[kind]
}

// Wave is the wave of a rollout an agent belongs to: a stable function of
// the rule's name and the uid (the same agent stays in its wave across
// restarts and replicas), spread evenly over the percentages.
func (r *Rule) Wave(uid string) int {
	sum := sha256.Sum256([]byte(r.Name + "\x00" + uid))
	bucket := float64(binary.BigEndian.Uint64(sum[:8])%1_000_000) / 10_000 // [0, 100)
	for i, w := range r.Waves {
		if bucket < w {
			return i
		}
	}
	return len(r.Waves) - 1
}

// OpenWaves is how many waves of a rollout that started at started are
// open at now: one more after every soak period.
func (r *Rule) OpenWaves(started, now time.Time) int {
	if r.Soak <= 0 {
		return len(r.Waves)
	}
	n := 1 + int(now.Sub(started)/r.Soak)
	return min(max(n, 1), len(r.Waves))
}

// Takes reports whether an agent takes part in the rollout at all (a
// failing agents condition counts as no).
func (r *Rule) Takes(a Agent, rel Release, now time.Time) bool {
	if r.agents == nil {
		return true
	}
	ok, err := evalBool(context.Background(), r.agents, map[string]any{"agent": a, "release": rel, "now": now})
	if err != nil {
		r.evalErrors.Add(1)
	}
	return ok && err == nil
}

// Halts reports whether failed installs out of offered pass the rule's
// threshold (zero threshold: never).
func (r *Rule) Halts(failed, offered int) bool {
	return r.HaltFailureRate > 0 && offered > 0 && float64(failed)/float64(offered) > r.HaltFailureRate
}
