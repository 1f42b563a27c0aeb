package analyzer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/apierror"
	"github.com/devfleet/devfleet/controlplane/state"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// echo is an analyzer returning one finding that lists its inputs.
func echo(name string, inputs ...Input) *Analyzer {
	return &Analyzer{Name: name, Description: "echoes " + name, Inputs: inputs,
		Run: func(_ context.Context, _ *Env, in Inputs) ([]*v1.Finding, error) {
			return []*v1.Finding{{Summary: fmt.Sprint(in.Raw())}}, nil
		}}
}

func mustRegistry(t *testing.T, as ...*Analyzer) *Registry {
	t.Helper()
	r, err := NewRegistry(as...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func run(t *testing.T, r *Registry, name string, raw map[string]string) (*v1.AnalysisReport, error) {
	t.Helper()
	return r.Run(context.Background(), stubSource{now: t0}, name, raw)
}

func typed() *Analyzer {
	a := &Analyzer{Name: "typed", Inputs: []Input{
		{Name: "s", Type: String},
		{Name: "req", Type: String, Required: true, Description: "needed"},
		{Name: "d", Type: Duration, Default: "90s"},
		{Name: "n", Type: Int, Default: "7"},
		{Name: "b", Type: Bool},
		{Name: "at", Type: Time},
	}}
	a.Run = func(_ context.Context, _ *Env, in Inputs) ([]*v1.Finding, error) {
		return []*v1.Finding{{Summary: fmt.Sprintf("s=%q d=%v n=%d b=%v at=%v has(s)=%v has(b)=%v has(d)=%v",
			in.String("s"), in.Duration("d"), in.Int("n"), in.Bool("b"), in.Time("at").UTC().Format(time.RFC3339Nano),
			in.Has("s"), in.Has("b"), in.Has("d"))}}, nil
	}
	return a
}

func TestInputsParseAndDefault(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, typed())
	for _, tc := range []struct {
		raw  map[string]string
		want string
		in   map[string]string
	}{
		{map[string]string{"req": "x"},
			`s="" d=1m30s n=7 b=false at=0001-01-01T00:00:00Z has(s)=false has(b)=false has(d)=true`,
			map[string]string{"req": "x", "d": "90s", "n": "7"}},
		{map[string]string{"req": "x", "s": "hi", "d": "2h", "n": "-3", "b": "true", "at": "2026-11-23T09:00:00.5+01:00"},
			`s="hi" d=2h0m0s n=-3 b=true at=2026-11-23T08:00:00.5Z has(s)=true has(b)=true has(d)=true`,
			map[string]string{"req": "x", "s": "hi", "d": "2h", "n": "-3", "b": "true", "at": "2026-11-23T09:00:00.5+01:00"}},
		// An empty value is as good as absent: the default applies.
		{map[string]string{"req": "x", "d": "", "s": ""},
			`s="" d=1m30s n=7 b=false at=0001-01-01T00:00:00Z has(s)=false has(b)=false has(d)=true`,
			map[string]string{"req": "x", "d": "90s", "n": "7"}},
	} {
		rep, err := run(t, r, "typed", tc.raw)
		if err != nil {
			t.Fatalf("%v: %v", tc.raw, err)
		}
		if got := rep.GetFindings()[0].GetSummary(); got != tc.want {
			t.Errorf("%v:\n got %s\nwant %s", tc.raw, got, tc.want)
		}
		if fmt.Sprint(rep.GetInputs()) != fmt.Sprint(tc.in) {
			t.Errorf("%v: report inputs %v, want %v", tc.raw, rep.GetInputs(), tc.in)
		}
		if rep.GetAnalyzer() != "typed" || !rep.GetTime().AsTime().Equal(t0) {
			t.Errorf("report %s at %v", rep.GetAnalyzer(), rep.GetTime().AsTime())
		}
	}
}

func TestInputsRefused(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, typed())
	for _, tc := range []struct {
		raw   map[string]string
		field string
		text  string
	}{
		{map[string]string{}, "inputs.req", "required"},
		{map[string]string{"req": ""}, "inputs.req", "required"},
		{map[string]string{"req": "x", "nope": "1"}, "inputs.nope", "no input"},
		{map[string]string{"req": "x", "d": "soon"}, "inputs.d", "not a duration"},
		{map[string]string{"req": "x", "d": "-5m"}, "inputs.d", "negative"},
		{map[string]string{"req": "x", "n": "1.5"}, "inputs.n", "not an integer"},
		{map[string]string{"req": "x", "n": "99999999999999999999"}, "inputs.n", "not an integer"},
		{map[string]string{"req": "x", "b": "yes please"}, "inputs.b", "not true or false"},
		{map[string]string{"req": "x", "at": "yesterday"}, "inputs.at", "RFC 3339"},
		{map[string]string{"req": "x", "at": "2026-11-23"}, "inputs.at", "RFC 3339"},
	} {
		_, err := run(t, r, "typed", tc.raw)
		if err == nil {
			t.Fatalf("%v: no error", tc.raw)
		}
		if apierror.KindOf(err) != apierror.InvalidArgument || status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v is not InvalidArgument (kind %v, code %v)", tc.raw, err, apierror.KindOf(err), status.Code(err))
		}
		var ae *apierror.Error
		if !errors.As(err, &ae) || ae.Field != tc.field {
			t.Errorf("%v: %v does not concern %s", tc.raw, err, tc.field)
		}
		if msg := err.Error(); !strings.Contains(msg, tc.field) || !strings.Contains(msg, tc.text) {
			t.Errorf("%v: %q should name %s and say %q", tc.raw, msg, tc.field, tc.text)
		}
		if st := apierror.ToStatus(err); !strings.Contains(status.Convert(st).Message(), tc.field) {
			t.Errorf("%v: status %v does not name %s", tc.raw, st, tc.field)
		}
	}
}

