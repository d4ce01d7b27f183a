package policies

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
)

// Defaults of Limits.
const (
	// DefaultCostLimit is Limits.CostLimit's default: 100,000 CEL cost
	// units, at most some tens of milliseconds of one core for the
	// costliest kind of expression (nested comprehensions). Real rules cost
	// under ten (a label lookup) to some tens of thousands (a regular
	// expression over every label).
	DefaultCostLimit = 100_000
	// DefaultMaxExpressionSize is Limits.MaxExpressionSize's default, in
	// characters.
	DefaultMaxExpressionSize = 4096
	// DefaultMaxExpressionNesting is Limits.MaxExpressionNesting's default.
	DefaultMaxExpressionNesting = 32
	// DefaultSimulateCostLimit bounds all evaluations of one policy
	// simulation together (policies.simulate_cost_limit): 100 times the
	// default cost limit, enough for 10,000 agents against sets of
	// hundreds of ordinary rules.
	DefaultSimulateCostLimit = 100 * DefaultCostLimit
)

// errBudgetSpent is an evaluation refused because its Budget is spent.
var errBudgetSpent = fmt.Errorf("%w: the request's cost budget is spent", ErrTooExpensive)

// What the cost estimator assumes of the values rules read from agents,
// certificates, releases and events: sizes the server bounds where it takes
// them in (descriptions, labels). An estimate is only the check-time
// filter; the run-time CostLimit is the bound that holds whatever an agent
// sent.
const (
	estimatedMaxString  = 1024 // characters of any string field or map value
	estimatedMaxEntries = 64   // entries of any map or list field
)

// ErrTooExpensive says a condition is over the cost limit: its estimated
// worst case when the files load, or its actual cost at run time.
var ErrTooExpensive = errors.New("policies: over the CEL cost limit")

// Limits bound what evaluating policy conditions may cost, so that a
// policy file (or a `policy simulate` body, which an auditor may send)
// cannot keep a core busy or grow memory without end. The zero value is the
// defaults.
type Limits struct {
	// CostLimit bounds one evaluation of one condition in CEL cost units
	// (policies.cost_limit). A condition whose estimated worst case is
	// higher is refused when the files load; an evaluation that reaches it
	// at run time stops and counts as no match (and as an eval error).
	// Zero means DefaultCostLimit.
	CostLimit uint64
	// MaxExpressionSize bounds a condition's length in characters
	// (policies.max_expression_size). Zero means DefaultMaxExpressionSize.
	MaxExpressionSize int
	// MaxExpressionNesting bounds how deeply a condition nests
	// (policies.max_expression_nesting): the CEL parser's recursion limit.
	// Zero means DefaultMaxExpressionNesting.
	MaxExpressionNesting int
}

func (l Limits) withDefaults() Limits {
	if l.CostLimit == 0 {
		l.CostLimit = DefaultCostLimit
	}
	if l.MaxExpressionSize <= 0 {
		l.MaxExpressionSize = DefaultMaxExpressionSize
	}
	if l.MaxExpressionNesting <= 0 {
		l.MaxExpressionNesting = DefaultMaxExpressionNesting
	}
	return l
}

// envOptions are the parser bounds.
func (l Limits) envOptions() []cel.EnvOption {
	return []cel.EnvOption{
		cel.ParserExpressionSizeLimit(l.MaxExpressionSize),
		cel.ParserRecursionLimit(l.MaxExpressionNesting),
	}
}

// programOptions make every evaluation count its cost, stop at the limit,
// and notice a cancelled context (ContextEval) every 100 iterations of a
// comprehension.
func (l Limits) programOptions() []cel.ProgramOption {
	return []cel.ProgramOption{
		cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost),
		cel.CostLimit(l.CostLimit),
		cel.InterruptCheckFrequency(100),
	}
}

// checkCost refuses a checked expression whose estimated worst-case cost
// is over the limit.
func (l Limits) checkCost(env *cel.Env, ast *cel.Ast) error {
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return fmt.Errorf("estimate cost: %w", err)
	}
	if est.Max > l.CostLimit {
		return fmt.Errorf("%w: estimated worst-case cost %d is over the limit of %d (policies.cost_limit); simplify the condition",
			ErrTooExpensive, est.Max, l.CostLimit)
	}
	return nil
}

// sizeEstimator gives the cost estimator the sizes of the variables' string,
// map and list fields (see estimatedMaxString); everything else it works
// out itself, or takes as unbounded.
type sizeEstimator struct{}

// EstimateSize implements checker.CostEstimator.
func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	if len(n.Path()) == 0 {
		return nil // not read from a variable: no estimate of ours
	}
	switch n.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: estimatedMaxString}
	case types.MapKind, types.ListKind:
		return &checker.SizeEstimate{Min: 0, Max: estimatedMaxEntries}
	}
	return nil
}

// EstimateCallCost implements checker.CostEstimator: the library's own
// estimates apply.
func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// Budget bounds the total cost of many evaluations, such as all those of
// one `policy simulate` request (every agent, both sets): each evaluation is
// bounded by the cost limit, but a request can ask for many. Attach it to a
// context with WithBudget; evaluations under an exhausted budget fail.
type Budget struct {
	left atomic.Int64
}

// NewBudget returns a budget of n cost units.
func NewBudget(n uint64) *Budget {
	b := &Budget{}
	b.left.Store(int64(min(n, math.MaxInt64)))
	return b
}

// Exhausted reports whether the budget is spent.
func (b *Budget) Exhausted() bool { return b.left.Load() <= 0 }

type budgetKey struct{}

// WithBudget returns ctx carrying b: every evaluation under it (Set.WithContext)
// is charged to b, and fails once b is spent.
func WithBudget(ctx context.Context, b *Budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

// evalBool runs a program under ctx and reports its boolean result; a
// non-boolean is false. An evaluation over the cost limit, under an
// exhausted Budget, or interrupted by ctx is an error.
func evalBool(ctx context.Context, p cel.Program, vars map[string]any) (bool, error) {
	budget, _ := ctx.Value(budgetKey{}).(*Budget)
	if budget != nil && budget.Exhausted() {
		return false, errBudgetSpent
	}
	out, det, err := p.ContextEval(ctx, vars)
	if budget != nil && det != nil && det.ActualCost() != nil {
		// Charged also when the evaluation stopped at the cost limit.
		budget.left.Add(-int64(min(*det.ActualCost(), math.MaxInt64)))
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("policies: evaluation cancelled: %w", context.Cause(ctx))
		}
		if isCostError(err) {
			return false, fmt.Errorf("%w: %w", ErrTooExpensive, err)
		}
		return false, err
	}
	v, ok := out.Value().(bool)
	return ok && v, nil
}

// isCostError reports whether err is cel-go's "actual cost limit exceeded".
func isCostError(err error) bool {
	var ce interpreter.EvalCancelledError
	return errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded
}
