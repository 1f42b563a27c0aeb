package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// ownerEnv names the environment variable container claim takes its owner from when --owner is
// left out.
const ownerEnv = "USER"

func newProfileCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "profile",
		Short: "Manage container profiles (the kinds of on-demand containers: size and lifetime)",
	})
	cmd.AddCommand(profileAddCmd(a), profileListCmd(a), profileDeleteCmd(a))
	return cmd
}

func profileAddCmd(a *app) *cobra.Command {
	var (
		p   = &v1.ContainerProfile{}
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add NAME --cpus N --memory-mib M [--ttl DURATION] [--description D]",
		Short: "Create a container profile",
		Long: `Create a container profile: the size of its containers and how long a claimed one lives before
devfleet reaps it (--ttl, 1m to 14 days; default 36h). Containers of the profile are handed out
by "devfleet container claim", from the warm pools "devfleet pool set" keeps.`,
		Example: `  devfleet profile add www --cpus 2 --memory-mib 4096 --description "web frontend"
  devfleet profile add jupyter --cpus 8 --memory-mib 32768 --ttl 8h`,
		Args: exactArgs("NAME"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("ttl") && ttl <= 0 {
				return usagef("--ttl must be positive, got %s", ttl)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			p.Name = args[0]
			if ttl > 0 {
				p.Ttl = durationpb.New(ttl)
			}
			out, err := c.containers.CreateProfile(ctx, &v1.CreateProfileRequest{Profile: p})
			if err != nil {
				return err
			}
			return a.done(out, "container profile %s created (vcpus=%d memory_mib=%d; claimed containers live %s)",
				out.GetName(), out.GetVcpus(), out.GetMemoryMib(), ttlString(out.GetTtl()))
		}),
	}
	f := cmd.Flags()
	f.Int64Var(&p.Vcpus, "cpus", 0, "vCPUs of a container of this profile (required)")
	f.Int64Var(&p.MemoryMib, "memory-mib", 0, "memory of a container, in MiB (required)")
	f.DurationVar(&ttl, "ttl", 0, "how long a claimed container lives before it is reaped, e.g. 8h (server default: 36h)")
	f.StringVar(&p.Description, "description", "", "what the profile is for")
	for _, name := range []string{"cpus", "memory-mib"} {
		_ = cmd.MarkFlagRequired(name)
	}
	for _, name := range []string{"cpus", "memory-mib", "ttl", "description"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

// ttlString is a profile's ttl as Go writes durations, without zero minutes and seconds (36h,
// not 36h0m0s).
func ttlString(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	s := d.AsDuration().String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func profileListCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List container profiles",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.containers.ListProfiles(ctx, &v1.ListProfilesRequest{Stale: rf.stale})
			if err != nil {
				return err
			}
			header := []string{"NAME", "CPUS", "MEMORY_MIB", "TTL", "DESCRIPTION"}
			return printList(a, resp.GetProfiles(), header, func(p *v1.ContainerProfile) []string {
				return []string{p.GetName(), i64(p.GetVcpus()), i64(p.GetMemoryMib()), ttlString(p.GetTtl()), p.GetDescription()}
			})
		}),
	}
	addReadFlags(cmd, &rf, false) // one call: profiles are not paged
	return cmd
}

func profileDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a container profile that has no containers and no pool",
		Long: `Delete a container profile. A profile that still has containers, or a pool in some region
(set its target to 0 first), is refused.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(profileNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			out, err := c.containers.DeleteProfile(ctx, &v1.DeleteProfileRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(out, "container profile %s deleted", args[0])
		}),
	}
}

// profileNames lists container profile names for shell completion.
func profileNames(ctx context.Context, c client) ([]string, error) {
	resp, err := c.containers.ListProfiles(ctx, &v1.ListProfilesRequest{Stale: true})
	if err != nil {
		return nil, err
	}
	return names(resp.GetProfiles()), nil
}

func newPoolCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "pool",
		Short: "Manage warm container pools (per region and profile)",
	})
	cmd.AddCommand(poolSetCmd(a), poolListCmd(a))
	return cmd
}

func poolSetCmd(a *app) *cobra.Command {
	var req v1.SetPoolRequest
	cmd := &cobra.Command{
		Use:   "set --region REGION --profile PROFILE --target N",
		Short: "Set how many warm containers of a profile a region keeps",
		Long: `Set how many warm (started, unclaimed) containers of a profile a region keeps, so that a claim
