// devfleetd is the devfleet server: one member of the raft-replicated control plane.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/devfleet/devfleet/controlplane"
	"github.com/devfleet/devfleet/controlplane/alerts"
	"github.com/devfleet/devfleet/controlplane/eventlog"
	"github.com/devfleet/devfleet/controlplane/raftnode"
	"github.com/devfleet/devfleet/controlplane/validate"
	"github.com/devfleet/devfleet/drain"
	"github.com/devfleet/devfleet/migrate"
	"github.com/devfleet/devfleet/notify"
	"github.com/devfleet/devfleet/provisioner"
)

type options struct {
	config        string
	nodeID        string
	dataDir       string
	raftAddr      string
	raftAdvertise string
	grpcAddr      string
	httpAddr      string
	bootstrap     bool
	join          []string
	dev           bool
	allowFake     bool
	provisioner   provisioner.Config
	operators     []string
	// webhookURL and webhookSecretFile configure the notification sink.
	webhookURL, webhookSecretFile string
	evacuateAfter                 time.Duration
	events                        eventlog.Options
	eventsMaxMiB                  int64
	evacuateBrake                 float64
	alerts                        controlplane.AlertOptions
	migrations                    migrate.Limits
	logLevel                      string
	logFormat                     string
	raft                          raftnode.Config
}

