package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// choice is a string flag limited to fixed values, so that a typo fails while flags are parsed,
// before anything is sent.
type choice struct {
	value   *string
	allowed []string
}

func (c *choice) String() string { return *c.value }
func (c *choice) Type() string   { return "string" }

func (c *choice) Set(s string) error {
	for _, v := range c.allowed {
		if s == v {
			*c.value = s
			return nil
		}
	}
	return fmt.Errorf("must be %s", orList(c.allowed))
}

// enumFlag is a flag that names a value of a proto enum by its short name (cordoned for
// HOST_STATE_CORDONED), case-insensitively. The unspecified value is not accepted; leaving the
// flag out keeps it.
type enumFlag struct {
	desc protoreflect.EnumDescriptor
	num  protoreflect.EnumNumber
}

func newEnumFlag(e protoreflect.Enum) *enumFlag { return &enumFlag{desc: e.Descriptor()} }

func (f *enumFlag) String() string { return shortName(f.desc, f.num) }
func (f *enumFlag) Type() string   { return "string" }

func (f *enumFlag) Set(s string) error {
	for _, name := range f.names() {
		if strings.EqualFold(s, name) || strings.EqualFold(strings.ReplaceAll(s, "-", "_"), name) {
			f.num = f.desc.Values().ByName(protoreflect.Name(enumPrefix(f.desc) + strings.ToUpper(name))).Number()
			return nil
		}
	}
	return fmt.Errorf("must be %s", orList(f.names()))
}

// names are the accepted values, in declaration order.
func (f *enumFlag) names() []string {
	var out []string
	vals := f.desc.Values()
	for i := 0; i < vals.Len(); i++ {
		if n := vals.Get(i).Number(); n != 0 {
			out = append(out, shortName(f.desc, n))
		}
	}
	return out
}

// complete offers the accepted values to shell completion.
func (f *enumFlag) complete(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, n := range f.names() {
		if strings.HasPrefix(n, strings.ToLower(toComplete)) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// labelsFlag collects repeated --label k=v flags into a map.
type labelsFlag struct{ m map[string]string }

func (f *labelsFlag) String() string { return labels(f.m) }
func (f *labelsFlag) Type() string   { return "key=value" }

func (f *labelsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("must be key=value")
	}
	if _, dup := f.m[k]; dup {
		return fmt.Errorf("label %q given twice", k)
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = v
	return nil
}

// exclusive refuses a command line that gives more than one of the named flags.
func exclusive(cmd *cobra.Command, names ...string) error {
	var given []string
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			given = append(given, "--"+n)
		}
	}
	if len(given) > 1 {
		return usagef("%s exclude each other", andList(given))
	}
	return nil
}

// anyChanged reports whether the command line gives any of the named flags.
func anyChanged(cmd *cobra.Command, names ...string) bool {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// flagList names flags for a message: --a, --b or --c.
func flagList(names ...string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "--" + n
	}
	return orList(out)
}

// nonEmptyList refuses a list flag that was given but names nothing (--allowed-regions ""),
// which would otherwise read as "the flag was left out".
func nonEmptyList(cmd *cobra.Command, name string, vals []string) error {
	if !cmd.Flags().Changed(name) {
		return nil
	}
	for _, v := range vals {
		if v == "" {
			return usagef("--%s: empty name in %q", name, strings.Join(vals, ","))
		}
	}
	if len(vals) == 0 {
		return usagef("--%s needs at least one name", name)
	}
	return nil
}

// distinct drops repeated names, keeping the first of each.
func distinct(vals []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range vals {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// spreadFlag is --spread: keep one owner's devservers on different hosts or sites.
type spreadFlag struct{ value v1.Spread }

func (f *spreadFlag) String() string {
	switch f.value {
	case v1.Spread_SPREAD_HOSTS:
		return "hosts"
	case v1.Spread_SPREAD_SITES:
		return "sites"
	}
	return ""
}

func (f *spreadFlag) Type() string { return "string" }

func (f *spreadFlag) complete(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"hosts", "sites"}, cobra.ShellCompDirectiveNoFileComp
}

func (f *spreadFlag) Set(s string) error {
	switch s {
	case "hosts":
		f.value = v1.Spread_SPREAD_HOSTS
	case "sites":
		f.value = v1.Spread_SPREAD_SITES
	default:
		return fmt.Errorf("must be hosts or sites")
	}
	return nil
}

// repairFlag is --repair: what devfleet does when a devserver of the flavor is lost. Its zero
// value (recreate) is a real choice, which an enumFlag cannot name.
type repairFlag struct{ value v1.RepairPolicy }

func (f *repairFlag) String() string { return repair(f.value) }
func (f *repairFlag) Type() string   { return "string" }

func (f *repairFlag) Set(s string) error {
	for _, p := range repairPolicies {
		if s == p.name {
			f.value = p.value
			return nil
		}
	}
	return fmt.Errorf("must be %s", orList(f.names()))
}

func (f *repairFlag) names() []string {
	out := make([]string, len(repairPolicies))
	for i, p := range repairPolicies {
		out[i] = p.name
	}
	return out
}

func (f *repairFlag) complete(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return f.names(), cobra.ShellCompDirectiveNoFileComp
}

func orList(vals []string) string {
	switch len(vals) {
	case 0:
		return "nothing"
	case 1:
		return vals[0]
	}
	return strings.Join(vals[:len(vals)-1], ", ") + " or " + vals[len(vals)-1]
}

func andList(vals []string) string {
	if len(vals) < 2 {
		return orList(vals)
	}
	return strings.Join(vals[:len(vals)-1], ", ") + " and " + vals[len(vals)-1]
}

// readFlags are the flags every read command has.
type readFlags struct {
	stale    bool
	pageSize int32
}

// addReadFlags adds --stale, and for list commands the hidden --page-size.
func addReadFlags(cmd *cobra.Command, r *readFlags, list bool) {
	cmd.Flags().BoolVar(&r.stale, "stale", false, "serve from the contacted node without going through the leader (fast, may lag behind)")
	if list {
		cmd.Flags().Int32Var(&r.pageSize, "page-size", defaultPageSize, "rows per call while paging through the list")
		_ = cmd.Flags().MarkHidden("page-size")
	}
}

// listAll calls a list RPC page after page until next_page_token is empty.
func listAll[T any](ctx context.Context, page func(ctx context.Context, token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		rows, next, err := page(ctx, token)
		if err != nil {
			return nil, err
		}
		all = append(all, rows...)
		if next == "" {
			return all, nil
		}
		if next == token {
			return nil, errors.New("the server returned the same page token twice; giving up instead of looping")
		}
		token = next
	}
}

// completeNames offers object names to shell completion, read stale from --addr so that it is
// quick; it offers nothing when the cluster cannot be reached within a couple of seconds.
func (a *app) completeNames(names func(ctx context.Context, c client) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		conn, err := a.dial()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		all, err := names(ctx, newClient(conn))
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range all {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// firstArg limits a completion to the first positional argument.
func firstArg(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// completionTimeout bounds the RPC behind a completion: a shell must not hang on a dead node.
const completionTimeout = 2 * time.Second
