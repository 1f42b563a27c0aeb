// Package analyzer is the SDK for investigations written as code. An analyzer declares typed
// inputs and runs over an Env: the fleet's state at any time, the event feed, and the other
// analyzers (chaining). It returns findings: a severity, a summary in plain words, the evidence
// it relied on and the actions it suggests.
//
// An Env reads a Source: a live node (its state and event history) or a recording of the feed,
// so that the same analyzer explains an incident now and is tested against past ones.
package analyzer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// InputType is the type an input's text must parse as.
type InputType string

// The input types.
const (
	String   InputType = "string"
	Duration InputType = "duration"
	Int      InputType = "int"
	Bool     InputType = "bool"
	Time     InputType = "time"
)

// Input declares one input of an analyzer.
type Input struct {
	Name        string
	Type        InputType
	Required    bool
	Default     string
	Description string
}

// Analyzer is an investigation written as code.
type Analyzer struct {
	// Name is how it is called: lower-case words joined by dashes.
	Name        string
	Description string
	Inputs      []Input
	// Run investigates. Its findings need not set Analyzer: the runner does.
	Run func(ctx context.Context, env *Env, in Inputs) ([]*v1.Finding, error)
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)

func (a *Analyzer) check() error {
	if a == nil {
		return errors.New("a nil analyzer")
	}
	if !nameRE.MatchString(a.Name) || a.Run == nil {
		return fmt.Errorf("analyzer %q: a name of lower-case words joined by dashes and a Run are required", a.Name)
	}
	seen := map[string]bool{}
	for _, in := range a.Inputs {
		if seen[in.Name] || in.Name == "" {
			return fmt.Errorf("analyzer %s: input %q is empty or declared twice", a.Name, in.Name)
		}
		seen[in.Name] = true
		if in.Default != "" {
			if _, err := parseValue(in.Type, in.Default); err != nil {
				return fmt.Errorf("analyzer %s: input %s: default: %w", a.Name, in.Name, err)
			}
		} else if _, err := parseValue(in.Type, zeroText(in.Type)); err != nil {
			return fmt.Errorf("analyzer %s: input %s: %w", a.Name, in.Name, err)
		}
	}
	return nil
}

// Info describes the analyzer for the API.
func (a *Analyzer) Info() *v1.AnalyzerInfo {
	info := &v1.AnalyzerInfo{Name: a.Name, Description: a.Description}
	for _, in := range a.Inputs {
		info.Inputs = append(info.Inputs, &v1.AnalyzerInput{Name: in.Name, Type: string(in.Type), Required: in.Required, Default: in.Default, Description: in.Description})
	}
	return info
}

// Inputs are an analyzer's inputs, checked and parsed against its declaration: the accessors
// cannot fail.
type Inputs struct {
	raw  map[string]string
	vals map[string]any
}

// String returns a string input ("" when absent).
func (in Inputs) String(name string) string { s, _ := in.vals[name].(string); return s }

// Duration returns a duration input (0 when absent).
func (in Inputs) Duration(name string) time.Duration { d, _ := in.vals[name].(time.Duration); return d }

// Int returns an int input (0 when absent).
func (in Inputs) Int(name string) int64 { n, _ := in.vals[name].(int64); return n }

// Bool returns a bool input (false when absent).
func (in Inputs) Bool(name string) bool { b, _ := in.vals[name].(bool); return b }

// Time returns a time input (zero when absent).
func (in Inputs) Time(name string) time.Time { t, _ := in.vals[name].(time.Time); return t }

// Has reports whether the input was given or has a default.
func (in Inputs) Has(name string) bool { _, ok := in.vals[name]; return ok }

// Raw returns the inputs as given, defaults included.
func (in Inputs) Raw() map[string]string { return maps.Clone(in.raw) }

func zeroText(t InputType) string {
	switch t {
	case Duration:
		return "0s"
	case Int:
		return "0"
	case Bool:
		return "false"
	case Time:
		return "2000-01-01T00:00:00Z"
	}
	return ""
}

func parseValue(t InputType, s string) (any, error) {
	switch t {
	case String:
		return s, nil
	case Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (like 90s, 10m, 2h)", s)
		}
		if d < 0 {
			return nil, fmt.Errorf("%q is negative", s)
		}
		return d, nil
	case Int:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	case Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case Time:
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an RFC 3339 time (like 2026-11-23T09:00:00Z)", s)
		}
		return tm, nil
	}
	return nil, fmt.Errorf("unknown input type %q", t)
}