is answered at once. The provisioner on the leader starts or removes containers until the pool
is at its target, spread over the region's hosts. --target 0 removes the pool: every claim then
creates its container.`,
		Example: `  devfleet pool set --region eu-west --profile www --target 20
  devfleet pool set --region eu-west --profile www --target 0`,
		Args: exactArgs(),
		PreRunE: func(*cobra.Command, []string) error {
			if req.Target < 0 {
				return usagef("--target must not be negative, got %d", req.Target)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			p, err := c.containers.SetPool(ctx, &req)
			if err != nil {
				return err
			}
			if p.GetTarget() == 0 {
				return a.done(p, "pool %s/%s removed: claims of %s in %s create their containers", p.GetRegion(), p.GetProfile(), p.GetProfile(), p.GetRegion())
			}
			return a.done(p, "pool %s/%s keeps %s", p.GetRegion(), p.GetProfile(), plural(int64(p.GetTarget()), "warm container", "warm containers"))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Region, "region", "", "region of the pool (required)")
	f.StringVar(&req.Profile, "profile", "", "container profile of the pool (required)")
	f.Int32Var(&req.Target, "target", 0, "warm containers to keep; 0 removes the pool (required)")
	for _, name := range []string{"region", "profile", "target"} {
		_ = cmd.MarkFlagRequired(name)
	}
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("profile", a.completeNames(profileNames))
	_ = cmd.RegisterFlagCompletionFunc("target", cobra.NoFileCompletions)
	return cmd
}

func poolListCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List warm container pools with what they hold now",
		Long: `List the pools (those with a target above 0) and what each holds now: WARM containers run
unclaimed, WARMING ones are being started, CLAIMED ones were handed out and not yet released.

With -o json the command prints one object per pool: {"pool": {...}, "warm": N, "warming": N,
"claimed": N}, counts of 0 left out.`,
		Args: exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.containers.ListPools(ctx, &v1.ListPoolsRequest{Stale: rf.stale})
			if err != nil {
				return err
			}
			header := []string{"REGION", "PROFILE", "TARGET", "WARM", "WARMING", "CLAIMED"}
			return printList(a, resp.GetPools(), header, func(s *v1.PoolStatus) []string {
				p := s.GetPool()
				return []string{
					p.GetRegion(), p.GetProfile(), i64(int64(p.GetTarget())),
					i64(int64(s.GetWarm())), i64(int64(s.GetWarming())), i64(int64(s.GetClaimed())),
				}
			})
		}),
	}
	addReadFlags(cmd, &rf, false) // one call: pools are not paged
	return cmd
}

// newContainerCmd is `container`; getenv supplies $USER, the default owner of a claim.
func newContainerCmd(a *app, getenv func(string) string) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "container",
		Short: "Claim, list and release on-demand containers",
	})
	cmd.AddCommand(
		containerClaimCmd(a, getenv),
		containerReleaseCmd(a),
		containerListCmd(a),
		containerShowCmd(a),
	)
	return cmd
}

func containerClaimCmd(a *app, getenv func(string) string) *cobra.Command {
	var req v1.ClaimContainerRequest
	cmd := &cobra.Command{
		Use:   "claim --profile PROFILE --region REGION [--owner USER]",
		Short: "Get a container of a profile: a warm one from the pool, or a new one",
		Long: `Claim a container of a profile in a region. When the region's pool of the profile has a warm
container, it is handed over at once (a pool hit) and the provisioner starts another to refill
the pool. Otherwise devfleet places a new one for the claim (a miss), which runs a few seconds
later: "devfleet container show NAME" tells when its state is running.

The container is the owner's until it is released ("devfleet container release") or its
profile's ttl runs out. --owner defaults to $` + ownerEnv + `.