func TestRequiredInputWithoutDescription(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, echo("a", Input{Name: "x", Type: String, Required: true}))
	_, err := run(t, r, "a", nil)
	if err == nil || strings.Contains(err.Error(), "()") || !strings.Contains(err.Error(), "inputs.x") {
		t.Fatalf("%v", err)
	}
}

func TestUnknownAnalyzerIsNotFound(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, echo("a"))
	_, err := run(t, r, "b", nil)
	if apierror.KindOf(err) != apierror.NotFound || status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("%v", err)
	}
	if r.Get("b") != nil || r.Get("a") == nil {
		t.Fatal("Get")
	}
}

func TestNewRegistryRefusesBadDeclarations(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, *Env, Inputs) ([]*v1.Finding, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		as   []*Analyzer
	}{
		{"upper case", []*Analyzer{{Name: "Host", Run: noop}}},
		{"underscore", []*Analyzer{{Name: "host_flap", Run: noop}}},
		{"empty", []*Analyzer{{Name: "", Run: noop}}},
		{"leading dash", []*Analyzer{{Name: "-host", Run: noop}}},
		{"trailing dash", []*Analyzer{{Name: "host-", Run: noop}}},
		{"double dash", []*Analyzer{{Name: "host--flap", Run: noop}}},
		{"leading digit", []*Analyzer{{Name: "1host", Run: noop}}},
		{"space", []*Analyzer{{Name: "host flap", Run: noop}}},
		{"no run", []*Analyzer{{Name: "host"}}},
		{"nil", []*Analyzer{nil}},
		{"twice", []*Analyzer{{Name: "host", Run: noop}, {Name: "disk", Run: noop}, {Name: "host", Run: noop}}},
		{"input twice", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: String}, {Name: "x", Type: Int}}}}},
		{"input unnamed", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "", Type: String}}}}},
		{"input untyped", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x"}}}}},
		{"input of unknown type", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: "float"}}}}},
		{"bad duration default", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: Duration, Default: "1 hour"}}}}},
		{"negative duration default", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: Duration, Default: "-1h"}}}}},
		{"bad int default", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: Int, Default: "ten"}}}}},
		{"bad bool default", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: Bool, Default: "maybe"}}}}},
		{"bad time default", []*Analyzer{{Name: "host", Run: noop, Inputs: []Input{{Name: "x", Type: Time, Default: "now"}}}}},
	} {
		if r, err := NewRegistry(tc.as...); err == nil || r != nil {
			t.Errorf("%s: registry %v, error %v", tc.name, r, err)
		}
	}
	r, err := NewRegistry(&Analyzer{Name: "host-flap2", Run: noop, Inputs: []Input{
		{Name: "x", Type: Duration, Default: "1h"}, {Name: "y", Type: Time, Default: "2026-01-02T03:04:05Z"}, {Name: "z", Type: String}}},
		&Analyzer{Name: "a", Run: noop})
	if err != nil {
		t.Fatal(err)
	}
	infos := r.Infos()
	if len(infos) != 2 || infos[0].GetName() != "a" || infos[1].GetName() != "host-flap2" {
		t.Fatalf("infos %v", infos)
	}
	if in := infos[1].GetInputs(); len(in) != 3 || in[0].GetType() != "duration" || in[0].GetDefault() != "1h" || in[2].GetName() != "z" {
		t.Fatalf("inputs %v", in)
	}
}

