package main

import (
	"maps"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
)

var celIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var celReserved = map[string]bool{"in": true, "as": true, "break": true, "const": true, "continue": true, "else": true,
	"for": true, "function": true, "if": true, "import": true, "let": true, "loop": true, "package": true,
	"namespace": true, "return": true, "var": true, "void": true, "while": true, "true": true, "false": true, "null": true}

// renderSelector writes labels back as a --selector expression.
func renderSelector(m map[string]string) string {
	terms := make([]string, 0, len(m))
	for k, v := range m {
		terms = append(terms, "labels."+k+` == "`+v+`"`)
	}
	sort.Strings(terms)
	return strings.Join(terms, " && ")
}

// FuzzSelector: the rotate/revoke --selector parser never panics, what it
// accepts round-trips, and it means what the same text means in CEL (the
// policy language it is a subset of): the labels it selects satisfy the
// expression, and changing any one of them does not. A selector that
// required one label to have two values used to select the last one: a
// revocation of agents the operator did not name.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{
		`labels.env == "prod"`,
		`labels.env == "prod" && labels.site == "fra"`,
		`labels.env == "prod" && labels.env == "dev"`,
		`labels.app.kubernetes.io/name == "x"`,
		`labels.a == "x&&y"`,
		`labels.a == "\x41"`,
		`  labels.a=="" `,
		`labels.a == "1" && labels.a == "1"`,
		`agent.labels["env"] == "prod"`,
		`labels.in == "x"`,
	} {
		f.Add(s)
	}
	env, err := cel.NewEnv(cel.Variable("labels", cel.MapType(cel.StringType, cel.StringType)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sel string) {
		m, err := parseSelector(sel)
		if err != nil {
			return
		}
		if len(m) == 0 {
			t.Fatalf("%q: accepted as no selector at all", sel)
		}
		again, err := parseSelector(renderSelector(m))
		if err != nil || !maps.Equal(again, m) {
			t.Fatalf("%q: parsed %v, rendered %q, parsed again %v %v", sel, m, renderSelector(m), again, err)
		}
		for k := range m {
			if !celIdent.MatchString(k) || celReserved[k] {
				return // not a CEL field name: no oracle
			}
		}
		ast, iss := env.Compile(sel)
		if iss.Err() != nil {
			return // not CEL (a raw newline in a value): no oracle
		}
		prg, err := env.Program(ast, cel.CostLimit(10_000))
		if err != nil {
			t.Fatal(err)
		}
		eval := func(labels map[string]string) bool {
			out, _, err := prg.Eval(map[string]any{"labels": labels})
			return err == nil && out.Value() == true
		}
		if !eval(m) {
			t.Fatalf("%q selects %v, which CEL says does not match", sel, m)
		}
		for k := range m {
			other := maps.Clone(m)
			other[k] += "-other"
			if eval(other) {
				t.Fatalf("%q: CEL also matches %v, which the selector %v excludes", sel, other, m)
			}
		}
	})
}
