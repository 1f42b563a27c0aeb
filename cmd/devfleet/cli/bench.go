package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/devfleet/devfleet/controlplane"
	"github.com/devfleet/devfleet/controlplane/benchmark"
	"github.com/devfleet/devfleet/controlplane/state"
	"github.com/devfleet/devfleet/drain"
)

// newBenchCmd measures devfleet on this machine. The benches start their own clusters in a
// scratch dir; --addr is not used.
func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure devfleet on this machine (starts its own local clusters)",
		// The benches run devfleetd's code in this process: give it devfleetd's GC setting.
		PersistentPreRun: func(*cobra.Command, []string) { controlplane.TuneGC() },
	}
	cmd.AddCommand(newBenchApplyCmd(a), newBenchScaleCmd(a), newBenchCapacityCmd(a), newBenchPlaceCmd(a), newBenchClaimCmd(a), newBenchCreateCmd(a), newBenchMigrateCmd(a), newBenchDrainCmd(a), newBenchEventsCmd(a))
	return cmd
}

func newBenchApplyCmd(a *app) *cobra.Command {
	var (
		clients  []int
		duration time.Duration
		dir      string
		skipBare bool
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Write throughput and commit latency of a 3-node loopback cluster, beside bare raft",
		Long: `apply starts three devfleetd nodes in this process, on loopback with fsync'd bbolt raft logs,
and creates devservers through the leader's gRPC API from N concurrent clients for each N in
--clients. It prints writes/s and p50/p99 commit latency, the disk's raw fsync rate, and the same
figures for a bare hashicorp/raft stack (no-op FSM, one entry per write) for comparison.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(clients) == 0 || duration <= 0 {
				return usagef("--clients must list at least one count and --duration must be positive")
			}
			for _, n := range clients {
				if n < 1 || n > 4096 {
					return usagef("--clients: %d is not between 1 and 4096", n)
				}
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				return benchmark.RunApply(cmd.Context(), benchmark.ApplyOptions{
					Dir: scratch, Clients: clients, Duration: duration, SkipBare: skipBare,
				}, out)
			})
		},
	}
	cmd.Flags().IntSliceVar(&clients, "clients", []int{1, 64}, "concurrent clients, one run per count")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "length of each run")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the raft logs (default: a temporary dir); put it on the disk to measure")
	cmd.Flags().BoolVar(&skipBare, "skip-bare", false, "leave out the bare raft reference")
	return cmd
}

func newBenchEventsCmd(a *app) *cobra.Command {
	var (
		o   benchmark.EventsOptions
		dir string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Event feed fan-out: commit-to-delivery delay of many watchers, and what they cost writes",
		Long: `events starts three devfleetd nodes in this process (as bench apply does) and creates devservers
through the leader at --rate writes/s (open loop: each write is due at its time, whatever the
previous ones do, with at most --clients in flight; --rate 0 runs a closed loop of --clients),
for --duration without watchers, then for --duration again with --watchers gRPC Watch streams
spread over the three nodes. It prints the write throughput of both runs and the loss, and the
delay from each raft entry's commit (the leader's FSM applying it, when its write can be
acknowledged) to each watcher receiving each of its events, over every watcher and split by
leader and followers, against the targets: p99 <= 50 ms and a loss <= 10%. The watchers decode
of each event what following the feed needs (index, n, topic, key, deleted), not its object;
--full-decode makes them decode it whole. The watchers ask for batches (several waiting events per
response, as devfleet events watch does), and each event's delay is taken when its response is
received; --no-batch asks for one event per response. --cpuprofile profiles the run with watchers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Rate < 0 || o.Clients < 1 || o.Clients > 4096 || o.Watchers < 1 || o.Duration <= 0 {
				return usagef("--rate must not be negative, --clients must be between 1 and 4096, --watchers and --duration positive")
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				o.Dir = scratch
				return benchmark.RunEvents(cmd.Context(), o, out)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Rate, "rate", 5000, "writes/s offered, open loop (0: closed loop)")
	f.IntVar(&o.Clients, "clients", 256, "most writes in flight at once (the closed loop's clients)")
	f.IntVar(&o.Watchers, "watchers", 100, "Watch streams, spread over the three nodes")
	f.StringSliceVar(&o.Topics, "topic", nil, "the watchers follow only this topic (repeatable; default every event)")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each of the two runs")
	f.StringVar(&dir, "dir", "", "directory for the raft logs and histories (default: a temporary dir)")
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the run with watchers to this file")
	f.BoolVar(&o.FullDecode, "full-decode", false, "the watchers decode each event whole (default: its index, n, topic, key and deleted, as following the feed needs)")
	f.BoolVar(&o.NoBatch, "no-batch", false, "the watchers ask for one event per response (default: batches of the events waiting)")
	return cmd
}