// chainer calls the analyzers of calls in turn (name, then inputs as k=v,k=v) and returns its
// own finding followed by theirs.
func chainer(name string, runs *atomic.Int32, inputs []Input, calls ...string) *Analyzer {
	return &Analyzer{Name: name, Inputs: inputs, Run: func(ctx context.Context, env *Env, in Inputs) ([]*v1.Finding, error) {
		if runs != nil {
			runs.Add(1)
		}
		out := []*v1.Finding{{Summary: name + fmt.Sprint(in.Raw())}}
		for _, c := range calls {
			callee, args, _ := strings.Cut(c, " ")
			raw := map[string]string{}
			for _, kv := range strings.Split(args, ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					raw[k] = v
				}
			}
			fs, err := env.Call(ctx, callee, raw)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	}}
}

func TestChainGetsFindingsAndNamesThem(t *testing.T) {
	t.Parallel()
	var bRuns atomic.Int32
	r := mustRegistry(t,
		chainer("a", nil, []Input{{Name: "x", Type: Int}}, "b y=2", "c", "b y=2", "b y=3"),
		chainer("b", &bRuns, []Input{{Name: "y", Type: Int}}),
		chainer("c", nil, nil, "b y=2"),
	)
	rep, err := run(t, r, "a", map[string]string{"x": "1"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range rep.GetFindings() {
		got = append(got, f.GetAnalyzer()+":"+f.GetSummary())
	}
	want := []string{"a:amap[x:1]", "b:bmap[y:2]", "c:cmap[]", "b:bmap[y:2]", "b:bmap[y:2]", "b:bmap[y:3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("findings %v, want %v", got, want)
	}
	if n := bRuns.Load(); n != 2 {
		t.Fatalf("b ran %d times, want 2 (once per distinct inputs)", n)
	}
	wantChain := []string{"a(x=1)", "a(x=1) > b(y=2)", "a(x=1) > c()", "a(x=1) > b(y=3)"}
	if fmt.Sprint(rep.GetChain()) != fmt.Sprint(wantChain) {
		t.Fatalf("chain %q, want %q", rep.GetChain(), wantChain)
	}
}

func TestChainKeepsAnalyzerSetByCallee(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t,
		&Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
			return []*v1.Finding{{Summary: "mine"}, nil, {Analyzer: "elsewhere", Summary: "theirs"}}, nil
		}})
	rep, err := run(t, r, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.GetFindings(); len(f) != 2 || f[0].GetAnalyzer() != "a" || f[1].GetAnalyzer() != "elsewhere" {
		t.Fatalf("%v", f)
	}
}

// A caller that changes the findings it got changes neither what another caller of the same
// call gets nor, through it, the report.
func TestChainMemoIsNotShared(t *testing.T) {
	t.Parallel()
	var bRuns atomic.Int32
	r := mustRegistry(t,
		&Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
			first, err := env.Call(ctx, "b", nil)
			if err != nil {
				return nil, err
			}
			first[0].Summary = "changed by a"
			second, err := env.Call(ctx, "b", nil)
			if err != nil {
				return nil, err
			}
			return append(first, second...), nil
		}},
		chainer("b", &bRuns, nil))
	rep, err := run(t, r, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.GetFindings(); len(f) != 2 || f[0].GetSummary() != "changed by a" || f[1].GetSummary() != "bmap[]" || bRuns.Load() != 1 {
		t.Fatalf("%v (b ran %d times)", f, bRuns.Load())
	}
}

