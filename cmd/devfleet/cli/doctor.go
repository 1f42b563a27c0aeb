package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newDoctorCmd(a *app) *cobra.Command {
	var (
		rage    bool
		rageDir string
	)
	cmd := &cobra.Command{
		Use:   "doctor [DEVSERVER] [--rage]",
		Short: "Explain in plain words what is happening to your devserver, and what to do next",
		Long: `doctor runs the analyzers that explain a devserver's state: its host's health, a drain or a
migration moving it, a loss and its repair, a stop, an expiry. Without DEVSERVER it looks at
each devserver you own (--as). --rage also writes an evidence bundle (tar.gz: the devserver's
and its host's state and history, the drains and migrations involved, the CLI's version and
configuration, connectivity checks to the API and to the host) and prints its path: attach it
when you ask the on-call for help.`,
		Example: `  devfleet doctor ada-1
  devfleet doctor ada-1 --rage`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			names := args
			if len(names) == 0 {
				if a.as == "" {
					return usagef("name a devserver, or say who you are with --as")
				}
				resp, err := c.fleet.ListDevservers(ctx, &v1.ListDevserversRequest{Owner: a.as})
				if err != nil {
					return err
				}
				for _, d := range resp.GetDevservers() {
					names = append(names, d.GetName())
				}
				if len(names) == 0 {
					return usagef("%s owns no devserver; name one", a.as)
				}
			}
			if rage && len(names) > 1 {
				return usagef("--rage bundles one devserver's evidence; name one of: %s", strings.Join(names, ", "))
			}
			for i, name := range names {
				r, err := c.analyzers.RunAnalyzer(ctx, &v1.RunAnalyzerRequest{Name: "doctor", Inputs: map[string]string{"devserver": name}})
				if err != nil {
					return err
				}
				if a.jsonOutput() && !rage {
					if err := printJSON(a.stdout, r); err != nil {
						return err
					}
					continue
				}
				if len(names) > 1 {
					if i > 0 {
						fmt.Fprintln(a.stdout)
					}
					fmt.Fprintf(a.stdout, "== %s\n", name)
				}
				printFindings(a.stdout, r.GetFindings())
				if rage {
					path, err := a.rageBundle(ctx, c, name, r, rageDir)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "\nevidence bundle: %s\n", path)
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&rage, "rage", false, "also write an evidence bundle (tar.gz) and print its path")
	cmd.Flags().StringVar(&rageDir, "rage-dir", os.TempDir(), "where --rage writes its bundle")
	return cmd
}

// bundle collects a rage bundle's files; a part that cannot be collected is noted in
// errors.txt, never fatal: the bundle is most useful exactly when things fail.
type bundle struct {
	files map[string][]byte
	errs  []string
}

func (b *bundle) add(name string, m proto.Message, err error) {
	if err != nil {
		b.errs = append(b.errs, fmt.Sprintf("%s: %v", name, err))
		return
	}
	data, err := jsonOptions.Marshal(m)
	if err != nil {
		b.errs = append(b.errs, fmt.Sprintf("%s: %v", name, err))
		return
	}
	var out bytes.Buffer
	if json.Indent(&out, data, "", "  ") != nil {
		out.Reset()
		out.Write(data)
	}
	b.files[name] = out.Bytes()
}

func (a *app) rageBundle(ctx context.Context, c client, name string, report *v1.AnalysisReport, dir string) (string, error) {
	b := &bundle{files: map[string][]byte{}}
	b.add("doctor.json", report, nil)
	var text bytes.Buffer
	printFindings(&text, report.GetFindings())
	b.files["doctor.txt"] = text.Bytes()

	now := time.Now()
	d, err := c.fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: name})
	b.add("devserver.json", d, err)
	ph, err := c.events.GetPlacementHistory(ctx, &v1.GetPlacementHistoryRequest{Name: name})
	b.add("placement-history.json", ph, err)
	evs, err := c.events.ListKeyEvents(ctx, &v1.ListKeyEventsRequest{Topic: "devserver", Key: name, Since: timestamppb.New(now.Add(-7 * 24 * time.Hour))})
	b.add("devserver-events.json", evs, err)
	ms, err := c.migrations.ListMigrations(ctx, &v1.ListMigrationsRequest{Devserver: name})
	b.add("migrations.json", ms, err)
	var host *v1.Host
	if d.GetHost() != "" {
		host, err = c.fleet.GetHost(ctx, &v1.GetHostRequest{Name: d.GetHost()})
		b.add("host.json", host, err)
		hevs, err := c.events.ListKeyEvents(ctx, &v1.ListKeyEventsRequest{Topic: "host", Key: d.GetHost(), Since: timestamppb.New(now.Add(-24 * time.Hour))})
		b.add("host-events.json", hevs, err)
	}
	for _, id := range drainsIn(report) {
		dr, err := c.drains.GetDrain(ctx, &v1.GetDrainRequest{Id: id})
		b.add("drain-"+id+".json", dr, err)
		tl, err := c.drains.ListDrainEvents(ctx, &v1.ListDrainEventsRequest{Id: id})
		b.add("drain-"+id+"-timeline.json", tl, err)
	}
	cfg := map[string]any{
		"cli_version": controlplane.Version, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH,
		"addr": a.addr, "as": a.as, "timeout": a.timeout.String(), "time": now.UTC().Format(time.RFC3339Nano),
		"env": devfleetEnv(),
	}
	b.files["cli.json"], _ = json.MarshalIndent(cfg, "", "  ")
	b.files["connectivity.txt"] = []byte(a.connectivity(ctx, c, host))
	if len(b.errs) > 0 {
		b.files["errors.txt"] = []byte(strings.Join(b.errs, "\n") + "\n")
	}
	return writeBundle(dir, fmt.Sprintf("devfleet-rage-%s-%s", name, now.UTC().Format("20060102T150405Z")), b.files)
}

