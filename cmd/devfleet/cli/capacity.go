package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newCapacityCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "capacity",
		Short: "Ask capacity questions: headroom, losing a region (N-1), placement dry runs",
		Long: `capacity answers questions from the fleet's state and changes nothing: how many more devservers
of each flavor fit per region (report), where the devservers of lost regions, sites or hosts
would go (lose), and where a new devserver would be placed (place).`,
	})
	cmd.AddCommand(capacityReportCmd(a), capacityLoseCmd(a), capacityPlaceCmd(a))
	return cmd
}

func capacityReportCmd(a *app) *cobra.Command {
	var (
		rf     readFlags
		region string
	)
	cmd := &cobra.Command{
		Use:   "report [--region REGION]",
		Short: "Headroom per region and flavor, and whether losing any one region or site is survivable",
		Long: `report prints, per region, its hosts, free room and reserve, and how many more devservers of
each flavor allowed there fit (FITS) and fit while the region keeps its reserve (BEYOND_RESERVE).
Then the N-1 check of the whole fleet, even with --region: for every region and every site, what
losing it would do. OK is yes when every devserver on it would find a new home; SHORTFALL counts
those that would not, per flavor.`,
		Args: exactArgs(),
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			rep, err := c.capacity.GetCapacityReport(ctx, &v1.GetCapacityReportRequest{Region: region, Stale: rf.stale})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, rep)
			}
			return printCapacityReport(a.stdout, rep)
		}),
	}
	cmd.Flags().StringVar(&region, "region", "", "only this region's headroom (the N-1 check still covers the fleet)")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	addReadFlags(cmd, &rf, false)
	return cmd
}

func printCapacityReport(w io.Writer, rep *v1.CapacityReport) error {
	for _, r := range rep.GetRegions() {
		if _, err := fmt.Fprintln(w, regionHeadline(r)); err != nil {
			return err
		}
		var rows [][]string
		for _, f := range r.GetFlavors() {
			rows = append(rows, []string{f.GetFlavor(), i64(f.GetFits()), i64(f.GetFitsBeyondReserve())})
		}
		if err := printTable(w, []string{"FLAVOR", "FITS", "BEYOND_RESERVE"}, rows); err != nil {
			return err
		}
		if _, err := fmt.Fprintln(w); err != nil {
			return err
		}
	}
	var rows [][]string
	for _, l := range rep.GetLosses() {
		rows = append(rows, []string{l.GetScope(), l.GetName(), yesNo(l.GetOk()), i64(int64(l.GetAffected())), i64(int64(l.GetHomeless())), shortfall(l.GetShortfall())})
	}
	return printTable(w, []string{"SCOPE", "NAME", "OK", "AFFECTED", "HOMELESS", "SHORTFALL"}, rows)
}

// regionHeadline is one region's room on a line: "region eu: 6 hosts (5 eligible); free
// 120/380 vCPUs, 300000/1500000 MiB; reserve 2 hosts = 128 vCPUs, 524288 MiB". GPUs show
// only in regions that have some.
func regionHeadline(r *v1.RegionCapacity) string {
	free, usable, res := r.GetFree(), r.GetUsable(), r.GetReserve()
	gpus := usable.GetGpus() > 0 || res.GetGpus() > 0
	var b strings.Builder
	fmt.Fprintf(&b, "region %s: %s (%d eligible); free %d/%d vCPUs, %d/%d MiB",
		r.GetRegion(), plural(int64(r.GetHosts()), "host", "hosts"), r.GetEligibleHosts(),
		free.GetVcpus(), usable.GetVcpus(), free.GetMemoryMib(), usable.GetMemoryMib())
	if gpus {
		fmt.Fprintf(&b, ", %d/%d GPUs", free.GetGpus(), usable.GetGpus())
	}
	setting := reserve(r.GetReserveSetting())
	if setting == "" {
		b.WriteString("; no reserve")
		return b.String()
	}
	fmt.Fprintf(&b, "; reserve %s = %d vCPUs, %d MiB", setting, res.GetVcpus(), res.GetMemoryMib())
	if gpus {
		fmt.Fprintf(&b, ", %d GPUs", res.GetGpus())
	}
	return b.String()
}

// shortfall is "small:4 xl:1": devservers per flavor that would have no home.
func shortfall(s []*v1.FlavorShortfall) string {
	parts := make([]string, len(s))
	for i, f := range s {
		parts[i] = fmt.Sprintf("%s:%d", f.GetFlavor(), f.GetDevservers())
	}
	return strings.Join(parts, " ")
}

