package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newDevserverCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "devserver",
		Short: "Manage devservers (developers' machines)",
	})
	cmd.AddCommand(
		devserverCreateCmd(a),
		devserverListCmd(a),
		devserverShowCmd(a),
		devserverExtendCmd(a),
		devserverShareCmd(a),
		devserverUnshareCmd(a),
		devserverStopCmd(a),
		devserverStartCmd(a),
		devserverDeleteCmd(a),
		devserverMigrateCmd(a),
		devserverHistoryCmd(a),
	)
	return cmd
}

func devserverCreateCmd(a *app) *cobra.Command {
	var (
		d         = &v1.Devserver{}
		expiresIn time.Duration
		permanent bool
		site      string
		spread    spreadFlag
	)
	cmd := &cobra.Command{
		Use:   "create NAME --owner USER --flavor FLAVOR --region REGION (--expires-in DURATION | --permanent)",
		Short: "Create a devserver, placed by devfleet unless --host is given",
		Long: `Create a devserver record. Without --host, devfleet places it: on an active, healthy host of the
region (or of --site) with room for the flavor, the fullest that fits, keeping the region's
reserve. When nothing fits, the command fails and says why host by host
("no room for flavor xl: region eu: 3 hosts; 3 lack vCPUs for flavor xl (need 16)").
"devfleet capacity place" answers the same question without creating anything.

A devserver is temporary (--expires-in, 1h to 365 days) or --permanent; one of them is required.
--feature asks for optional extras by name; they are fixed at creation.`,
		Example: `  devfleet devserver create bob-dev --owner bob --flavor small --region eu-west --expires-in 72h
  devfleet devserver create ci-1 --owner ci --flavor xl --region eu-west --permanent --spread hosts
  devfleet devserver create db-1 --owner bob --flavor metal --region eu-west --permanent --host fra1-h7
  devfleet devserver create gpu-1 --owner bob --flavor gpu --region eu-west --permanent --feature cuda --feature docker`,
		Args: exactArgs("NAME"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			switch {
			case fl.Changed("expires-in") && permanent:
				return usagef("--expires-in and --permanent exclude each other")
			case !fl.Changed("expires-in") && !permanent:
				return usagef("give --expires-in DURATION for a temporary devserver, or --permanent")
			case fl.Changed("expires-in") && expiresIn <= 0:
				return usagef("--expires-in must be positive, got %s", expiresIn)
			}
			if fl.Changed("host") && anyChanged(cmd, "site", "spread") {
				return usagef("--site and --spread guide placement; leave them out with --host")
			}
			if err := nonEmptyList(cmd, "feature", d.Features); err != nil {
				return err
			}
			return nonEmptyList(cmd, "sharer", d.Sharers)
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		d.Name = args[0]
		req := &v1.CreateDevserverRequest{Devserver: d, Site: site, Spread: spread.value}
		if permanent {
			d.Lifespan = v1.Lifespan_LIFESPAN_PERMANENT
		} else {
			req.ExpiresIn = durationpb.New(expiresIn)
		}
		out, err := c.fleet.CreateDevserver(ctx, req)
		if err != nil {
			return err
		}
		return a.done(out, "devserver %s created on %s (site %s, region %s), %s", out.GetName(), out.GetHost(), out.GetSite(), out.GetRegion(), expiry(out))
	})
	f := cmd.Flags()
	f.StringVar(&d.Owner, "owner", "", "user the devserver belongs to (required)")
	f.StringVar(&d.Flavor, "flavor", "", "size of the devserver (required)")
	f.StringVar(&d.Region, "region", "", "region to run in (required)")
	f.DurationVar(&expiresIn, "expires-in", 0, "temporary: expire this long from now (e.g. 72h)")
	f.BoolVar(&permanent, "permanent", false, "never expire")
	f.StringVar(&d.Host, "host", "", "run on this host instead of letting devfleet place it")
	f.StringVar(&site, "site", "", "place only in this site of the region")
	f.Var(&spread, "spread", "keep away from the owner's other devservers: hosts (not on a host that runs one) or sites")
	f.StringSliceVar(&d.Sharers, "sharer", nil, "user who may use the devserver too (repeatable, or comma-separated)")
	f.StringSliceVar(&d.Features, "feature", nil, "optional extra to set up, by name; fixed once created (repeatable, or comma-separated)")
	for _, name := range []string{"owner", "flavor", "region"} {
		_ = cmd.MarkFlagRequired(name)
	}
	_ = cmd.RegisterFlagCompletionFunc("flavor", a.completeNames(flavorNames))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("host", a.completeNames(hostNames))
	_ = cmd.RegisterFlagCompletionFunc("spread", spread.complete)
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("sharer", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("feature", cobra.NoFileCompletions)
	return cmd
}

// expiry is "expires <time>" for a temporary devserver, "permanent" for a permanent one.
func expiry(d *v1.Devserver) string {
	if d.GetLifespan() == v1.Lifespan_LIFESPAN_PERMANENT {
		return "permanent"
	}
	return "expires " + ts(d.GetExpireTime())
}

func devserverListCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.ListDevserversRequest
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devservers",
		Args:  exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Stale = rf.stale
			devservers, err := listDevservers(ctx, c, &req, rf.pageSize)
			if err != nil {
				return err
			}
			header := []string{"NAME", "OWNER", "FLAVOR", "REGION", "SITE", "HOST", "STATE", "LIFESPAN", "EXPIRES"}
			return printList(a, devservers, header, func(d *v1.Devserver) []string {
				return []string{
					d.GetName(), d.GetOwner(), d.GetFlavor(), d.GetRegion(), d.GetSite(), d.GetHost(),
					short(d.GetState()), short(d.GetLifespan()), ts(d.GetExpireTime()),
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Region, "region", "", "only devservers in this region")
	f.StringVar(&req.Site, "site", "", "only devservers in this site")
	f.StringVar(&req.Host, "host", "", "only devservers on this host")
	f.StringVar(&req.Owner, "owner", "", "only devservers of this user")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("host", a.completeNames(hostNames))
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	addReadFlags(cmd, &rf, true)
	return cmd
}

func listDevservers(ctx context.Context, c client, req *v1.ListDevserversRequest, pageSize int32) ([]*v1.Devserver, error) {
	return listAll(ctx, func(ctx context.Context, token string) ([]*v1.Devserver, string, error) {
		req.PageSize, req.PageToken = pageSize, token
		resp, err := c.fleet.ListDevservers(ctx, req)
		return resp.GetDevservers(), resp.GetNextPageToken(), err
	})
}

func devserverShowCmd(a *app) *cobra.Command {
	var rf readFlags
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a devserver",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: args[0], Stale: rf.stale})
			if err != nil {
				return err
			}
			return printObject(a, d, devserverFields(d))
		}),
	}
	addReadFlags(cmd, &rf, false)
	return cmd
}