With -o json the command prints the API's response: {"container": {...}, "pool_hit": true},
pool_hit left out on a miss.`,
		Example: `  devfleet container claim --profile www --region eu-west
  devfleet container claim --profile jupyter --region eu-west --owner bob -o json`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("owner") {
				if req.Owner == "" {
					return usagef("--owner must not be empty")
				}
				return nil
			}
			if req.Owner = getenv(ownerEnv); req.Owner == "" {
				return usagef("give --owner USER ($%s is not set)", ownerEnv)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			resp, err := c.containers.ClaimContainer(ctx, &req)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, resp)
			}
			_, err = fmt.Fprintln(a.stdout, claimOutcome(resp))
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Profile, "profile", "", "container profile (required)")
	f.StringVar(&req.Region, "region", "", "region to run in (required)")
	f.StringVar(&req.Owner, "owner", "", "user the container is for (default: $"+ownerEnv+")")
	for _, name := range []string{"profile", "region"} {
		_ = cmd.MarkFlagRequired(name)
	}
	_ = cmd.RegisterFlagCompletionFunc("profile", a.completeNames(profileNames))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	return cmd
}

// claimOutcome is the line container claim prints: where the container came from, where it
// runs and when it expires.
func claimOutcome(resp *v1.ClaimContainerResponse) string {
	c := resp.GetContainer()
	what := fmt.Sprintf("container %s (%s, %s)", c.GetName(), c.GetProfile(), c.GetRegion())
	if resp.GetPoolHit() {
		return fmt.Sprintf("%s claimed from the warm pool on host %s; expires %s", what, cell(c.GetHost()), cell(ts(c.GetExpireTime())))
	}
	return fmt.Sprintf("%s created for you on host %s (the pool had no warm container): it runs in a few seconds; expires %s",
		what, cell(c.GetHost()), cell(ts(c.GetExpireTime())))
}

func containerReleaseCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "release NAME",
		Short: "Give a claimed container back; it is deleted",
		Long: `Give a container back. It is marked deleted at once; the provisioner then removes its guest and
the record goes. Pools refill with new containers, never with released ones. Releasing a
container already released changes nothing.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(containerNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			out, err := c.containers.ReleaseContainer(ctx, &v1.ReleaseContainerRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(out, "container %s released; its guest on host %s is being removed", out.GetName(), cell(out.GetHost()))
		}),
	}
}

func containerListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListContainersRequest
	)
	cmd := &cobra.Command{
		Use:   "list [--region R] [--profile P] [--owner USER]",
		Short: "List containers, warm and claimed",
		Long: `List containers: the pools' warm ones (CLAIMED_BY empty) and the claimed ones. STATE is
provisioning (its guest is being made), running, or deleted (released or expired; its guest is
being removed, then it leaves the list).`,
		Args: exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			resp, err := c.containers.ListContainers(ctx, &req)
			if err != nil {
				return err
			}
			header := []string{"NAME", "PROFILE", "REGION", "HOST", "STATE", "CLAIMED_BY", "EXPIRES"}
			return printList(a, resp.GetContainers(), header, func(c *v1.Container) []string {
				return []string{
					c.GetName(), c.GetProfile(), c.GetRegion(), c.GetHost(),
					short(c.GetState()), c.GetClaimedBy(), ts(c.GetExpireTime()),
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Region, "region", "", "only containers in this region")
	f.StringVar(&req.Profile, "profile", "", "only containers of this profile")
	f.StringVar(&req.ClaimedBy, "owner", "", "only containers claimed by this user")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("profile", a.completeNames(profileNames))
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	addReadFlags(cmd, &rf, false) // one call: containers are not paged
	return cmd
}

func containerShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a container",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(containerNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			ct, err := c.containers.GetContainer(ctx, &v1.GetContainerRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, ct, []field{
				{"name", ct.GetName()},
				{"id", ct.GetId()},
				{"profile", ct.GetProfile()},
				{"region", ct.GetRegion()},
				{"site", ct.GetSite()},
				{"host", ct.GetHost()},
				{"state", short(ct.GetState())},
				{"state_reason", ct.GetStateReason()},
				{"claimed_by", ct.GetClaimedBy()},
				{"claim_time", ts(ct.GetClaimTime())},
				{"expire_time", ts(ct.GetExpireTime())},
				{"create_time", ts(ct.GetCreateTime())},
				{"create_index", u64(ct.GetCreateIndex())},
				{"modify_index", u64(ct.GetModifyIndex())},
			})
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

// containerNames lists container names for shell completion.
func containerNames(ctx context.Context, c client) ([]string, error) {
	resp, err := c.containers.ListContainers(ctx, &v1.ListContainersRequest{Stale: true})
	if err != nil {
		return nil, err
	}
	return names(resp.GetContainers()), nil
}