func newBenchScaleCmd(a *app) *cobra.Command {
	var (
		hosts, devservers int
		dir               string
	)
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Snapshot time, restore time and memory of a large fleet's state",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if hosts < 0 || devservers < 0 {
				return usagef("--hosts and --devservers must not be negative")
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				return benchmark.RunScale(benchmark.ScaleOptions{Dir: scratch, Hosts: hosts, Devservers: devservers}, out)
			})
		},
	}
	cmd.Flags().IntVar(&hosts, "hosts", 10000, "hosts in the fleet")
	cmd.Flags().IntVar(&devservers, "devservers", 100000, "devserver records in the fleet")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the snapshot file (default: a temporary dir)")
	return cmd
}

func newBenchCapacityCmd(a *app) *cobra.Command {
	var hosts, devservers int
	cmd := &cobra.Command{
		Use:   "capacity",
		Short: "Placement decision latency and N-1 check time on a generated fleet",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if hosts < 1 || devservers < 0 {
				return usagef("--hosts must be positive and --devservers not negative")
			}
			return a.runBench("", func(_ string, out io.Writer) (any, error) {
				return benchmark.RunCapacity(benchmark.ScaleOptions{Hosts: hosts, Devservers: devservers}, out)
			})
		},
	}
	cmd.Flags().IntVar(&hosts, "hosts", 10000, "hosts in the fleet (5 regions)")
	cmd.Flags().IntVar(&devservers, "devservers", 100000, "devservers in the fleet")
	return cmd
}

func newBenchPlaceCmd(a *app) *cobra.Command {
	var (
		clients           []int
		duration          time.Duration
		hosts, devservers int
		dir               string
	)
	cmd := &cobra.Command{
		Use:   "place",
		Short: "Placed devserver creates per second committed through a 3-node loopback cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(clients) == 0 || duration <= 0 || hosts < 1 || devservers < 0 {
				return usagef("--clients, --duration and --hosts must be positive")
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				return benchmark.RunPlace(cmd.Context(), benchmark.PlaceOptions{
					Dir: scratch, Clients: clients, Duration: duration, Hosts: hosts, Devservers: devservers,
				}, out)
			})
		},
	}
	cmd.Flags().IntSliceVar(&clients, "clients", []int{1, 64}, "concurrent clients, one run per count")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "length of each run")
	cmd.Flags().IntVar(&hosts, "hosts", 10000, "hosts in the fleet (5 regions)")
	cmd.Flags().IntVar(&devservers, "devservers", 100000, "devservers in the fleet")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the raft logs (default: a temporary dir)")
	return cmd
}

// claimHostCPUs are the vCPUs of one of bench claim's in-memory hosts; a container takes one.
const claimHostCPUs = 128

