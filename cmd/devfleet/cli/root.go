// Package cli is the devfleet command line: one cobra command per API call, talking gRPC to any
// node of a devfleet cluster. Main is the entry point; nothing in here exits the process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/devfleet/devfleet/controlplane/api"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

const (
	// defaultAddr is devfleetd's default gRPC address.
	defaultAddr = "127.0.0.1:7401"
	// addrEnv names the environment variable that overrides defaultAddr.
	addrEnv = "DEVFLEET_ADDR"
	// asEnv names the environment variable that sets --as; without it --as defaults to $USER.
	asEnv = "DEVFLEET_AS"
	// defaultPageSize is how many rows a list command asks for per call.
	defaultPageSize = 500
)

// Exit codes of Main.
const (
	exitOK    = 0
	exitCall  = 1 // the server or the network failed the command
	exitUsage = 2 // the command line is wrong; nothing was sent
)

// app is what one command line runs with: the global flags and the output streams.
type app struct {
	addr    string
	output  string
	timeout time.Duration
	// as is who the caller says they are, sent as api.AsHeader metadata on every call; empty
	// sends nothing.
	as     string
	stdout io.Writer
	stderr io.Writer
	// callTimeout bounds each call of a command that waits on the server for longer than
	// --timeout could allow (devserver migrate --wait); 0 is no bound of its own.
	callTimeout time.Duration
}

// client holds the API clients of one command's connection.
type client struct {
	fleet      v1.FleetServiceClient
	cluster    v1.ClusterServiceClient
	capacity   v1.CapacityServiceClient
	containers v1.ContainerServiceClient
	migrations v1.MigrationServiceClient
	drains     v1.DrainServiceClient
	decoms     v1.DecomServiceClient
	// notifications shows dead letters.
	notifications v1.NotificationServiceClient
	events        v1.EventServiceClient
	analyzers     v1.AnalyzerServiceClient
	alerts        v1.AlertServiceClient
}

// newClient makes the API clients of a connection.
func newClient(conn *grpc.ClientConn) client {
	return client{
		fleet:         v1.NewFleetServiceClient(conn),
		cluster:       v1.NewClusterServiceClient(conn),
		capacity:      v1.NewCapacityServiceClient(conn),
		containers:    v1.NewContainerServiceClient(conn),
		migrations:    v1.NewMigrationServiceClient(conn),
		drains:        v1.NewDrainServiceClient(conn),
		decoms:        v1.NewDecomServiceClient(conn),
		notifications: v1.NewNotificationServiceClient(conn),
		events:        v1.NewEventServiceClient(conn),
		analyzers:     v1.NewAnalyzerServiceClient(conn),
		alerts:        v1.NewAlertServiceClient(conn),
	}
}

// Main runs a command line and returns its exit code rather than exiting, so tests can call it.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr, os.Getenv)
}

// run is Main with the context and the environment passed in, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRoot(a, getenv)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	msg, code := a.describe(cmd, err)
	fmt.Fprintln(stderr, "devfleet: "+msg)
	return code
}

