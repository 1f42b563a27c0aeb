package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/analyzer"
	"github.com/devfleet/devfleet/controlplane/analyzer/builtin"
	"github.com/devfleet/devfleet/controlplane/apierror"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newAnalyzeCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "analyze",
		Short: "Run analyzers (investigations written as code) live or against a recording of the feed",
	})
	cmd.AddCommand(analyzeListCmd(a), analyzeRunCmd(a), analyzeRecordCmd(a))
	return cmd
}

func analyzeListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the analyzers and their inputs",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.analyzers.ListAnalyzers(ctx, &v1.ListAnalyzersRequest{})
			if err != nil {
				return err
			}
			return printList(a, resp.GetAnalyzers(), []string{"NAME", "INPUTS", "DESCRIPTION"}, func(i *v1.AnalyzerInfo) []string {
				var ins []string
				for _, in := range i.GetInputs() {
					s := in.GetName() + ":" + in.GetType()
					switch {
					case in.GetRequired():
						s += " (required)"
					case in.GetDefault() != "":
						s += "=" + in.GetDefault()
					}
					ins = append(ins, s)
				}
				return []string{i.GetName(), strings.Join(ins, " "), i.GetDescription()}
			})
		}),
	}
}

func analyzeRunCmd(a *app) *cobra.Command {
	var (
		inputs []string
		replay string
	)
	cmd := &cobra.Command{
		Use:   "run NAME [--input KEY=VALUE]... [--replay FILE]",
		Short: "Run an analyzer on the live fleet, or against a recording (backtesting)",
		Long: `Run an analyzer and print its findings: severity, summary, details, the evidence it relied on
and the actions it suggests. Live, it runs on the node the CLI talks to, over that node's state
and event history. With --replay FILE it runs here, against a recording made with
'devfleet analyze record', exactly as it would have run at the recording's end.`,
		Example: `  devfleet analyze run drain-stuck --input drain=d-12
  devfleet analyze run capacity-risk --replay incident.rec`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := parseInputFlags(inputs)
			if err != nil {
				return err
			}
			if replay == "" {
				return a.action(func(ctx context.Context, c client, _ []string) error {
					r, err := c.analyzers.RunAnalyzer(ctx, &v1.RunAnalyzerRequest{Name: args[0], Inputs: raw})
					if err != nil {
						return err
					}
					return a.printReport(a.stdout, r)
				})(cmd, args)
			}
			r, err := replayAnalyzer(cmd.Context(), replay, args[0], raw)
			if err != nil {
				return err
			}
			return a.printReport(a.stdout, r)
		},
	}
	cmd.Flags().StringArrayVar(&inputs, "input", nil, "an input, KEY=VALUE (repeatable; see analyze list)")
	cmd.Flags().StringVar(&replay, "replay", "", "run against this recording instead of the live fleet")
	return cmd
}

func parseInputFlags(inputs []string) (map[string]string, error) {
	raw := map[string]string{}
	for _, kv := range inputs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--input %q: want KEY=VALUE", kv)
		}
		if _, dup := raw[k]; dup {
			return nil, usagef("--input %s given twice", k)
		}
		raw[k] = v
	}
	return raw, nil
}

// replayAnalyzer runs a built-in analyzer against a recording file.
func replayAnalyzer(ctx context.Context, file, name string, raw map[string]string) (*v1.AnalysisReport, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, usagef("--replay: %v", err)
	}
	defer f.Close()
	rec, err := analyzer.ReadRecording(f)
	if err != nil {
		return nil, usagef("--replay %s: %v", file, err)
	}
	r, err := builtin.Registry().Run(ctx, rec, name, raw)
	if apierror.KindOf(err) == apierror.InvalidArgument || apierror.KindOf(err) == apierror.NotFound {
		return nil, usagef("%v", err)
	}
	return r, err
}

