package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/trustamp/trustamp/opamp"
	"github.com/trustamp/trustamp/policies"
	"github.com/trustamp/trustamp/release"
	"github.com/trustamp/trustamp/storage/state"
)

// Policies is the live policy source (policies.Source).
type Policies interface {
	Current() *policies.Set
	Reload(ctx context.Context, actor string) (*policies.Set, bool, error)
	Dir() string
	LastError() string
}

// Targets decides what an agent would be offered under a policy set
// without recording anything (release.Service).
type Targets interface {
	Decide(ctx context.Context, a release.Agent, prior *state.AgentPackage, set *policies.Set) (release.Offer, bool, error)
}

// PolicyRule is one loaded rule.
type PolicyRule struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	File       string `json:"file"`
	Line       int    `json:"line"`
	EvalErrors int64  `json:"eval_errors"`
}

// PolicySet describes a policy set: its files with their hashes and rules.
type PolicySet struct {
	Dir       string            `json:"dir,omitempty"`
	Files     map[string]string `json:"files"` // name -> sha256
	Rules     []PolicyRule      `json:"rules"`
	LastError string            `json:"last_error,omitempty"`
	// Changed is set by a reload: whether the files differed from the set
	// in force.
	Changed *bool `json:"changed,omitempty"`
}

// DescribePolicySet lists a set's files and rules.
func DescribePolicySet(set *policies.Set) PolicySet {
	out := PolicySet{Files: map[string]string{}, Rules: []PolicyRule{}}
	for _, f := range set.Files {
		out.Files[f.Name] = f.SHA256
	}
	for _, kind := range []string{policies.KindCertificateProfile, policies.KindPackageTarget, policies.KindRollout, policies.KindAutoRevoke} {
		for _, r := range set.Rules(kind) {
			out.Rules = append(out.Rules, PolicyRule{Name: r.Name, Kind: r.Kind, File: r.File, Line: r.Line, EvalErrors: r.EvalErrors()})
		}
	}
	return out
}

func (a *API) getPolicies(w http.ResponseWriter, r *http.Request) {
	out := DescribePolicySet(a.cfg.Policies.Current())
	out.Dir, out.LastError = a.cfg.Policies.Dir(), a.cfg.Policies.LastError()
	writeJSON(w, http.StatusOK, out)
}

// reloadPolicies reads the policy directory again. A set that does not
// load is 422 with the file, line and error; the previous set stays.
func (a *API) reloadPolicies(w http.ResponseWriter, r *http.Request) {
	if !a.noBody(w, r) {
		return
	}
	set, changed, err := a.cfg.Policies.Reload(r.Context(), principal(r.Context()).Actor())
	if errors.Is(err, policies.ErrRefused) {
		writeError(w, http.StatusUnprocessableEntity, "%v (the previous policies stay in force)", err)
		return
	}
	if err != nil {
		a.log.Error("reload policies", "err", err)
		writeError(w, http.StatusInternalServerError, "reload policies: %v (the previous policies stay in force)", err)
		return
	}
	out := DescribePolicySet(set)
	out.Dir, out.Changed = a.cfg.Policies.Dir(), &changed
	writeJSON(w, http.StatusOK, out)
}

// SimulateRequest is the body of POST /api/v1/policies/simulate: the
// candidate policy files by name.
type SimulateRequest struct {
	Files map[string]string `json:"files"`
}

// Simulated is what one agent gets now and would get under the candidate
// policies.
type Simulated struct {
	UID       string         `json:"uid"`
	Connected bool           `json:"connected"`
	Current   SimulatedState `json:"current"`
	Next      SimulatedState `json:"next"`
	// Changes names what differs: profile, target, wave.
	Changes []string `json:"changes"`
}

// SimulatedState is an agent's certificate profile and package target
// under one policy set.
type SimulatedState struct {
	Profile     string `json:"profile"`
	ProfileRule string `json:"profile_rule,omitempty"`
	// Target is the version it would be offered ("" for none), Downgrade
	// whether that is a marked downgrade; Rule says what decided, or why
	// nothing is offered.
	Target    string `json:"target,omitempty"`
	Downgrade bool   `json:"downgrade,omitempty"`
	Rule      string `json:"rule,omitempty"`
	Wave      string `json:"wave,omitempty"`
}

