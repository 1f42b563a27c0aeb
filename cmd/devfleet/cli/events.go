package cli

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/feedwatch"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

func newEventsCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "events",
		Short: "Follow the fleet's event feed",
	})
	cmd.AddCommand(eventsWatchCmd(a), eventsAtCmd(a), eventsListCmd(a))
	return cmd
}

func eventsWatchCmd(a *app) *cobra.Command {
	var (
		req   v1.WatchRequest
		since time.Duration
		after string
		pin   bool
		addrs []string
	)
	cmd := &cobra.Command{
		Use:   "watch [--topic T]... [--key K]... [--since 10m | --after INDEX/N] [-o json]",
		Short: "Print the fleet's events as they are committed, until interrupted",
		Long: `Print the fleet's events (one per object a command changed: host, devserver, migration,
drain, ...) as they are committed. --since starts that long ago, --after resumes after an event
(INDEX/N, as printed); by default only new events come. -o json prints each event as one line of
JSON, its object included.

Every node keeps the whole history, numbered the same way, so the watch follows the cluster, not
one node: when the stream drops (the node died, stopped or was cut off from us), it resumes after
the last event it printed, on the same node or another, with no gap and no duplicate, and says so
on stderr. The nodes it may move to are those --addr lists (a,b,c) and the members the nodes
announce (ClusterService.ListMembers), unless --pin. It gives up after 30 s without any node.`,
		Example: `  devfleet events watch --topic drain --topic migration
  devfleet events watch --topic devserver --key bob-dev --since 1h -o json
  devfleet --addr node1:7401,node2:7401,node3:7401 events watch --after 1042/0`,
		Args: exactArgs(),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := exclusive(cmd, "since", "after"); err != nil {
				return err
			}
			if since < 0 {
				return usagef("--since must not be negative, got %s", since)
			}
			if after != "" {
				idx, n, err := parsePosition(after)
				if err != nil {
					return usagef("--after: %v", err)
				}
				req.AfterIndex, req.AfterN = idx, n
			}
			addrs = nil
			for _, s := range strings.Split(a.addr, ",") {
				if s = strings.TrimSpace(s); s != "" {
					addrs = append(addrs, s)
				}
			}
			if len(addrs) == 0 {
				return usagef("--addr must name at least one node")
			}
			a.addr = addrs[0] // what messages name until the watch moves
			if !cmd.Flags().Changed("timeout") {
				a.callTimeout, a.timeout = a.timeout, 0 // a watch lasts; --timeout bounds each connection attempt
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, _ client, _ []string) error {
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			w, err := feedwatch.New(feedwatch.Options{
				Addrs:      addrs,
				Request:    &req,
				NoDiscover: pin,
				Grace:      transientGrace,
				Dial: func(addr string) (*grpc.ClientConn, error) {
					b := *a // the same dial, interceptors and all, to another node
					b.addr = addr
					return b.dial()
				},
				Logf: func(format string, args ...any) { fmt.Fprintf(a.stderr, "devfleet: "+format+"\n", args...) },
			})
			if err != nil {
				return err
			}
			err = w.Run(ctx, func(e *v1.Event) error { return printEvent(a, e) })
			if ctx.Err() != nil {
				return nil // interrupted, or --timeout: the watch was asked to last that long
			}
			if status.Code(err) == codes.Unavailable {
				a.addr = strings.Join(w.Addrs(), ", ") // no node answered: name them all
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&req.Topics, "topic", nil, "only this topic (repeatable): host, devserver, container, migration, drain, decom, notice, ...")
	f.StringSliceVar(&req.Keys, "key", nil, "only this object (repeatable), e.g. a devserver's name")
	f.DurationVar(&since, "since", 0, "start this long ago, e.g. 10m")
	f.StringVar(&after, "after", "", "resume after this event, INDEX/N as printed")
	f.BoolVar(&pin, "pin", false, "move only among the nodes --addr lists, not to the other members they announce")
	return cmd
}

func printEvent(a *app, e *v1.Event) error {
	if a.jsonOutput() {
		b, err := protojson.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(a.stdout, string(b))
		return err
	}
	what := "changed"
	if e.GetDeleted() {
		what = "deleted"
	}
	if s := eventSummary(e); s != "" {
		what += ": " + s
	}
	_, err := fmt.Fprintf(a.stdout, "%d/%d  %s  %s %s %s\n", e.GetIndex(), e.GetN(), e.GetTime().AsTime().UTC().Format("15:04:05.000"),
		e.GetTopic(), e.GetKey(), what)
	return err
}

// eventSummary is the gist of an event's object for a line of text: what a person watching a
// drain wants to see go by ("" when there is nothing short to say).
func eventSummary(e *v1.Event) string {
	m, err := e.GetObject().UnmarshalNew()
	if err != nil {
		return ""
	}
	switch x := m.(type) {
	case *v1.Host:
		return short(x.GetState()) + ", " + short(x.GetHealth())
	case *v1.Devserver:
		return short(x.GetState()) + " on " + cmp.Or(x.GetHost(), "no host")
	case *v1.Migration:
		s := fmt.Sprintf("%s %s -> %s: %s", x.GetDevserver(), x.GetSourceHost(), cmp.Or(x.GetDestHost(), "?"), short(x.GetPhase()))
		if p := x.GetProgress(); p.GetMemoryTotalBytes() > 0 && x.GetPhase() == v1.MigrationPhase_MIGRATION_PHASE_RUNNING {
			s += fmt.Sprintf(" %d%%", min(100, 100*p.GetMemoryProcessedBytes()/p.GetMemoryTotalBytes()))
		}
		if x.GetFailureReason() != "" && x.GetPhase() != v1.MigrationPhase_MIGRATION_PHASE_SUCCEEDED {
			s += " (" + x.GetFailureReason() + ")"
		}
		return s
	case *v1.Drain:
		return fmt.Sprintf("%s, %d/%d moved, %d moving, %d blocked", short(x.GetState()), x.GetItemsDone(), x.GetItemsTotal(), x.GetItemsMoving(), x.GetItemsBlocked())
	case *v1.DrainItem:
		s := short(x.GetState())
		if x.GetDestHost() != "" {
			s += " -> " + x.GetDestHost()
		}
		if x.GetBlocker() != "" {
			s += " (" + x.GetBlocker() + ")"
		}
		return s
	case *v1.DrainEvent:
		return strings.TrimSpace(x.GetKind() + " " + x.GetDevserver() + ": " + x.GetDetail())
	case *v1.Decom:
		return short(x.GetState())
	case *v1.Alert:
		return short(x.GetState()) + ": " + x.GetSummary()
	case *v1.Notice:
		return x.GetOwner() + ": " + x.GetMessage()
	}
	return ""
}

// parsePosition reads --after: INDEX/N as printed (INDEX alone means INDEX/0).
func parsePosition(s string) (uint64, uint32, error) {
	idx, n, ok := strings.Cut(s, "/")
	i, err := strconv.ParseUint(idx, 10, 64)
	if err != nil || i == 0 {
		return 0, 0, fmt.Errorf("want INDEX/N as printed, e.g. 1042/0, got %q", s)
	}
	if !ok {
		return i, 0, nil
	}
	m, err := strconv.ParseUint(n, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("want INDEX/N as printed, e.g. 1042/0, got %q", s)
	}
	return i, uint32(m), nil
}

func eventsAtCmd(a *app) *cobra.Command {
	var (
		index uint64
		at    string
	)
	cmd := &cobra.Command{
		Use:   "at TOPIC KEY (--index I | --time T)",
		Short: "Show an object's state at a raft index or a time, from the history",
		Example: `  devfleet events at host fra1-h3 --time 2026-11-23T02:00:00Z -o json
  devfleet events at drain 3f2c... --index 1042`,
		Args: exactArgs("TOPIC", "KEY"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := exclusive(cmd, "index", "time"); err != nil {
				return err
			}
			if !anyChanged(cmd, "index", "time") {
				return usagef("say when: give %s", flagList("index", "time"))
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			req := &v1.GetAtRequest{Topic: args[0], Key: args[1], Index: index}
			if at != "" {
				t, err := parseAt(at, time.Now())
				if err != nil {
					return usagef("--time: %v", err)
				}
				req.Time = timestamppb.New(t)
			}
			resp, err := c.events.GetAt(ctx, req)
			if err != nil {
				return err
			}
			e := resp.GetEvent()
			if e == nil {
				return status.Errorf(codes.NotFound, "%s %s has no state then in this node's history", args[0], args[1])
			}
			if a.jsonOutput() {
				return printEvent(a, e)
			}
			if err := printEvent(a, e); err != nil {
				return err
			}
			b, err := protojson.MarshalOptions{Multiline: true}.Marshal(e.GetObject())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, string(b))
			return err
		}),
	}
	cmd.Flags().Uint64Var(&index, "index", 0, "at this raft index")
	cmd.Flags().StringVar(&at, "time", "", "at this time: RFC 3339, or -DURATION ago (e.g. -2h)")
	return cmd
}

func eventsListCmd(a *app) *cobra.Command {
	var (
		since time.Duration
		limit int32
	)
	cmd := &cobra.Command{
		Use:   "list TOPIC KEY [--since 24h]",
		Short: "List an object's events over a window, oldest first",
		Args:  exactArgs("TOPIC", "KEY"),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			req := &v1.ListKeyEventsRequest{Topic: args[0], Key: args[1], Limit: limit}
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			resp, err := c.events.ListKeyEvents(ctx, req)
			if err != nil {
				return err
			}
			for _, e := range resp.GetEvents() {
				if err := printEvent(a, e); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cmd.Flags().DurationVar(&since, "since", 0, "only the events of this last while (default: all kept)")
	cmd.Flags().Int32Var(&limit, "limit", 0, "at most this many (default and maximum 1000)")
	return cmd
}

func devserverHistoryCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "history NAME",
		Short:             "Show which hosts a devserver ran on, when, and why it moved",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: firstArg(a.completeNames(devserverNames)),
		RunE: a.action(func(ctx context.Context, c client, args []string) error {
			h, err := c.events.GetPlacementHistory(ctx, &v1.GetPlacementHistoryRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, h)
			}
			rows := make([][]string, 0, len(h.GetStays()))
			for _, st := range h.GetStays() {
				end := "now"
				if st.GetEndTime() != nil {
					end = st.GetEndTime().AsTime().UTC().Format(time.RFC3339)
				}
				rows = append(rows, []string{st.GetHost(), st.GetStartTime().AsTime().UTC().Format(time.RFC3339), end, cell(st.GetReason())})
			}
			return printTable(a.stdout, []string{"HOST", "FROM", "TO", "WHY"}, rows)
		}),
	}
}