func newBenchClaimCmd(a *app) *cobra.Command {
	var (
		claims, hosts int
		clients       []int
		dir           string
	)
	cmd := &cobra.Command{
		Use:   "claim",
		Short: "Container claims from a warm pool on a 3-node loopback cluster with in-memory hosts",
		Long: `claim starts three devfleetd nodes in this process, on loopback with fsync'd bbolt raft logs, and
--hosts in-memory hosts (128 vCPUs, 256 GiB each). For each count N in --clients, on a fresh
cluster, it fills a pool of 1-vCPU containers to --claims warm ones (the fill time is printed),
then N concurrent clients claim them all through the leader's gRPC API: claims/s, p50, p99 and
p99.9 claim latency, pool hits and errors.`,
		Example: `  devfleet bench claim
  devfleet bench claim --claims 200 --clients 1,8,32 --hosts 4 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if claims < 1 || claims > state.MaxPoolTarget {
				return usagef("--claims must be between 1 and %d (a pool's largest target), got %d", state.MaxPoolTarget, claims)
			}
			if hosts < 1 {
				return usagef("--hosts must be positive, got %d", hosts)
			}
			if claims > hosts*claimHostCPUs {
				return usagef("--claims %d: %d containers of 1 vCPU do not fit on %s of %d vCPUs; raise --hosts or lower --claims",
					claims, claims, plural(int64(hosts), "host", "hosts"), claimHostCPUs)
			}
			if len(clients) == 0 {
				return usagef("--clients must list at least one count")
			}
			for _, n := range clients {
				if n < 1 || n > 4096 {
					return usagef("--clients: %d is not between 1 and 4096", n)
				}
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				reports := make([]benchmark.ClaimReport, 0, len(clients))
				for _, n := range clients {
					rep, err := runClaimIn(cmd.Context(), scratch, benchmark.ClaimOptions{Claims: claims, Clients: n, Hosts: hosts}, out)
					if err != nil {
						return nil, err
					}
					reports = append(reports, rep)
				}
				return reports, nil
			})
		},
	}
	cmd.Flags().IntVar(&claims, "claims", 1000, "warm containers in the pool, all claimed in each run")
	cmd.Flags().IntSliceVar(&clients, "clients", []int{1, 8}, "concurrent clients, one run (and one cluster) per count")
	cmd.Flags().IntVar(&hosts, "hosts", 8, "in-memory hosts of 128 vCPUs")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the raft logs (default: a temporary dir)")
	return cmd
}

func newBenchCreateCmd(a *app) *cobra.Command {
	var (
		devservers, hosts int
		dir               string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Devserver create to running on real local libvirt hosts, split into control-plane and libvirt time",
		Long: `create starts --hosts real libvirt daemons on this machine (each in its own network and mount
namespace; needs root, and installs libvirt and QEMU with apt-get when they are missing) and
three devfleetd nodes in this process, then creates --devservers devservers of a 1-vCPU, 128 MiB
diskless flavor one after another and times each from the call to the state saying running:
the API call (placement and the raft write), libvirt's define and start (measured by the
provisioner), and the rest (the provisioner picking the work up and recording the result).`,
		Example: `  devfleet bench create
  devfleet bench create --devservers 50 --hosts 3 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devservers < 1 || devservers > 64 {
				return usagef("--devservers must be between 1 and 64 (real guests on this machine), got %d", devservers)
			}
			if hosts < 1 || hosts > 8 {
				return usagef("--hosts must be between 1 and 8, got %d", hosts)
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				return benchmark.RunCreate(cmd.Context(), benchmark.CreateOptions{Dir: scratch, Hosts: hosts, Devservers: devservers}, out)
			})
		},
	}
	cmd.Flags().IntVar(&devservers, "devservers", 20, "devservers to create, one after another")
	cmd.Flags().IntVar(&hosts, "hosts", 2, "local libvirt hosts to start")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the hosts' files and the raft logs (default: a temporary dir; keep it short: libvirt's socket paths are limited to 108 bytes)")
	return cmd
}

