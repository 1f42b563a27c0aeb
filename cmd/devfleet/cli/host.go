package cli

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newHostCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "host",
		Short: "Manage hosts (hypervisors, and machines lent whole)",
	})
	cmd.AddCommand(hostAddCmd(a), hostListCmd(a), hostShowCmd(a), hostCordonCmd(a), hostUncordonCmd(a), hostDeleteCmd(a))
	return cmd
}

// hostColumns put what the devservers on a host take (USED_) beside what it has. REASON is the
// state's reason (cordon, drain); host show has the health's.
var hostColumns = []string{"NAME", "SITE", "REGION", "STATE", "HEALTH", "CPUS", "USED_CPUS", "MEMORY_MIB", "USED_MEMORY_MIB", "DISK_GIB", "GPUS", "REASON"}

func hostRow(h *v1.Host) []string {
	c, used := h.GetCapacity(), h.GetAllocated()
	return []string{
		h.GetName(), h.GetSite(), h.GetRegion(), short(h.GetState()), health(h.GetHealth()),
		i64(c.GetVcpus()), i64(used.GetVcpus()), i64(c.GetMemoryMib()), i64(used.GetMemoryMib()), i64(c.GetDiskGib()), i64(c.GetGpus()),
		h.GetStateReason(),
	}
}

func hostAddCmd(a *app) *cobra.Command {
	var (
		h          = &v1.Host{Capacity: &v1.Resources{}}
		overcommit v1.Overcommit
		reserved   v1.Resources
		hostLabels labelsFlag
	)
	cmd := &cobra.Command{
		Use:   "add NAME --site SITE (--cpus N --memory-mib M | --libvirt URI) --disk-gib D",
		Short: "Add an active host to a site",
		Long: `Add an active host to a site. A host given --libvirt is reached through that URI before it is
recorded: an unreachable libvirt, or --cpus or --memory-mib beyond what it reports, is refused.
Leave --cpus and --memory-mib out to take them from libvirt; --disk-gib is always declared.`,
		Args: exactArgs("NAME"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			// The required flags are checked here rather than by cobra, since --cpus and
			// --memory-mib are required only without --libvirt.
			fl := cmd.Flags()
			libvirt := fl.Changed("libvirt")
			var missing []string
			for _, name := range []string{"cpus", "disk-gib", "memory-mib", "site"} {
				if !fl.Changed(name) && (!libvirt || name == "disk-gib" || name == "site") {
					missing = append(missing, strconv.Quote(name))
				}
			}
			switch {
			case len(missing) > 0:
				return usagef("required flag(s) %s not set", strings.Join(missing, ", "))
			case libvirt && fl.Changed("cpus") != fl.Changed("memory-mib"):
				return usagef("give both --cpus and --memory-mib, or neither to take them from libvirt")
			}
			return nil
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		h.Name, h.Labels = args[0], hostLabels.m
		// Overcommit and reserve go out only when given, so that the server's defaults apply.
		fl := cmd.Flags()
		if fl.Changed("cpu-overcommit") || fl.Changed("memory-overcommit") {
			h.Overcommit = &overcommit
		}
		if fl.Changed("reserved-cpus") || fl.Changed("reserved-memory-mib") {
			h.Reserved = &reserved
		}
		out, err := c.fleet.CreateHost(ctx, &v1.CreateHostRequest{Host: h})
		if err != nil {
			return err
		}
		return a.done(out, "host %s created in site %s (region %s)", out.GetName(), out.GetSite(), out.GetRegion())
	})
	f := cmd.Flags()
	f.StringVar(&h.Site, "site", "", "site the host sits in; fixed once created (required)")
	f.Int64Var(&h.Capacity.Vcpus, "cpus", 0, "vCPUs the host has (required without --libvirt; with it, default: what libvirt reports)")
	f.Int64Var(&h.Capacity.MemoryMib, "memory-mib", 0, "memory the host has, in MiB (required without --libvirt; with it, default: what libvirt reports)")
	f.Int64Var(&h.Capacity.DiskGib, "disk-gib", 0, "disk the host has, in GiB (required)")
	f.Int64Var(&h.Capacity.Gpus, "gpus", 0, "GPUs the host has")
	f.StringVar(&h.LibvirtUri, "libvirt", "", "libvirt connection URI (leave out for hosts devfleet does not drive through libvirt)")
	f.StringVar(&h.MigrationUri, "migration-uri", "", "libvirt URI other hosts' daemons reach this one at for live migration, e.g. qemu+tcp://10.0.0.12/system (default: --libvirt)")
	f.Var(&hostLabels, "label", "label as key=value (repeatable)")
	f.Float64Var(&overcommit.Cpu, "cpu-overcommit", 0, "vCPU overcommit ratio for placement (server default: 1, none)")
	f.Float64Var(&overcommit.Memory, "memory-overcommit", 0, "memory overcommit ratio for placement (server default: 1, none)")
	f.Int64Var(&reserved.Vcpus, "reserved-cpus", 0, "vCPUs held back for the hypervisor itself")
	f.Int64Var(&reserved.MemoryMib, "reserved-memory-mib", 0, "memory held back for the hypervisor itself, in MiB")
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	return cmd
}