func main() {
	controlplane.TuneGC()
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "devfleetd:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "devfleetd",
		Short: "Run a devfleet control-plane node",
		Long: `devfleetd runs one member of the devfleet control plane.

Start a new cluster with --bootstrap on the first node and --join on the others; a node restarted
from its data dir resumes on its own. Every flag can also come from the environment
(DEVFLEET_NODE_ID for --node-id) or from a YAML file given with --config (key node-id).
Precedence: flag, environment, file, default.

--dev starts a throwaway single-node cluster with a demo fleet.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigSources(cmd.Flags(), o.config); err != nil {
				return err
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "YAML file with flag values (keys are flag names)")
	f.StringVar(&o.nodeID, "node-id", "", "unique, stable ID of this node (required unless --dev)")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the raft log (bbolt) and snapshots (required unless --dev)")
	f.StringVar(&o.raftAddr, "raft-addr", "127.0.0.1:7400", "raft TCP listen address")
	f.StringVar(&o.raftAdvertise, "raft-advertise", "", "raft address peers dial (default --raft-addr)")
	f.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:7401", "gRPC API listen address")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:7402", "REST, /metrics, /healthz, /readyz and /openapi.json listen address")
	f.BoolVar(&o.bootstrap, "bootstrap", false, "start a new cluster with this node as its first member (ignored when the data dir has state)")
	f.StringSliceVar(&o.join, "join", nil, "gRPC address of a cluster member to join through (repeatable; ignored when the data dir has state)")
	f.BoolVar(&o.dev, "dev", false, "run a single-node cluster in a temporary dir, seeded with a demo fleet on in-memory hypervisors")
	f.BoolVar(&o.allowFake, "allow-fake-hypervisors", false, "accept hosts with fake:// libvirt URIs, served in memory (tests and demos; implied by --dev)")
	f.DurationVar(&o.provisioner.ShutdownGrace, "guest-shutdown-grace", 30*time.Second, "how long a devserver's guest may take to power off when stopped before it is cut")
	f.DurationVar(&o.provisioner.Resync, "host-resync", 30*time.Second, "how often the leader compares every libvirt host's guests with the state (on top of libvirt's events)")
	f.IntVar(&o.provisioner.Workers, "provisioner-workers", 8, "libvirt steps (create, stop, delete, ...) the leader runs at once")
	f.IntVar(&o.migrations.PerSource, "migrations-per-source", migrate.DefaultPerSource, "live migrations leaving one host at once")
	f.IntVar(&o.migrations.PerDest, "migrations-per-dest", migrate.DefaultPerDest, "live migrations arriving at one host at once")
	f.IntVar(&o.migrations.PerSite, "migrations-per-site", migrate.DefaultPerSite, "live migrations leaving or arriving at one site at once")
	f.IntVar(&o.migrations.Cluster, "migrations-cluster", migrate.DefaultCluster, "live migrations in the whole fleet at once")
	f.DurationVar(&o.evacuateAfter, "evacuate-after", drain.DefaultEvacuateAfter, "fence and evacuate a host whose libvirt has been unreachable this long (0: never)")
	f.Float64Var(&o.evacuateBrake, "evacuate-brake", drain.DefaultBrake, "pause automatic evacuations in a site when more than this share of its hosts are unhealthy at once")
	f.DurationVar(&o.alerts.Interval, "alert-interval", alerts.DefaultInterval, "how often the leader evaluates the alert conditions (negative: no alerts)")
	f.DurationVar(&o.alerts.DrainStall, "alert-drain-stall", alerts.DefaultDrainStall, "a drain without progress this long opens an alert")
	f.DurationVar(&o.alerts.HostUnreachable, "alert-host-unreachable", alerts.DefaultHostUnreachable, "a host unreachable this long opens an alert")
	f.DurationVar(&o.events.MaxAge, "events-max-age", eventlog.DefaultMaxAge, "how long each node keeps the fleet's events")
	f.Int64Var(&o.eventsMaxMiB, "events-max-mib", eventlog.DefaultMaxBytes>>20, "how much event history each node keeps, in MiB (the oldest go first)")
	f.StringVar(&o.webhookURL, "webhook-url", "", "POST owners' notices and drain events as signed JSON to this URL (see notify/DESIGN.md)")
	f.StringVar(&o.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook's HMAC secret (16 bytes or more); required with --webhook-url")
	f.StringSliceVar(&o.operators, "operators", nil, "users who may move any devserver (callers name themselves with --as until authentication lands)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.DurationVar(&o.raft.HeartbeatTimeout, "raft-heartbeat-timeout", raftnode.DefaultHeartbeatTimeout, "follower waits this long without leader contact before an election")
	f.DurationVar(&o.raft.ElectionTimeout, "raft-election-timeout", raftnode.DefaultElectionTimeout, "candidate waits this long for votes")
	f.DurationVar(&o.raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", raftnode.DefaultLeaderLeaseTimeout, "leader steps down after this long without a quorum")
	f.DurationVar(&o.raft.CommitTimeout, "raft-commit-timeout", raftnode.DefaultCommitTimeout, "idle leader tells followers the commit index at least this often")
	f.DurationVar(&o.raft.SnapshotInterval, "raft-snapshot-interval", raftnode.DefaultSnapshotInterval, "how often to check whether a snapshot is due")
	f.Uint64Var(&o.raft.SnapshotThreshold, "raft-snapshot-threshold", raftnode.DefaultSnapshotThreshold, "log entries since the last snapshot that make one due")
	f.DurationVar(&o.raft.CommitDelay, "raft-commit-delay", raftnode.DefaultCommitDelay, "longest the leader holds a log entry open for writers it expects back (group commit; negative disables)")
	f.Uint64Var(&o.raft.TrailingLogs, "raft-trailing-logs", raftnode.DefaultTrailingLogs, "log entries kept after a snapshot, for slow followers")
	return cmd
}

func newLogger(o *options) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", o.logFormat)
}

func (o *options) check() error {
	if o.events.MaxAge < 0 {
		return fmt.Errorf("--events-max-age: must not be negative, got %s", o.events.MaxAge)
	}
	if o.eventsMaxMiB < 0 {
		return fmt.Errorf("--events-max-mib: must not be negative, got %d", o.eventsMaxMiB)
	}
	if o.alerts.DrainStall < 0 || o.alerts.HostUnreachable < 0 {
		return errors.New("--alert-drain-stall, --alert-host-unreachable: must not be negative")
	}
	if o.evacuateBrake < 0 || o.evacuateBrake > 1 {
		return fmt.Errorf("--evacuate-brake: must be a share of a site's hosts, from 0 to 1, got %g", o.evacuateBrake)
	}
	if o.dev {
		if o.bootstrap || len(o.join) > 0 {
			return errors.New("--dev starts its own single-node cluster; drop --bootstrap and --join")
		}
		return nil
	}
	if err := validate.NodeID("--node-id", o.nodeID); err != nil {
		return err
	}
	if o.dataDir == "" {
		return errors.New("--data-dir: required (or use --dev)")
	}
	if o.bootstrap && len(o.join) > 0 {
		return errors.New("--bootstrap and --join exclude each other: bootstrap the first node, join the others")
	}
	return nil
}

func run(ctx context.Context, o *options) error {
	if err := o.check(); err != nil {
		return err
	}
	log, err := newLogger(o)
	if err != nil {
		return err
	}
	if o.dev {
		if o.nodeID == "" {
			o.nodeID = "dev"
		}
		dir, err := os.MkdirTemp("", "devfleet-dev-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.dataDir, o.bootstrap = dir, true
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	sinks, err := o.sinks()
	if err != nil {
		return err
	}
	srv, err := controlplane.Start(controlplane.Config{
		NodeID:        o.nodeID,
		DataDir:       o.dataDir,
		RaftAddr:      o.raftAddr,
		RaftAdvertise: o.raftAdvertise,
		GRPCAddr:      o.grpcAddr,
		HTTPAddr:      o.httpAddr,
		Bootstrap:     o.bootstrap,
		Join:          o.join,
		Raft:          o.raft,
		Logger:        log,

		AllowFakeHypervisors: o.allowFake || o.dev,
		Provisioner:          o.provisioner,
		Operators:            o.operators,
		MigrationLimits:      o.migrations,
		NotifySinks:          sinks,
		EvacuateAfter:        evacuateAfter(o.evacuateAfter),
		EvacuateBrake:        o.evacuateBrake,
		Alerts:               o.alerts,
		Events:               eventlog.Options{MaxAge: o.events.MaxAge, MaxBytes: o.eventsMaxMiB << 20},
	})
	if err != nil {
		return err
	}
	defer srv.Stop()
	if o.dev {
		seedCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := seedDemoFleet(seedCtx, srv.GRPCAddr())
		cancel()
		if err != nil {
			return fmt.Errorf("seed demo fleet: %w", err)
		}
		printDevBanner(srv, o.dataDir)
	}
	<-ctx.Done()
	log.Info("signal received; shutting down")
	return nil
}

func printDevBanner(srv *controlplane.Server, dir string) {
	fmt.Printf(`
devfleet dev cluster is up (single node, data in %s, removed on exit)

  gRPC     %[2]s          export DEVFLEET_ADDR=%[2]s
  REST     http://%[3]s/v1/hosts
  OpenAPI  http://%[3]s/openapi.json
  metrics  http://%[3]s/metrics

Try:  devfleet host list
      devfleet host cordon fra1-h1 --reason "disk swap"
      devfleet cluster status -o json
Stop with Ctrl-C.
`, dir, srv.GRPCAddr(), srv.HTTPAddr())
}

// sinks builds the notification sinks the flags ask for; a bad one is an error naming the flag.
func (o *options) sinks() ([]notify.Sink, error) {
	if o.webhookURL == "" {
		if o.webhookSecretFile != "" {
			return nil, errors.New("--webhook-secret-file: given without --webhook-url")
		}
		return nil, nil
	}
	if o.webhookSecretFile == "" {
		return nil, errors.New("--webhook-secret-file: required with --webhook-url (the HMAC secret receivers verify)")
	}
	secret, err := os.ReadFile(o.webhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	w, err := notify.NewWebhook(notify.WebhookConfig{URL: o.webhookURL, Secret: bytes.TrimSpace(secret)})
	if err != nil {
		return nil, fmt.Errorf("--webhook-url: %w", err)
	}
	return []notify.Sink{w}, nil
}

// evacuateAfter maps the flag to the server's setting: 0 turns evacuations off.
func evacuateAfter(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