func analyzeRecordCmd(a *app) *cobra.Command {
	var (
		since time.Duration
		file  string
	)
	cmd := &cobra.Command{
		Use:   "record --since 1h -o FILE",
		Short: "Save a segment of the feed (the fleet's state then, and every event since) to a file",
		Long: `Save a segment of the event feed from the node the CLI talks to: the fleet's state --since
ago, then every event since, to a file that 'devfleet analyze run --replay' reads. Recordings of
incidents become tests of the analyzers (backtesting).`,
		Example: `  devfleet analyze record --since 1h -o stuck-drain.rec`,
		Args:    exactArgs(),
		PreRunE: func(*cobra.Command, []string) error {
			if since <= 0 {
				return usagef("--since: give a positive duration, like 1h")
			}
			if file == "" {
				return usagef("-o FILE: required (where to write the recording)")
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			stream, err := c.analyzers.Record(ctx, &v1.RecordRequest{Since: timestamppb.New(time.Now().Add(-since))})
			if err != nil {
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(file), ".devfleet-record-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			w := analyzer.NewWriter(tmp)
			events := 0
			for {
				chunk, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					tmp.Close()
					return err
				}
				if chunk.GetEvent() != nil {
					events++
				}
				if err := w.Put(chunk); err != nil {
					tmp.Close()
					return err
				}
			}
			if err := w.Close(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), file); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "recorded %d events since %s to %s\n", events, time.Now().Add(-since).UTC().Format(time.RFC3339), file)
			return nil
		}),
	}
	cmd.Flags().DurationVar(&since, "since", time.Hour, "start the recording this long ago")
	// -o is the global output format elsewhere; here it names the file (a local flag of the same
	// name shadows the global one).
	cmd.Flags().StringVarP(&file, "output", "o", "", "the file to write")
	return cmd
}

// printReport prints an analysis: JSON, or the findings for people.
func (a *app) printReport(w io.Writer, r *v1.AnalysisReport) error {
	if a.jsonOutput() {
		return printJSON(w, r)
	}
	printFindings(w, r.GetFindings())
	if len(r.GetChain()) > 1 {
		fmt.Fprintln(w, "\nanalyzers run:")
		for _, c := range r.GetChain() {
			fmt.Fprintln(w, "  "+c)
		}
	}
	return nil
}

// printFindings writes findings in plain words, the most severe first.
func printFindings(w io.Writer, fs []*v1.Finding) {
	if len(fs) == 0 {
		fmt.Fprintln(w, "no findings")
		return
	}
	for _, sev := range []v1.Severity{v1.Severity_SEVERITY_CRITICAL, v1.Severity_SEVERITY_WARNING, v1.Severity_SEVERITY_INFO, v1.Severity_SEVERITY_UNSPECIFIED} {
		for _, f := range fs {
			if f.GetSeverity() != sev {
				continue
			}
			fmt.Fprintf(w, "%-8s %s\n", severityWord(sev), f.GetSummary())
			for _, d := range f.GetDetails() {
				fmt.Fprintf(w, "         %s\n", d)
			}
			for _, e := range f.GetEvidence() {
				line := "evidence: " + e.GetTopic() + "/" + e.GetKey()
				if e.GetIndex() > 0 {
					line += fmt.Sprintf(" (event %d)", e.GetIndex())
				}
				if e.GetNote() != "" {
					line += ": " + e.GetNote()
				}
				fmt.Fprintf(w, "         %s\n", line)
			}
			for _, act := range f.GetActions() {
				line := "next: " + act.GetDescription()
				if act.GetCommand() != "" {
					line += "\n           $ " + act.GetCommand()
				}
				fmt.Fprintf(w, "         %s\n", line)
			}
		}
	}
}

func severityWord(s v1.Severity) string {
	switch s {
	case v1.Severity_SEVERITY_CRITICAL:
		return "CRITICAL"
	case v1.Severity_SEVERITY_WARNING:
		return "WARNING"
	case v1.Severity_SEVERITY_INFO:
		return "INFO"
	}
	return "-"
}
