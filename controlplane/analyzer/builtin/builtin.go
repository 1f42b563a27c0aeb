// Package builtin holds the analyzers devfleet ships: devserver-unreachable, drain-stuck,
// migration-slow, capacity-risk, host-flapping, and doctor, which explains a developer's
// devserver by chaining the others.
package builtin

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Names of the built-in analyzers, for alerts and the CLI.
const (
	DevserverUnreachable = "devserver-unreachable"
	DrainStuck           = "drain-stuck"
	MigrationSlow        = "migration-slow"
	CapacityRisk         = "capacity-risk"
	HostFlapping         = "host-flapping"
	Doctor               = "doctor"
)

// All returns the built-in analyzers.
func All() []*analyzer.Analyzer {
	return []*analyzer.Analyzer{devserverUnreachable(), drainStuck(), migrationSlow(), capacityRisk(), hostFlapping(), doctor()}
}

// Registry returns a registry of the built-in analyzers.
func Registry() *analyzer.Registry {
	r, err := analyzer.NewRegistry(All()...)
	if err != nil {
		panic(err) // the declarations are constants; any test catches this
	}
	return r
}

const (
	info     = v1.Severity_SEVERITY_INFO
	warning  = v1.Severity_SEVERITY_WARNING
	critical = v1.Severity_SEVERITY_CRITICAL
)

func finding(sev v1.Severity, subject, summary string, details ...string) *v1.Finding {
	return &v1.Finding{Severity: sev, Subject: subject, Summary: summary, Details: details}
}

func object(topic, key string, t *timestamppb.Timestamp, note string) *v1.Evidence {
	return &v1.Evidence{Topic: topic, Key: key, Time: t, Note: note}
}

func event(e *v1.Event, note string) *v1.Evidence {
	return &v1.Evidence{Topic: e.GetTopic(), Key: e.GetKey(), Index: e.GetIndex(), Time: e.GetTime(), Note: note}
}

func action(kind, target, description, command string) *v1.SuggestedAction {
	return &v1.SuggestedAction{Kind: kind, Target: target, Description: description, Command: command}
}

// serious keeps the findings worth passing on from a chained analyzer: not the "all is well"
// ones.
func serious(fs []*v1.Finding) []*v1.Finding {
	var out []*v1.Finding
	for _, f := range fs {
		if f.GetSeverity() > info {
			out = append(out, f)
		}
	}
	return out
}

// at formats a time for a sentence, relative to now.
func at(now time.Time, t *timestamppb.Timestamp) string {
	if t == nil {
		return "at an unknown time"
	}
	return "at " + when(now, t)
}

// when is a time for a sentence after "since" or "at": its stamp and how long ago (or ahead).
func when(now time.Time, t *timestamppb.Timestamp) string {
	tt := t.AsTime()
	d := now.Sub(tt)
	stamp := tt.UTC().Format("15:04:05 UTC")
	if d > 20*time.Hour || -d > 20*time.Hour {
		stamp = tt.UTC().Format("2006-01-02 15:04 UTC")
	}
	if d >= 0 {
		return fmt.Sprintf("%s (%s ago)", stamp, short(d))
	}
	return fmt.Sprintf("%s (in %s)", stamp, short(-d))
}

// short rounds a duration for people.
func short(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func mib(b uint64) string {
	switch {
	case b >= 10<<30:
		return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30))
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// enumWord turns an enum value name into a word: HOST_STATE_DRAINING -> draining.
func enumWord(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", " ")
}

func subject(topic, key string) string { return topic + "/" + key }

// windowStart is Now minus d, or the start of what the env holds (a recording) if later.
func windowStart(env *analyzer.Env, d time.Duration) time.Time {
	since := env.Now().Add(-d)
	if s, ok := env.Since(); ok && since.Before(s) {
		return s
	}
	return since
}
