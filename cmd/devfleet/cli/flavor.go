package cli

import (
	"context"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newFlavorCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "flavor",
		Short: "Manage flavors (the sizes developers pick for devservers)",
	})
	cmd.AddCommand(flavorAddCmd(a), flavorListCmd(a), flavorShowCmd(a), flavorDeleteCmd(a))
	return cmd
}

func flavorAddCmd(a *app) *cobra.Command {
	var (
		fl   = &v1.Flavor{Resources: &v1.Resources{}}
		kind = newEnumFlag(v1.FlavorKind_FLAVOR_KIND_UNSPECIFIED)
	)
	cmd := &cobra.Command{
		Use:   "add NAME --cpus N --memory-mib M --disk-gib D",
		Short: "Create a flavor",
		Args:  exactArgs("NAME"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			fl.Name, fl.Kind = args[0], v1.FlavorKind(kind.num)
			out, err := c.fleet.CreateFlavor(ctx, &v1.CreateFlavorRequest{Flavor: fl})
			if err != nil {
				return err
			}
			return a.done(out, "flavor %s created (%s: %s)", out.GetName(), short(out.GetKind()), resources(out.GetResources()))
		}),
	}
	f := cmd.Flags()
	f.Int64Var(&fl.Resources.Vcpus, "cpus", 0, "vCPUs of a devserver of this flavor (required)")
	f.Int64Var(&fl.Resources.MemoryMib, "memory-mib", 0, "memory, in MiB (required)")
	f.Int64Var(&fl.Resources.DiskGib, "disk-gib", 0, "disk, in GiB (required)")
	f.Int64Var(&fl.Resources.Gpus, "gpus", 0, "GPUs")
	f.Var(kind, "kind", "vm or physical (server default: vm)")
	f.StringVar(&fl.Description, "description", "", "what the flavor is for")
	for _, name := range []string{"cpus", "memory-mib", "disk-gib"} {
		_ = cmd.MarkFlagRequired(name)
	}
	_ = cmd.RegisterFlagCompletionFunc("kind", kind.complete)
	return cmd
}

func flavorListCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List flavors",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			flavors, err := listFlavors(ctx, c, rf)
			if err != nil {
				return err
			}
			return printList(a, flavors, []string{"NAME", "KIND", "CPUS", "MEMORY_MIB", "DISK_GIB", "GPUS", "DESCRIPTION"}, func(f *v1.Flavor) []string {
				r := f.GetResources()
				return []string{
					f.GetName(), short(f.GetKind()),
					i64(r.GetVcpus()), i64(r.GetMemoryMib()), i64(r.GetDiskGib()), i64(r.GetGpus()),
					f.GetDescription(),
				}
			})
		}),
	}
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listFlavors(ctx context.Context, c client, rf readFlags) ([]*v1.Flavor, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Flavor, string, error) {
		resp, err := c.fleet.ListFlavors(ctx, &v1.ListFlavorsRequest{PageSize: rf.pageSize, PageToken: token, Stale: rf.stale})
		return resp.GetFlavors(), resp.GetNextPageToken(), err
	})
}

func flavorShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a flavor",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(flavorNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			f, err := c.fleet.GetFlavor(ctx, &v1.GetFlavorRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, f, append([]field{
				{"name", f.GetName()},
				{"kind", short(f.GetKind())},
				{"resources", resources(f.GetResources())},
				{"description", f.GetDescription()},
			}, timestamps(f.GetCreateTime(), f.GetUpdateTime(), f.GetCreateIndex(), f.GetModifyIndex())...))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

func flavorDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a flavor that no devserver uses",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(flavorNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteFlavor(ctx, &v1.DeleteFlavorRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(resp, "flavor %s deleted", args[0])
		}),
	}
}

// flavorNames lists flavor names for shell completion.
func flavorNames(ctx context.Context, c client) ([]string, error) {
	flavors, err := listFlavors(ctx, c, readFlags{stale: true, pageSize: defaultPageSize})
	if err != nil {
		return nil, err
	}
	return names(flavors), nil
}