// devserverFields are the lines of devserver show. The output-only fields most devservers do
// not have (domain, repairs, the expiry notice, deletion) appear only when set.
func devserverFields(d *v1.Devserver) []field {
	fs := []field{
		{"name", d.GetName()},
		{"id", d.GetId()},
		{"owner", d.GetOwner()},
		{"sharers", strings.Join(d.GetSharers(), ",")},
		{"flavor", d.GetFlavor()},
	}
	fs = optional(fs, "features", strings.Join(d.GetFeatures(), ","))
	fs = append(fs,
		field{"region", d.GetRegion()},
		field{"site", d.GetSite()},
		field{"host", d.GetHost()},
	)
	fs = optional(fs, "domain", d.GetDomain())
	fs = append(fs,
		field{"lifespan", short(d.GetLifespan())},
		field{"expire_time", ts(d.GetExpireTime())},
	)
	fs = optional(fs, "expiry_notice_time", ts(d.GetExpiryNoticeTime()))
	fs = append(fs,
		field{"power", power(d.GetPower())},
		field{"state", short(d.GetState())},
		field{"state_reason", d.GetStateReason()},
	)
	if d.GetRepairs() > 0 {
		fs = append(fs, field{"repairs", i64(int64(d.GetRepairs()))})
	}
	fs = optional(fs, "delete_time", ts(d.GetDeleteTime()))
	return append(fs, timestamps(d.GetCreateTime(), d.GetUpdateTime(), d.GetCreateIndex(), d.GetModifyIndex())...)
}