func newRoot(a *app, getenv func(string) string) *cobra.Command {
	addr := getenv(addrEnv)
	if addr == "" {
		addr = defaultAddr
	}
	as := getenv(asEnv)
	if as == "" {
		as = getenv(ownerEnv)
	}
	root := &cobra.Command{
		Use:   "devfleet",
		Short: "Operate a devfleet control plane",
		Long: `devfleet manages the fleet inventory (regions, sites, hosts, flavors, devservers), moves
devservers between hosts (devserver migrate, migrations), hands out on-demand containers from
warm pools (profiles, pools, containers), shows the notices devfleet sent developers, and
manages the raft cluster that stores it all. It talks gRPC to any cluster node; writes and
consistent reads are routed to the leader by the node, so any node's address will do.

Until authentication lands, callers name themselves with --as USER (default $` + asEnv + `, else
$` + ownerEnv + `), sent to the server with every call: only a devserver's owner, a sharer or an
operator may migrate it or abort its migrations.

Exit codes: 0 success, 1 the server or the network failed the command, 2 bad command line.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.addr == "" {
				return usagef("--addr must not be empty")
			}
			if a.timeout < 0 {
				return usagef("--timeout must not be negative, got %s", a.timeout)
			}
			if cmd.Flags().Changed("as") && a.as == "" {
				return usagef("--as must not be empty")
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", addr, "gRPC address of any cluster node (env "+addrEnv+")")
	a.output = "table"
	pf.VarP(&choice{value: &a.output, allowed: []string{"table", "json"}}, "output", "o", "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "give up on the command after this long (0: no limit)")
	pf.StringVar(&a.as, "as", as, "who you are, told to the server with every call; moving a devserver needs it (env "+asEnv+", else $"+ownerEnv+")")
	_ = root.RegisterFlagCompletionFunc("as", cobra.NoFileCompletions)
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newClusterCmd(a),
		newRegionCmd(a),
		newSiteCmd(a),
		newHostCmd(a),
		newFlavorCmd(a),
		newDevserverCmd(a),
		newNoticeCmd(a),
		newCapacityCmd(a),
		newProfileCmd(a),
		newPoolCmd(a),
		newContainerCmd(a, getenv),
		newMigrationCmd(a),
		newDrainCmd(a),
		newDecomCmd(a),
		newBannersCmd(a),
		newDeadLettersCmd(a),
		newEventsCmd(a),
		newAnalyzeCmd(a),
		newAlertsCmd(a),
		newDoctorCmd(a),
		newBenchCmd(a),
	)
	return root
}

// action turns a command body into a cobra RunE: it connects to --addr, bounds the call by
// --timeout and marks what the body returns as a call failure (exit 1) unless it is a usage
// error.
func (a *app) action(fn func(ctx context.Context, c client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		conn, err := a.dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		parent := cmd.Context()
		ctx, cancel := context.WithCancel(parent)
		if a.timeout > 0 {
			ctx, cancel = context.WithTimeout(parent, a.timeout)
		}
		defer cancel() // also ends a stream a command body gave up on
		err = fn(ctx, newClient(conn), args)
		if err == nil {
			return nil
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		return &callError{
			err:         err,
			interrupted: parent.Err() != nil,
			timedOut:    parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded),
		}
	}
}

// dial makes a client connection to --addr. It does not touch the network: gRPC connects on
// the first call.
func (a *app) dial() (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(a.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("devfleet-cli"),
		grpc.WithChainUnaryInterceptor(a.sayWhoUnary),
		grpc.WithChainStreamInterceptor(a.sayWhoStream),
	)
	if err != nil {
		return nil, usagef("--addr %q: %v", a.addr, err)
	}
	return conn, nil
}

// withCaller adds --as to a call's outgoing metadata.
func (a *app) withCaller(ctx context.Context) context.Context {
	if a.as == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, api.AsHeader, a.as)
}

func (a *app) sayWhoUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(a.withCaller(ctx), method, req, reply, cc, opts...)
}

func (a *app) sayWhoStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(a.withCaller(ctx), desc, cc, method, opts...)
}

// usageError is a command line refused before anything was sent: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// callError is a failure while running a command (an RPC, a file): exit code 1.
type callError struct {
	err error
	// timedOut: --timeout ran out.
	timedOut bool
	// interrupted: the user stopped the command (SIGINT, SIGTERM).
	interrupted bool
}

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// describe turns an error from cobra or a command into the one line printed after "devfleet: "
// and the exit code.
func (a *app) describe(cmd *cobra.Command, err error) (string, int) {
	var ce *callError
	if errors.As(err, &ce) {
		return a.callMessage(ce), exitCall
	}
	// Everything else is a command line cobra or a flag refused, or a usageError.
	msg := usageMessage(err)
	if cmd != nil && cmd.HasParent() && !strings.HasPrefix(msg, "unknown command") {
		path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
		msg = path + ": " + msg
	}
	return msg, exitUsage
}

// usageMessage folds cobra's multi-line "Did you mean this?" suggestions into one line.
func usageMessage(err error) string {
	first, rest, _ := strings.Cut(err.Error(), "\n")
	if strings.Contains(rest, "Did you mean this?") {
		var suggestions []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(l); l != "" && l != "Did you mean this?" {
				suggestions = append(suggestions, l)
			}
		}
		if len(suggestions) > 0 {
			first += "; did you mean " + strings.Join(suggestions, " or ") + "?"
		}
	}
	return oneLine(first)
}

// callMessage is the server's status message (which names the field or object at fault) with
// the status code, or a plain description of a local failure.
func (a *app) callMessage(ce *callError) string {
	var stopped *stoppedWaiting
	waiting := errors.As(ce.err, &stopped)
	switch {
	case ce.interrupted && waiting:
		return fmt.Sprintf("interrupted: %s (Canceled)", stopped)
	case ce.interrupted:
		return "interrupted (Canceled)"
	case ce.timedOut && waiting:
		return fmt.Sprintf("gave up after --timeout %s: %s (DeadlineExceeded)", a.timeout, stopped)
	case ce.timedOut:
		return fmt.Sprintf("no answer from %s within %s; retry, or raise --timeout (DeadlineExceeded)", a.addr, a.timeout)
	}
	st, ok := status.FromError(ce.err)
	if !ok {
		return oneLine(ce.err.Error())
	}
	msg := oneLine(st.Message())
	if st.Code() == codes.Unavailable {
		if cause, ok := transportFailure(msg); ok {
			return fmt.Sprintf("cannot reach %s: %s (Unavailable)", a.addr, cause)
		}
	}
	if st.Code() == codes.Unknown {
		return msg
	}
	return fmt.Sprintf("%s (%s)", msg, st.Code())
}

// transportFailure recognizes gRPC's own Unavailable errors (nothing listens, name does not
// resolve, not a gRPC server) as opposed to a server's answer that it cannot serve now, and
// strips gRPC's wording down to the cause.
func transportFailure(msg string) (string, bool) {
	if rest, ok := strings.CutPrefix(msg, "connection error: desc = "); ok {
		if u, err := strconv.Unquote(rest); err == nil {
			rest = u
		}
		rest = strings.TrimPrefix(rest, "transport: ")
		rest = strings.TrimPrefix(rest, "Error while dialing: ")
		rest = strings.TrimPrefix(rest, "error while dialing: ")
		return rest, true
	}
	if strings.Contains(msg, "resolver error") || strings.Contains(msg, "produced zero addresses") {
		return msg, true
	}
	return "", false
}

// oneLine keeps an error message on one line, whatever the server or the OS put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// exactArgs requires exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		return argCountError(names, len(names), args)
	}
}

// optionalArg accepts zero or one positional argument.
func optionalArg(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) <= 1 {
			return nil
		}
		return argCountError([]string{"[" + name + "]"}, 1, args)
	}
}

func argCountError(names []string, most int, args []string) error {
	want := "no arguments"
	switch {
	case len(names) == 1:
		want = names[0]
	case len(names) > 1:
		want = strings.Join(names, " ")
	}
	got := fmt.Sprintf("%d arguments", len(args))
	if len(args) == 1 {
		got = "1 argument"
	}
	if len(args) > most {
		return usagef("expects %s, got %s (%s)", want, got, strings.Join(args, " "))
	}
	return usagef("expects %s, got %s", want, got)
}

// group finishes a parent command such as `host`: alone it prints its help; followed by an
// unknown subcommand it is a usage error (cobra's default prints the help and exits 0, which
// would hide a typo in a script).
func group(cmd *cobra.Command) *cobra.Command {
	cmd.SuggestionsMinimumDistance = 2 // cobra's default, which SuggestionsFor does not apply itself
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return &usageError{msg: msg}
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}