// SimulateResult is the answer of POST /api/v1/policies/simulate.
type SimulateResult struct {
	Candidate PolicySet   `json:"candidate"`
	Agents    []Simulated `json:"agents"`
	Changed   int         `json:"changed"`
}

// simulatePolicies evaluates candidate files against every agent in the
// registry and the policies in force, changing nothing.
func (a *API) simulatePolicies(w http.ResponseWriter, r *http.Request) {
	var req SimulateRequest
	if !a.decodeBody(w, r, &req) {
		return
	}
	files := make(map[string][]byte, len(req.Files))
	for name, content := range req.Files {
		files[name] = []byte(content)
	}
	next, err := a.cfg.PolicyLimits.Compile(files)
	if err == nil && a.cfg.CheckPolicies != nil {
		err = a.cfg.CheckPolicies(next)
	}
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	ctx := r.Context()
	var (
		agents []state.Agent
		rows   []state.AgentPackage
	)
	err = a.cfg.Store.View(ctx, func(tx *state.Tx) (err error) {
		if agents, err = tx.Agents(ctx, state.AgentFilter{}); err != nil {
			return err
		}
		rows, err = tx.AgentPackages(ctx, "", "", "")
		return err
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "simulate: %v", err)
		return
	}
	priors := map[string]*state.AgentPackage{}
	for i := range rows {
		priors[rows[i].UID+"\x00"+rows[i].Type] = &rows[i]
	}
	// Both sets evaluate under the request: a client that goes away stops
	// the work, and all evaluations together are charged to one budget
	// (each condition is also bounded by the cost limit).
	budget := policies.NewBudget(a.cfg.SimulateCostLimit)
	ectx := policies.WithBudget(ctx, budget)
	cur := a.cfg.Policies.Current().WithContext(ectx)
	out := SimulateResult{Candidate: DescribePolicySet(next), Agents: []Simulated{}}
	next = next.WithContext(ectx)
	now := a.cfg.Clock()
	for _, ag := range agents {
		if err := ctx.Err(); err != nil {
			a.log.Info("policy simulation abandoned by its client", "err", err)
			return
		}
		if budget.Exhausted() {
			writeError(w, http.StatusUnprocessableEntity, "simulation stopped after %d of %d agents: its CEL evaluations together cost over %d (policies.simulate_cost_limit); simplify the rules",
				len(out.Agents), len(agents), a.cfg.SimulateCostLimit)
			return
		}
		pa := opamp.PolicyAgent(ag)
		ra := release.AgentFrom(pa)
		prior := priors[ag.UID+"\x00"+ra.Type]
		sim := Simulated{UID: ag.UID, Connected: ag.Connected, Changes: []string{}}
		for _, side := range []struct {
			set *policies.Set
			out *SimulatedState
		}{{cur, &sim.Current}, {next, &sim.Next}} {
			side.out.Profile = a.cfg.DefaultProfile
			if rule := side.set.Profile(pa, policies.Cert{Serial: ag.CertSerial, NotAfter: ag.CertNotAfter,
				Profile: a.cfg.DefaultProfile, Destination: opamp.OpAMPDestination}, now); rule != nil {
				side.out.Profile, side.out.ProfileRule = rule.Profile, rule.Ref()
			}
			if a.cfg.Targets == nil || ra.Type == "" || ra.Platform == "" {
				continue
			}
			o, ok, err := a.cfg.Targets.Decide(ctx, ra, prior, side.set)
			if err != nil {
				writeError(w, http.StatusInternalServerError, "simulate %s: %v", ag.UID, err)
				return
			}
			side.out.Rule, side.out.Wave = o.Rule, o.Wave
			if ok {
				side.out.Target, side.out.Downgrade = o.Release.Version, o.Downgrade
			}
		}
		if sim.Current.Profile != sim.Next.Profile {
			sim.Changes = append(sim.Changes, "profile")
		}
		if sim.Current.Target != sim.Next.Target || sim.Current.Downgrade != sim.Next.Downgrade {
			sim.Changes = append(sim.Changes, "target")
		}
		if sim.Current.Wave != sim.Next.Wave {
			sim.Changes = append(sim.Changes, "wave")
		}
		if len(sim.Changes) > 0 {
			out.Changed++
		}
		out.Agents = append(out.Agents, sim)
	}
	writeJSON(w, http.StatusOK, out)
}