func devserverExtendCmd(a *app) *cobra.Command {
	var by time.Duration
	cmd := &cobra.Command{
		Use:   "extend NAME --by DURATION",
		Short: "Push a temporary devserver's expiry back",
		Long: `Move a temporary devserver's expiry DURATION later: the new expire_time is the current one
plus DURATION, not now plus DURATION. A permanent devserver has no expiry and is refused.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("by") && by <= 0 {
				return usagef("--by must be positive, got %s", by)
			}
			return nil
		},
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		out, err := updateDevserver(ctx, c, args[0], "expire_time", func(cur *v1.Devserver) (*v1.Devserver, error) {
			if cur.GetLifespan() == v1.Lifespan_LIFESPAN_PERMANENT || cur.GetExpireTime() == nil {
				return nil, status.Errorf(codes.FailedPrecondition, "devserver %q is permanent: it does not expire, so there is nothing to extend", cur.GetName())
			}
			return &v1.Devserver{Name: cur.GetName(), ExpireTime: timestamppb.New(cur.GetExpireTime().AsTime().Add(by))}, nil
		})
		if err != nil {
			return err
		}
		return a.done(out, "devserver %s %s", out.GetName(), expiry(out))
	})
	cmd.Flags().DurationVar(&by, "by", 0, "how much longer the devserver lives, e.g. 24h (required)")
	_ = cmd.MarkFlagRequired("by")
	return cmd
}

func devserverShareCmd(a *app) *cobra.Command {
	var with []string
	cmd := &cobra.Command{
		Use:               "share NAME --with USER [--with USER]",
		Short:             "Let more users use a devserver",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		PreRunE:           func(cmd *cobra.Command, _ []string) error { return nonEmptyList(cmd, "with", with) },
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		return a.updateSharers(ctx, c, args[0], func(d *v1.Devserver) ([]string, error) {
			sharers := slices.Clone(d.GetSharers())
			for _, u := range with {
				if !slices.Contains(sharers, u) {
					sharers = append(sharers, u)
				}
			}
			return sharers, nil
		})
	})
	cmd.Flags().StringSliceVar(&with, "with", nil, "user to share with (repeatable, or comma-separated; required)")
	_ = cmd.MarkFlagRequired("with")
	_ = cmd.RegisterFlagCompletionFunc("with", cobra.NoFileCompletions)
	return cmd
}

func devserverUnshareCmd(a *app) *cobra.Command {
	var with []string
	cmd := &cobra.Command{
		Use:               "unshare NAME --with USER [--with USER]",
		Short:             "Stop sharing a devserver with users",
		Long:              `Stop sharing a devserver with users. Naming a user it is not shared with fails and changes nothing.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		PreRunE:           func(cmd *cobra.Command, _ []string) error { return nonEmptyList(cmd, "with", with) },
	}
	cmd.RunE = a.action(func(ctx context.Context, c client, args []string) error {
		return a.updateSharers(ctx, c, args[0], func(d *v1.Devserver) ([]string, error) {
			var missing []string
			for _, u := range distinct(with) {
				if !slices.Contains(d.GetSharers(), u) {
					missing = append(missing, u)
				}
			}
			if len(missing) > 0 {
				return nil, status.Errorf(codes.FailedPrecondition, "devserver %q is not shared with %s", d.GetName(), strings.Join(missing, ", "))
			}
			return slices.DeleteFunc(slices.Clone(d.GetSharers()), func(u string) bool { return slices.Contains(with, u) }), nil
		})
	})
	cmd.Flags().StringSliceVar(&with, "with", nil, "user to stop sharing with (repeatable, or comma-separated; required)")
	_ = cmd.MarkFlagRequired("with")
	_ = cmd.RegisterFlagCompletionFunc("with", cobra.NoFileCompletions)
	return cmd
}

// updateSharers reads a devserver, computes its new sharers and writes them (compare-and-set,
// so a concurrent change of the sharers is never lost). An unchanged list is not written.
func (a *app) updateSharers(ctx context.Context, c client, name string, change func(*v1.Devserver) ([]string, error)) error {
	unchanged := errors.New("unchanged")
	var cur *v1.Devserver
	d, err := updateDevserver(ctx, c, name, "sharers", func(d *v1.Devserver) (*v1.Devserver, error) {
		cur = d
		sharers, err := change(d)
		if err != nil {
			return nil, err
		}
		if slices.Equal(sharers, d.GetSharers()) {
			return nil, unchanged
		}
		return &v1.Devserver{Name: d.GetName(), Sharers: sharers}, nil
	})
	switch {
	case errors.Is(err, unchanged):
		d = cur
	case err != nil:
		return err
	}
	who := strings.Join(d.GetSharers(), ", ")
	if who == "" {
		who = "nobody"
	}
	return a.done(d, "devserver %s is shared with %s", d.GetName(), who)
}