// parseInputs checks raw against a's declaration: an unknown, missing or mistyped input is
// InvalidArgument naming it.
func parseInputs(a *Analyzer, raw map[string]string) (Inputs, error) {
	in := Inputs{raw: map[string]string{}, vals: map[string]any{}}
	decl := map[string]Input{}
	for _, d := range a.Inputs {
		decl[d.Name] = d
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if _, ok := decl[k]; !ok {
			return Inputs{}, apierror.Invalid("inputs."+k, "%s has no input %q (it takes: %s)", a.Name, k, inputNames(a))
		}
	}
	for _, d := range a.Inputs {
		s, given := raw[d.Name]
		if !given || s == "" {
			if d.Required {
				if d.Description == "" {
					return Inputs{}, apierror.Invalid("inputs."+d.Name, "required by %s", a.Name)
				}
				return Inputs{}, apierror.Invalid("inputs."+d.Name, "required by %s (%s)", a.Name, d.Description)
			}
			if d.Default == "" {
				continue
			}
			s = d.Default
		}
		v, err := parseValue(d.Type, s)
		if err != nil {
			return Inputs{}, apierror.Invalid("inputs."+d.Name, "%v", err)
		}
		in.raw[d.Name], in.vals[d.Name] = s, v
	}
	return in, nil
}

func inputNames(a *Analyzer) string {
	if len(a.Inputs) == 0 {
		return "none"
	}
	var names []string
	for _, d := range a.Inputs {
		names = append(names, d.Name)
	}
	return strings.Join(names, ", ")
}

// Registry holds the analyzers a node can run, by name.
type Registry struct {
	byName map[string]*Analyzer
}

// NewRegistry checks the analyzers and indexes them; a bad declaration or a name used twice is
// an error (a programming error, caught by any test).
func NewRegistry(as ...*Analyzer) (*Registry, error) {
	r := &Registry{byName: map[string]*Analyzer{}}
	for _, a := range as {
		if err := a.check(); err != nil {
			return nil, err
		}
		if r.byName[a.Name] != nil {
			return nil, fmt.Errorf("analyzer %s registered twice", a.Name)
		}
		r.byName[a.Name] = a
	}
	return r, nil
}

// Get returns an analyzer by name, or nil.
func (r *Registry) Get(name string) *Analyzer { return r.byName[name] }

// Infos describes every analyzer, by name.
func (r *Registry) Infos() []*v1.AnalyzerInfo {
	var out []*v1.AnalyzerInfo
	for _, name := range slices.Sorted(maps.Keys(r.byName)) {
		out = append(out, r.byName[name].Info())
	}
	return out
}

// Run runs the named analyzer over src. An unknown analyzer is NotFound; bad inputs are
// InvalidArgument naming the input.
func (r *Registry) Run(ctx context.Context, src Source, name string, raw map[string]string) (*v1.AnalysisReport, error) {
	a := r.Get(name)
	if a == nil {
		return nil, apierror.Missing("analyzer", name)
	}
	in, err := parseInputs(a, raw)
	if err != nil {
		return nil, err
	}
	env := &Env{src: src, reg: r, now: src.Now(), run: &runState{memo: map[string][]*v1.Finding{}}}
	findings, err := env.invoke(ctx, a, in)
	if err != nil {
		return nil, err
	}
	env.run.mu.Lock()
	chain := slices.Clone(env.run.chain)
	env.run.mu.Unlock()
	return &v1.AnalysisReport{Analyzer: name, Inputs: in.Raw(), Time: timestamppb.New(env.now), Findings: findings, Chain: chain}, nil
}

// maxDepth bounds chaining, so that two analyzers calling each other fail rather than loop.
const maxDepth = 8

// runState is shared by every Env of one run, which analyzers may call from several goroutines.
type runState struct {
	mu    sync.Mutex
	chain []string
	// memo holds the findings of each call made, by callKey; callers get copies.
	memo map[string][]*v1.Finding
}

// Env is what an analyzer sees: the fleet at any time, the feed, and the other analyzers.
type Env struct {
	src Source
	reg *Registry
	now time.Time
	run *runState
	// stack is the calls from the run's analyzer to this one: names (as the chain shows them)
	// and keys (which tell any two different calls apart).
	stack, keys []string
}