func hostListCmd(a *app) *cobra.Command {
	var (
		rf           readFlags
		region, site string
		state        = newEnumFlag(v1.HostState_HOST_STATE_UNSPECIFIED)
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List hosts",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req := &v1.ListHostsRequest{Region: region, Site: site, State: v1.HostState(state.num), Stale: rf.stale}
			hosts, err := listHosts(ctx, c, req, rf.pageSize)
			if err != nil {
				return err
			}
			return printList(a, hosts, hostColumns, hostRow)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&region, "region", "", "only hosts in this region")
	f.StringVar(&site, "site", "", "only hosts in this site")
	f.Var(state, "state", "only hosts in this state: "+orList(state.names()))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("state", state.complete)
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listHosts(ctx context.Context, c client, req *v1.ListHostsRequest, pageSize int32) ([]*v1.Host, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Host, string, error) {
		req.PageSize, req.PageToken = pageSize, token
		resp, err := c.fleet.ListHosts(ctx, req)
		return resp.GetHosts(), resp.GetNextPageToken(), err
	})
}

func hostShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a host",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(hostNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			h, err := c.fleet.GetHost(ctx, &v1.GetHostRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, h, append([]field{
				{"name", h.GetName()},
				{"site", h.GetSite()},
				{"region", h.GetRegion()},
				{"state", short(h.GetState())},
				{"state_reason", h.GetStateReason()},
				{"state_change_time", ts(h.GetStateChangeTime())},
				{"health", health(h.GetHealth())},
				{"health_reason", h.GetHealthReason()},
				{"last_seen_time", ts(h.GetLastSeenTime())},
				{"capacity", resources(h.GetCapacity())},
				{"reserved", resources(h.GetReserved())},
				{"allocated", resources(h.GetAllocated())},
				{"overcommit", overcommit(h.GetOvercommit())},
				{"labels", labels(h.GetLabels())},
				{"libvirt_uri", h.GetLibvirtUri()},
				{"migration_uri", h.GetMigrationUri()},
			}, timestamps(h.GetCreateTime(), h.GetUpdateTime(), h.GetCreateIndex(), h.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func hostCordonCmd(a *app) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               "cordon NAME --reason TEXT",
		Short:             "Stop placing new work on a host",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(hostNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			h, err := c.fleet.CordonHost(ctx, &v1.CordonHostRequest{Name: args[0], Reason: reason})
			if err != nil {
				return err
			}
			return a.done(h, "host %s %s: %s", h.GetName(), short(h.GetState()), h.GetStateReason())
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the host stops taking new work (required)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func hostUncordonCmd(a *app) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               "uncordon NAME",
		Short:             "Let a cordoned host take new work again",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(hostNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			h, err := c.fleet.UncordonHost(ctx, &v1.UncordonHostRequest{Name: args[0], Reason: reason})
			if err != nil {
				return err
			}
			if h.GetState() == v1.HostState_HOST_STATE_ACTIVE {
				return a.done(h, "host %s uncordoned", h.GetName())
			}
			return a.done(h, "host %s is %s", h.GetName(), short(h.GetState()))
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the host takes work again (for the record)")
	return cmd
}

func hostDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a host that runs no devservers",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(hostNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteHost(ctx, &v1.DeleteHostRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "host %s deleted", args[0])
		}),
	}
}

// hostNames lists host names for shell completion.
func hostNames(ctx context.Context, c client) ([]string, error) {
	hosts, err := listHosts(ctx, c, &v1.ListHostsRequest{Stale: true}, defaultPageSize)
	if err != nil {
		return nil, err
	}
	return names(hosts), nil
}