// Inputs whose values hold the separators of the chain's notation are still told apart.
func TestChainMemoTellsInputsApart(t *testing.T) {
	t.Parallel()
	var bRuns atomic.Int32
	r := mustRegistry(t,
		&Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
			var out []*v1.Finding
			for _, raw := range []map[string]string{{"x": "1,y=2"}, {"x": "1", "y": "2"}} {
				fs, err := env.Call(ctx, "b", raw)
				if err != nil {
					return nil, err
				}
				out = append(out, fs...)
			}
			return out, nil
		}},
		chainer("b", &bRuns, []Input{{Name: "x", Type: String}, {Name: "y", Type: String}}))
	rep, err := run(t, r, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.GetFindings(); len(f) != 2 || f[0].GetSummary() == f[1].GetSummary() || bRuns.Load() != 2 {
		t.Fatalf("%v (b ran %d times)", f, bRuns.Load())
	}
}

func TestChainLoopFails(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t,
		chainer("a", nil, nil, "b"),
		chainer("b", nil, nil, "a"),
		chainer("self", nil, nil, "self"),
	)
	for _, name := range []string{"a", "self"} {
		_, err := run(t, r, name, nil)
		if err == nil || !strings.Contains(err.Error(), "loops") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	_, err := run(t, r, "a", nil)
	if !strings.Contains(err.Error(), "a() > b() > a()") {
		t.Fatalf("the error should show the loop: %v", err)
	}
}

func TestChainDepthIsBounded(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	// deep calls itself with n+1: never the same call twice, so only the depth stops it.
	deep := &Analyzer{Name: "deep", Inputs: []Input{{Name: "n", Type: Int}}}
	deep.Run = func(ctx context.Context, env *Env, in Inputs) ([]*v1.Finding, error) {
		runs.Add(1)
		return env.Call(ctx, "deep", map[string]string{"n": fmt.Sprint(in.Int("n") + 1)})
	}
	r := mustRegistry(t, deep)
	_, err := run(t, r, "deep", nil)
	if err == nil || !strings.Contains(err.Error(), "deeper than") {
		t.Fatalf("%v", err)
	}
	if n := runs.Load(); n != maxDepth {
		t.Fatalf("ran %d times, want %d", n, maxDepth)
	}
	// A chain as deep as allowed runs.
	r = mustRegistry(t, &Analyzer{Name: "deep", Inputs: deep.Inputs, Run: func(ctx context.Context, env *Env, in Inputs) ([]*v1.Finding, error) {
		if n := in.Int("n"); n < maxDepth-1 {
			return env.Call(ctx, "deep", map[string]string{"n": fmt.Sprint(n + 1)})
		}
		return []*v1.Finding{{Summary: "bottom"}}, nil
	}})
	rep, err := run(t, r, "deep", nil)
	if err != nil || len(rep.GetFindings()) != 1 || len(rep.GetChain()) != maxDepth {
		t.Fatalf("%v %v", rep, err)
	}
}