// Now is the time the analysis looks at: the present for a live fleet, the end of a recording.
// Analyzers use it, never the clock, so that a replay gives the same findings.
func (e *Env) Now() time.Time { return e.now }

// State returns the fleet as it is at Now.
func (e *Env) State(ctx context.Context) (*View, error) { return e.StateAt(ctx, e.now) }

// StateAt returns the fleet as it was at t (a t after Now is Now: what happened since the
// analysis started is not part of it).
func (e *Env) StateAt(ctx context.Context, t time.Time) (*View, error) {
	if t.After(e.now) {
		t = e.now
	}
	v, err := e.src.StateAt(ctx, t)
	if err != nil {
		return nil, err
	}
	return &View{View: v, Time: t}, nil
}

// Events returns the feed's events matching q, oldest first. A zero Until is Now.
func (e *Env) Events(ctx context.Context, q Query) ([]*v1.Event, error) {
	if q.Until.IsZero() || q.Until.After(e.now) {
		q.Until = e.now
	}
	return e.src.Events(ctx, q)
}

// Call runs another analyzer with inputs of the caller's choosing, and returns its findings
// (the caller decides which of them to pass on; they are its own to change). Within one run,
// the same call is made once.
//
// An unknown analyzer or inputs it refuses are the calling analyzer's mistake, not bad input
// from whoever ran it: the error says so but has no API kind (it is not InvalidArgument or
// NotFound of the run).
func (e *Env) Call(ctx context.Context, name string, raw map[string]string) ([]*v1.Finding, error) {
	a := e.reg.Get(name)
	if a == nil {
		return nil, fmt.Errorf("chained analyzer %s: no such analyzer", name)
	}
	in, err := parseInputs(a, raw)
	if err != nil {
		return nil, fmt.Errorf("chained analyzer %s: %s", name, err.Error())
	}
	return e.invoke(ctx, a, in)
}

func (e *Env) invoke(ctx context.Context, a *Analyzer, in Inputs) ([]*v1.Finding, error) {
	call, key := callName(a.Name, in), callKey(a.Name, in)
	if slices.Contains(e.keys, key) {
		return nil, fmt.Errorf("analyzer chain loops: %s > %s", strings.Join(e.stack, " > "), call)
	}
	if len(e.stack) >= maxDepth {
		return nil, fmt.Errorf("analyzer chain deeper than %d: %s > %s", maxDepth, strings.Join(e.stack, " > "), call)
	}
	e.run.mu.Lock()
	f, ok := e.run.memo[key]
	e.run.mu.Unlock()
	if ok {
		return cloneFindings(f), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	child := &Env{src: e.src, reg: e.reg, now: e.now, run: e.run,
		stack: append(slices.Clone(e.stack), call), keys: append(slices.Clone(e.keys), key)}
	e.run.mu.Lock()
	e.run.chain = append(e.run.chain, strings.Join(child.stack, " > "))
	e.run.mu.Unlock()
	findings, err := a.Run(ctx, child, in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.Name, err)
	}
	findings = slices.DeleteFunc(findings, func(f *v1.Finding) bool { return f == nil })
	for _, f := range findings {
		if f.GetAnalyzer() == "" {
			f.Analyzer = a.Name
		}
	}
	e.run.mu.Lock()
	e.run.memo[key] = cloneFindings(findings)
	e.run.mu.Unlock()
	return findings, nil
}

func cloneFindings(fs []*v1.Finding) []*v1.Finding {
	if fs == nil {
		return nil
	}
	out := make([]*v1.Finding, len(fs))
	for i, f := range fs {
		out[i] = proto.Clone(f).(*v1.Finding)
	}
	return out
}

// callKey names a call unambiguously (callName is for people: an input's value may hold its
// separators).
func callKey(name string, in Inputs) string {
	var b strings.Builder
	b.WriteString(strconv.Quote(name))
	for _, k := range slices.Sorted(maps.Keys(in.raw)) {
		b.WriteString(" " + strconv.Quote(k) + "=" + strconv.Quote(in.raw[k]))
	}
	return b.String()
}

func callName(name string, in Inputs) string {
	keys := make([]string, 0, len(in.raw))
	for k := range in.raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+in.raw[k])
	}
	return name + "(" + strings.Join(parts, ",") + ")"
}