// casAttempts bounds the read-change-write rounds when others keep changing the devserver.
const casAttempts = 20

// updateDevserver reads a devserver, lets change compute the update of one field, and writes it
// only if nobody changed the devserver meanwhile (expected_modify_index); on such a conflict it
// reads again and recomputes.
func updateDevserver(ctx context.Context, c client, name, path string, change func(*v1.Devserver) (*v1.Devserver, error)) (*v1.Devserver, error) {
	for attempt := 1; ; attempt++ {
		cur, err := c.fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: name})
		if err != nil {
			return nil, err
		}
		in, err := change(cur)
		if err != nil {
			return nil, err
		}
		out, err := c.fleet.UpdateDevserver(ctx, &v1.UpdateDevserverRequest{Devserver: in,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{path}}, ExpectedModifyIndex: cur.GetModifyIndex()})
		if status.Code(err) == codes.Aborted && attempt < casAttempts {
			// Someone else changed it first: back off a little (jittered), read again.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(rand.IntN(10*attempt)+1) * time.Millisecond):
			}
			continue
		}
		return out, err
	}
}

func devserverStopCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Shut a devserver's guest down; it keeps its host and its room there",
		Long: `Ask for a devserver's guest to be shut down. The devserver keeps its host and the room it takes
there, so "devserver start" brings it back on the same host. The command records the request;
on a libvirt host the provisioner then shuts the guest down, and the state follows (stopped).`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.fleet.StopDevserver(ctx, &v1.StopDevserverRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(d, "devserver %s: power off asked; it keeps host %s and its room (state %s)", d.GetName(), cell(d.GetHost()), cell(short(d.GetState())))
		}),
	}
}

func devserverStartCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "start NAME",
		Short: "Start a stopped devserver's guest again, on the host it kept",
		Long: `Ask for a devserver's guest to run again. The command records the request; on a libvirt host
the provisioner then starts the guest, and the state follows (running).`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			d, err := c.fleet.StartDevserver(ctx, &v1.StartDevserverRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return a.done(d, "devserver %s: power on asked (host %s, state %s)", d.GetName(), cell(d.GetHost()), cell(short(d.GetState())))
		}),
	}
}

func devserverDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a devserver, freeing its room on the host",
		Long: `Delete a devserver. On a host devfleet drives through libvirt, the devserver is marked for
deletion (state deleted) and its guest is removed first; the record and its room on the host go
once the guest is gone. Elsewhere the record goes at once.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			resp, err := c.fleet.DeleteDevserver(ctx, &v1.DeleteDevserverRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, resp)
			}
			// DeleteResponse does not say whether the record went or waits for its guest; a
			// consistent read after the delete does. The delete succeeded whatever the read says.
			d, err := c.fleet.GetDevserver(ctx, &v1.GetDevserverRequest{Name: args[0]})
			_, werr := fmt.Fprintln(a.stdout, deleteOutcome(args[0], d, err))
			return werr
		}),
	}
}

// deleteOutcome is the line devserver delete prints, from what a read right after the delete
// found: nothing (the record went at once), the devserver marked for deletion (its guest goes
// first), or something else (another devserver of the same name, or a failed read).
func deleteOutcome(name string, d *v1.Devserver, readErr error) string {
	switch {
	case status.Code(readErr) == codes.NotFound:
		return fmt.Sprintf("devserver %s deleted", name)
	case readErr == nil && d.GetDeleteTime() != nil:
		return fmt.Sprintf("devserver %s is being deleted (its guest is removed first)", name)
	}
	return fmt.Sprintf("devserver %s: deletion accepted", name)
}

// devserverNames lists devserver names for shell completion.
func devserverNames(ctx context.Context, c client) ([]string, error) {
	devservers, err := listDevservers(ctx, c, &v1.ListDevserversRequest{Stale: true}, defaultPageSize)
	if err != nil {
		return nil, err
	}
	return names(devservers), nil
}