// A bad call from one analyzer to another is the analyzer's fault, not the caller of the API's:
// it must not come back as the caller's bad input or missing analyzer.
func TestChainedCallErrors(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t,
		chainer("bad-input", nil, nil, "b y=notanint"),
		chainer("unknown", nil, nil, "nope"),
		chainer("b", nil, []Input{{Name: "y", Type: Int}}),
		&Analyzer{Name: "fails", Run: func(context.Context, *Env, Inputs) ([]*v1.Finding, error) {
			return nil, apierror.Missing("host", "h9")
		}},
		chainer("calls-fails", nil, nil, "fails"),
	)
	for name, want := range map[string]string{"bad-input": "inputs.y", "unknown": "nope"} {
		_, err := run(t, r, name, nil)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "chained analyzer") {
			t.Fatalf("%s: %v", name, err)
		}
		if k := apierror.KindOf(err); k == apierror.InvalidArgument || k == apierror.NotFound {
			t.Errorf("%s: %v has kind %v", name, err, k)
		}
	}
	// An analyzer's own refusal keeps its kind, also through a chain.
	for _, name := range []string{"fails", "calls-fails"} {
		_, err := run(t, r, name, nil)
		if apierror.KindOf(err) != apierror.NotFound || !strings.Contains(err.Error(), "h9") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	r := mustRegistry(t, chainer("a", &runs, nil, "b"), chainer("b", &runs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Run(ctx, stubSource{now: t0}, "a", nil); !errors.Is(err, context.Canceled) || runs.Load() != 0 {
		t.Fatalf("%v after %d runs", err, runs.Load())
	}
}

// Analyzers may chain from several goroutines at once.
func TestConcurrentCalls(t *testing.T) {
	t.Parallel()
	var bRuns atomic.Int32
	r := mustRegistry(t,
		&Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			var out []*v1.Finding
			var firstErr error
			for i := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fs, err := env.Call(ctx, "b", map[string]string{"y": fmt.Sprint(i % 4)})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						firstErr = err
					}
					out = append(out, fs...)
				}()
			}
			wg.Wait()
			return out, firstErr
		}},
		chainer("b", &bRuns, []Input{{Name: "y", Type: Int}}))
	rep, err := run(t, r, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GetFindings()) != 16 || len(rep.GetChain()) < 5 {
		t.Fatalf("%d findings, chain %v", len(rep.GetFindings()), rep.GetChain())
	}
	if n := bRuns.Load(); n < 4 || n > 16 {
		t.Fatalf("b ran %d times", n)
	}
}

// recordingSource is a Source over fixed events that remembers what it was asked.
type recordingSource struct {
	stubSource
	mu      sync.Mutex
	stateAt []time.Time
	queries []Query
}

func (s *recordingSource) StateAt(ctx context.Context, t time.Time) (*state.View, error) {
	s.mu.Lock()
	s.stateAt = append(s.stateAt, t)
	s.mu.Unlock()
	return s.stubSource.StateAt(ctx, t)
}

func (s *recordingSource) Events(_ context.Context, q Query) ([]*v1.Event, error) {
	s.mu.Lock()
	s.queries = append(s.queries, q)
	s.mu.Unlock()
	return nil, nil
}

func TestEnvHoldsToNow(t *testing.T) {
	t.Parallel()
	src := &recordingSource{stubSource: stubSource{now: t0}}
	var since time.Time
	var hasSince bool
	r := mustRegistry(t, &Analyzer{Name: "a", Run: func(ctx context.Context, env *Env, _ Inputs) ([]*v1.Finding, error) {
		if !env.Now().Equal(t0) {
			return nil, fmt.Errorf("now %v", env.Now())
		}
		v, err := env.State(ctx)
		if err != nil || !v.Time.Equal(t0) {
			return nil, fmt.Errorf("state at %v: %v", v.Time, err)
		}
		if v, err = env.StateAt(ctx, t0.Add(-time.Hour)); err != nil || !v.Time.Equal(t0.Add(-time.Hour)) {
			return nil, fmt.Errorf("state at %v: %v", v.Time, err)
		}
		if v, err = env.StateAt(ctx, t0.Add(time.Hour)); err != nil || !v.Time.Equal(t0) {
			return nil, fmt.Errorf("state after now: at %v: %v", v.Time, err)
		}
		for _, q := range []Query{{}, {Until: t0.Add(time.Hour)}, {Until: t0.Add(-time.Minute), Topics: []string{"host"}}} {
			if _, err := env.Events(ctx, q); err != nil {
				return nil, err
			}
		}
		since, hasSince = env.Since()
		return nil, nil
	}})
	if _, err := r.Run(context.Background(), src, "a", nil); err != nil {
		t.Fatal(err)
	}
	if want := []time.Time{t0, t0.Add(-time.Hour), t0}; fmt.Sprint(src.stateAt) != fmt.Sprint(want) {
		t.Fatalf("StateAt asked at %v, want %v", src.stateAt, want)
	}
	if len(src.queries) != 3 || !src.queries[0].Until.Equal(t0) || !src.queries[1].Until.Equal(t0) ||
		!src.queries[2].Until.Equal(t0.Add(-time.Minute)) || src.queries[2].Topics[0] != "host" {
		t.Fatalf("queries %+v", src.queries)
	}
	if hasSince || !since.IsZero() {
		t.Fatalf("a source without a start has Since %v", since)
	}
}