func newBenchMigrateCmd(a *app) *cobra.Command {
	var (
		migrations int
		dir        string
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "The migration controller's overhead and queue dispatch on a 3-node cluster with in-memory hosts",
		Long: `migrate starts three devfleetd nodes in this process with two in-memory hosts, moves --migrations
devservers one at a time and reports the time from a migration being recorded to libvirt's
migrate call (scheduling, the target check and the raft writes), then queues them all at once
behind the per-source limit and reports the time from a slot freeing to the next queued
migration's call. Times come from the leader's stamps in the migration records.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if migrations < 3 || migrations > 1000 {
				return usagef("--migrations must be between 3 and 1000, got %d", migrations)
			}
			return a.runBench(dir, func(scratch string, out io.Writer) (any, error) {
				return benchmark.RunMigrate(cmd.Context(), benchmark.MigrateOptions{Dir: scratch, Migrations: migrations}, out)
			})
		},
	}
	cmd.Flags().IntVar(&migrations, "migrations", 100, "devservers moved in each run")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the raft logs (default: a temporary dir)")
	return cmd
}

func newBenchDrainCmd(a *app) *cobra.Command {
	var (
		hosts, devservers, runs int
		b                       drain.Budgets
	)
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Drain plan time and schedule quality on a generated fleet (in memory, no cluster)",
		Long: `drain builds a fleet in memory: a region of --hosts hosts (4 sites) running --devservers
devservers of a mix of flavors (4 to 128 GiB, a few GPU and whole-machine ones), and four other
regions of half as many lightly loaded hosts. It plans the drain of one site (live moves within
the region) and of the whole region (cold moves to the others) --runs times each and prints the
plan time, the moves, the schedule's makespan against its lower bound (total bytes over the
total budget: efficiency is bound/makespan) and against the tighter bound the per-host and
per-site budgets give, and the most moves observed at once against each budget.`,
		Example: `  devfleet bench drain
  devfleet bench drain --hosts 200 --devservers 10000 --total 10 --per-site 8 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if hosts < 2 || devservers < 1 || runs < 1 {
				return usagef("--hosts must be at least 2, --devservers and --runs positive")
			}
			if devservers > hosts*60 {
				return usagef("--devservers %d: more than 60 a host (22 GiB each on average, on 2 TiB hosts) do not fit on %d hosts; raise --hosts", devservers, hosts)
			}
			if b.PerSource < 0 || b.PerDest < 0 || b.PerSite < 0 || b.Total < 0 {
				return usagef("--per-source, --per-dest, --per-site and --total must not be negative (0: the default)")
			}
			return a.runBench("", func(_ string, out io.Writer) (any, error) {
				return benchmark.RunDrain(benchmark.DrainOptions{Hosts: hosts, Devservers: devservers, Runs: runs, Budgets: b}, out)
			})
		},
	}
	cmd.Flags().IntVar(&hosts, "hosts", 1000, "hosts in the drained region")
	cmd.Flags().IntVar(&devservers, "devservers", 50000, "devservers in the drained region")
	cmd.Flags().IntVar(&runs, "runs", 5, "plans timed per drain")
	cmd.Flags().IntVar(&b.PerSource, "per-source", 0, "moves leaving one host at once (0: the default, 2)")
	cmd.Flags().IntVar(&b.PerDest, "per-dest", 0, "moves arriving at one host at once (0: the default, 2)")
	cmd.Flags().IntVar(&b.PerSite, "per-site", 0, "moves leaving or arriving at one site at once (0: the default, 4)")
	cmd.Flags().IntVar(&b.Total, "total", 0, "moves of the drain at once (0: the default, 5)")
	cmd.Flags().Uint64Var(&b.BandwidthMiBps, "bandwidth", 0, "each move's bandwidth in MiB/s (0: the default, 1024)")
	return cmd
}

// runClaimIn runs one claim bench in its own directory under base, removed afterwards.
func runClaimIn(ctx context.Context, base string, o benchmark.ClaimOptions, out io.Writer) (benchmark.ClaimReport, error) {
	d, err := os.MkdirTemp(base, fmt.Sprintf("claim-%d-*", o.Clients))
	if err != nil {
		return benchmark.ClaimReport{}, err
	}
	defer os.RemoveAll(d)
	o.Dir = d
	return benchmark.RunClaim(ctx, o, out)
}

// runBench runs a bench in a scratch dir under base: its table rows go to stdout as it runs,
// or, with -o json, only its report at the end.
func (a *app) runBench(base string, run func(scratch string, out io.Writer) (any, error)) error {
	scratch, cleanup, err := scratchDir(base)
	if err != nil {
		return &callError{err: err}
	}
	defer cleanup()
	out := a.stdout
	if a.jsonOutput() {
		out = io.Discard
	}
	rep, err := run(scratch, out)
	if err != nil {
		return &callError{err: err}
	}
	if !a.jsonOutput() {
		return nil
	}
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// scratchDir returns a fresh directory under base (or the system temp dir) and its removal.
func scratchDir(base string) (string, func(), error) {
	d, err := os.MkdirTemp(base, "devfleet-bench-*")
	if err != nil {
		return "", nil, err
	}
	return d, func() { _ = os.RemoveAll(d) }, nil
}
