package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devfleet/devfleet/controlplane/api"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// jsonOptions writes API objects the way the REST gateway does: proto field names, so that
// scripts use the names of the .proto files.
var jsonOptions = api.JSON

func (a *app) jsonOutput() bool { return a.output == "json" }

// printJSON writes one API object as an indented JSON document.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

// printJSONList writes API objects as one JSON array.
func printJSONList[T proto.Message](w io.Writer, items []T) error {
	buf := []byte{'['}
	for i, m := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		b, err := jsonOptions.Marshal(m)
		if err != nil {
			return err
		}
		buf = append(buf, b...)
	}
	buf = append(buf, ']')
	return writeIndented(w, buf)
}

// writeIndented re-indents a JSON document: protojson's own spacing is deliberately unstable.
func writeIndented(w io.Writer, doc []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// done prints the result of a write: the object in JSON mode, a one-line confirmation in table
// mode.
func (a *app) done(m proto.Message, format string, args ...any) error {
	if a.jsonOutput() {
		return printJSON(a.stdout, m)
	}
	_, err := fmt.Fprintf(a.stdout, format+"\n", args...)
	return err
}

// printList prints API objects as a JSON array or as a table, one row per object.
func printList[T proto.Message](a *app, items []T, header []string, row func(T) []string) error {
	if a.jsonOutput() {
		return printJSONList(a.stdout, items)
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		rows = append(rows, row(it))
	}
	return printTable(a.stdout, header, rows)
}

// printTable prints aligned columns; an empty cell shows as "-" so that columns stay countable
// for awk.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// field is one "key: value" line of a show command.
type field struct{ key, value string }

// printObject prints one API object: JSON, or aligned "key: value" lines.
func printObject(a *app, m proto.Message, fields []field) error {
	if a.jsonOutput() {
		return printJSON(a.stdout, m)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 1, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f.key, cell(f.value))
	}
	return tw.Flush()
}

// cell keeps a value on one table cell.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// short is an enum value's lower-case name without its type prefix (HOST_STATE_CORDONED →
// cordoned); empty for the unspecified value.
func short(e protoreflect.Enum) string {
	return shortName(e.Descriptor(), e.Number())
}

func shortName(d protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	v := d.Values().ByNumber(n)
	if v == nil {
		return strconv.Itoa(int(n))
	}
	if n == 0 {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(string(v.Name()), enumPrefix(d)))
}

// enumPrefix is the prefix every value of an enum carries, taken from its zero value
// (HOST_STATE_UNSPECIFIED → HOST_STATE_).
func enumPrefix(d protoreflect.EnumDescriptor) string {
	zero := d.Values().ByNumber(0)
	if zero == nil {
		return ""
	}
	name := string(zero.Name())
	if !strings.HasSuffix(name, "_UNSPECIFIED") {
		return ""
	}
	return strings.TrimSuffix(name, "UNSPECIFIED")
}

// ts formats a timestamp in UTC to the second.
func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func i64(n int64) string  { return strconv.FormatInt(n, 10) }
func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func float(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// plural is "1 host", "2 hosts".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return i64(n) + " " + many
}

// reserve is a region's capacity reserve as set: "10%", "2 hosts", or empty for none.
func reserve(r *v1.CapacityReserve) string {
	switch {
	case r.GetFraction() > 0:
		// Rounded to hundredths of a percent: 0.07 is 7%, not 7.000000000000001%.
		return strconv.FormatFloat(math.Round(r.GetFraction()*1e4)/1e2, 'f', -1, 64) + "%"
	case r.GetHosts() > 0:
		return plural(int64(r.GetHosts()), "host", "hosts")
	}
	return ""
}

// allowedRegions is a flavor's region list, or "any" when it is empty.
func allowedRegions(f *v1.Flavor) string {
	if len(f.GetAllowedRegions()) == 0 {
		return "any"
	}
	return strings.Join(f.GetAllowedRegions(), ",")
}

// health is a host's health: unknown, healthy or unhealthy. (HostHealth's zero value is
// UNKNOWN, a real value, so short would hide it.)
func health(h v1.HostHealth) string {
	name, ok := v1.HostHealth_name[int32(h)]
	if !ok {
		return strconv.Itoa(int(h))
	}
	return strings.ToLower(strings.TrimPrefix(name, "HOST_HEALTH_"))
}

// power is what the owner wants of a devserver's guest: on or off. (Power's zero value is ON,
// a real value, so short would hide it.)
func power(p v1.Power) string {
	name, ok := v1.Power_name[int32(p)]
	if !ok {
		return strconv.Itoa(int(p))
	}
	return strings.ToLower(strings.TrimPrefix(name, "POWER_"))
}

// repairPolicies are the words --repair takes and flavors show, in declaration order.
var repairPolicies = []struct {
	name  string
	value v1.RepairPolicy
}{
	{"recreate", v1.RepairPolicy_REPAIR_POLICY_RECREATE},
	{"notify-only", v1.RepairPolicy_REPAIR_POLICY_NOTIFY_ONLY},
}

// repair is a flavor's repair policy as --repair spells it: recreate or notify-only.
func repair(r v1.RepairPolicy) string {
	for _, p := range repairPolicies {
		if p.value == r {
			return p.name
		}
	}
	return strconv.Itoa(int(r))
}

// optional appends a "key: value" line only when there is a value: for output-only fields that
// most objects never have.
func optional(fields []field, key, value string) []field {
	if value == "" {
		return fields
	}
	return append(fields, field{key, value})
}

func resources(r *v1.Resources) string {
	return fmt.Sprintf("vcpus=%d memory_mib=%d disk_gib=%d gpus=%d", r.GetVcpus(), r.GetMemoryMib(), r.GetDiskGib(), r.GetGpus())
}

func overcommit(o *v1.Overcommit) string {
	return fmt.Sprintf("cpu=%s memory=%s disk=%s", float(o.GetCpu()), float(o.GetMemory()), float(o.GetDisk()))
}

// labels formats a label map as sorted k=v pairs.
func labels(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// timestamps are the bookkeeping fields every stored object has.
func timestamps(create, update *timestamppb.Timestamp, createIndex, modifyIndex uint64) []field {
	return []field{
		{"create_time", ts(create)},
		{"update_time", ts(update)},
		{"create_index", u64(createIndex)},
		{"modify_index", u64(modifyIndex)},
	}
}