// drainsIn are the drains a report's evidence names.
func drainsIn(r *v1.AnalysisReport) []string {
	var ids []string
	for _, f := range r.GetFindings() {
		for _, e := range f.GetEvidence() {
			if e.GetTopic() == "drain" && !slices.Contains(ids, e.GetKey()) {
				ids = append(ids, e.GetKey())
			}
		}
	}
	return ids
}

func devfleetEnv() map[string]string {
	out := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "DEVFLEET_") {
			out[k] = v
		}
	}
	return out
}

// connectivity checks the API (the node called, and every member) and the devserver's host's
// libvirt port, with how long each took.
func (a *app) connectivity(ctx context.Context, c client, host *v1.Host) string {
	var out strings.Builder
	start := time.Now()
	st, err := c.cluster.GetStatus(ctx, &v1.GetStatusRequest{})
	if err != nil {
		fmt.Fprintf(&out, "api %s: FAILED after %s: %v\n", a.addr, time.Since(start).Round(time.Millisecond), err)
	} else {
		fmt.Fprintf(&out, "api %s: ok in %s (node %s, leader %s, version %s)\n", a.addr, time.Since(start).Round(time.Millisecond), st.GetNodeId(), st.GetLeaderId(), st.GetVersion())
	}
	if ms, err := c.cluster.ListMembers(ctx, &v1.ListMembersRequest{}); err == nil {
		for _, m := range ms.GetMembers() {
			fmt.Fprintf(&out, "member %s grpc %s: %s\n", m.GetNodeId(), m.GetGrpcAddress(), dialCheck(m.GetGrpcAddress()))
		}
	}
	if host != nil && host.GetLibvirtUri() != "" {
		if u, err := url.Parse(host.GetLibvirtUri()); err == nil && u.Host != "" {
			addr := u.Host
			if u.Port() == "" {
				addr = net.JoinHostPort(u.Hostname(), "16509")
			}
			fmt.Fprintf(&out, "host %s libvirt %s: %s\n", host.GetName(), addr, dialCheck(addr))
		} else {
			fmt.Fprintf(&out, "host %s libvirt %s: not a network address, not checked\n", host.GetName(), host.GetLibvirtUri())
		}
	}
	return out.String()
}

func dialCheck(addr string) string {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fmt.Sprintf("FAILED after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	conn.Close()
	return fmt.Sprintf("ok in %s", time.Since(start).Round(time.Millisecond))
}

// writeBundle writes files as DIR/NAME.tar.gz, under a folder NAME, and returns its path.
func writeBundle(dir, name string, files map[string][]byte) (string, error) {
	path := filepath.Join(dir, name+".tar.gz")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	for _, n := range names {
		data := files[n]
		if err := tw.WriteHeader(&tar.Header{Name: name + "/" + n, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			f.Close()
			return "", err
		}
		if _, err := tw.Write(data); err != nil {
			f.Close()
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return "", err
	}
	if err := gz.Close(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}