func capacityLoseCmd(a *app) *cobra.Command {
	var (
		rf  readFlags
		req v1.SimulateLossRequest
	)
	cmd := &cobra.Command{
		Use:   "lose (--region REGION | --site SITE | --hosts HOST,HOST) [--keep-reserve]",
		Short: "What if regions, sites or hosts go: where their devservers would move, and what has no home",
		Long: `lose simulates losing everything named (flags combine and repeat): every devserver on a host
that goes is placed again, largest first, by the same rules as real placement: in its own region
if that survives, otherwise in the regions its flavor allows. Surviving regions may spend their
reserves, as in a real loss; --keep-reserve forbids that (the question a drain asks).

Devservers with no home are part of the answer, not a failure: the exit code is 0 either way.
In -o json, "ok" is true when every devserver finds a home; like every false or empty field, it
is left out otherwise.`,
		Example: `  devfleet capacity lose --region eu-west
  devfleet capacity lose --site fra1 --site fra2 --keep-reserve
  devfleet capacity lose --hosts fra1-h1,fra1-h2 -o json`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if !anyChanged(cmd, "region", "site", "hosts") {
				return usagef("name what to lose: give --region, --site or --hosts")
			}
			for _, fl := range []struct {
				name string
				vals []string
			}{{"region", req.Regions}, {"site", req.Sites}, {"hosts", req.Hosts}} {
				if err := nonEmptyList(cmd, fl.name, fl.vals); err != nil {
					return err
				}
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Regions, req.Sites, req.Hosts = distinct(req.Regions), distinct(req.Sites), distinct(req.Hosts)
			req.Stale = rf.stale
			rep, err := c.capacity.SimulateLoss(ctx, &req)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, rep)
			}
			return printLossReport(a.stdout, rep)
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&req.Regions, "region", nil, "lose this region (repeatable)")
	f.StringSliceVar(&req.Sites, "site", nil, "lose this site (repeatable)")
	f.StringSliceVar(&req.Hosts, "hosts", nil, "lose these hosts, comma-separated (repeatable)")
	f.BoolVar(&req.KeepReserve, "keep-reserve", false, "keep every surviving region's reserve free")
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("hosts", a.completeNames(hostNames))
	addReadFlags(cmd, &rf, false)
	return cmd
}

func printLossReport(w io.Writer, rep *v1.LossReport) error {
	affected, homeless := int64(rep.GetAffected()), int64(len(rep.GetHomeless()))
	if affected == 0 {
		_, err := fmt.Fprintf(w, "losing %s: no devservers affected\n", rep.GetGone())
		return err
	}
	moves := int64(len(rep.GetMoves()))
	move, noHome := "move", "have no home"
	if moves == 1 {
		move = "moves"
	}
	if homeless == 1 {
		noHome = "has no home"
	}
	if _, err := fmt.Fprintf(w, "losing %s: %s affected; %d %s, %d %s\n",
		rep.GetGone(), plural(affected, "devserver", "devservers"), moves, move, homeless, noHome); err != nil {
		return err
	}
	if moves > 0 {
		var rows [][]string
		for _, m := range rep.GetMoves() {
			rows = append(rows, []string{m.GetDevserver(), m.GetFlavor(), m.GetFromHost(), m.GetToHost(), m.GetToRegion()})
		}
		if err := printTable(w, []string{"DEVSERVER", "FLAVOR", "FROM", "TO", "REGION"}, rows); err != nil {
			return err
		}
	}
	if homeless > 0 {
		_, err := fmt.Fprintf(w, "no home: %s\nshortfall: %s\n", strings.Join(rep.GetHomeless(), ", "), shortfall(rep.GetShortfall()))
		return err
	}
	return nil
}

func capacityPlaceCmd(a *app) *cobra.Command {
	var (
		rf     readFlags
		req    v1.PlaceDevserverRequest
		spread spreadFlag
	)
	cmd := &cobra.Command{
		Use:   "place --flavor FLAVOR --region REGION [--site SITE] [--owner USER --spread hosts|sites]",
		Short: "Where devserver create would place a devserver now (a dry run)",
		Long: `place answers where "devserver create" without --host would put a devserver now, and creates
nothing. When nothing fits it prints "no host:" and why, host by host; that is an answer, and
the exit code is 0. An unknown flavor, region or site fails (exit 1).`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			if fl.Changed("spread") != fl.Changed("owner") {
				return usagef("--owner and --spread go together: spread keeps away from the owner's other devservers")
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, _ []string) error {
			req.Spread, req.Stale = spread.value, rf.stale
			p, err := c.capacity.PlaceDevserver(ctx, &req)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, p)
			}
			if p.GetHost() == "" {
				_, err = fmt.Fprintf(a.stdout, "no host: %s\n", p.GetExplanation())
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "would place on %s (site %s), score %.2f, %s\n",
				p.GetHost(), p.GetSite(), p.GetScore(), plural(int64(p.GetCandidates()), "candidate", "candidates"))
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Flavor, "flavor", "", "size of the devserver (required)")
	f.StringVar(&req.Region, "region", "", "region to place in (required)")
	f.StringVar(&req.Site, "site", "", "place only in this site of the region")
	f.StringVar(&req.Owner, "owner", "", "with --spread: the user whose devservers to keep away from")
	f.Var(&spread, "spread", "keep away from the owner's other devservers: hosts or sites")
	_ = cmd.MarkFlagRequired("flavor")
	_ = cmd.MarkFlagRequired("region")
	_ = cmd.RegisterFlagCompletionFunc("flavor", a.completeNames(flavorNames))
	_ = cmd.RegisterFlagCompletionFunc("region", a.completeNames(regionNames))
	_ = cmd.RegisterFlagCompletionFunc("site", a.completeNames(siteNames))
	_ = cmd.RegisterFlagCompletionFunc("spread", spread.complete)
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.NoFileCompletions)
	addReadFlags(cmd, &rf, false)
	return cmd
}
