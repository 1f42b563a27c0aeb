package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// Table names. They also key the index table and name the tables in snapshots.
const (
	TableIndex      = "index"
	TableNodes      = "nodes"
	TableRegions    = "regions"
	TableSites      = "sites"
	TableHosts      = "hosts"
	TableFlavors    = "flavors"
	TableDevservers = "devservers"
	TableNotices    = "notices"
	TableProfiles   = "container_profiles"
	TablePools      = "container_pools"
	TableContainers = "containers"
	TableMigrations = "migrations"
	// Drains, their items (one per devserver of a drained host) and their timelines.
	TableDrains      = "drains"
	TableDrainItems  = "drain_items"
	TableDrainEvents = "drain_events"
	TableDecoms      = "decoms"
	TableDeadLetters = "dead_letters"
	TableAlerts      = "alerts"
)

// Tables lists every table whose rows are fleet state, in snapshot order (parents first).
var Tables = []string{TableNodes, TableRegions, TableSites, TableHosts, TableFlavors, TableDevservers, TableNotices,
	TableProfiles, TablePools, TableContainers, TableMigrations, TableDrains, TableDrainItems, TableDrainEvents, TableDecoms, TableDeadLetters, TableAlerts}

// stringIndex indexes a table by a string that a function computes from the row. It replaces
// memdb's reflection-based field indexers: type-checked, and faster on the apply path.
type stringIndex[T any] func(T) string

func (f stringIndex[T]) FromObject(obj any) (bool, []byte, error) {
	row, ok := obj.(T)
	if !ok {
		return false, nil, fmt.Errorf("index: unexpected row type %T", obj)
	}
	v := f(row)
	if v == "" {
		return false, nil, nil
	}
	return true, []byte(v + "\x00"), nil
}

func (f stringIndex[T]) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("index: need exactly one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("index: argument must be a string, got %T", args[0])
	}
	return []byte(s + "\x00"), nil
}

func index[T any](name string, unique, allowMissing bool, f func(T) string) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, Unique: unique, AllowMissing: allowMissing, Indexer: stringIndex[T](f)}
}

func table(name string, indexes ...*memdb.IndexSchema) *memdb.TableSchema {
	t := &memdb.TableSchema{Name: name, Indexes: map[string]*memdb.IndexSchema{}}
	for _, ix := range indexes {
		t.Indexes[ix.Name] = ix
	}
	return t
}

// schema is the memdb layout: one table per resource, with the indexes the API filters by.
func schema() *memdb.DBSchema {
	tables := []*memdb.TableSchema{
		table(TableIndex, index("id", true, false, func(r *fsmv1.TableIndex) string { return r.GetTable() })),
		table(TableNodes, index("id", true, false, func(n *fsmv1.Node) string { return n.GetId() })),
		table(TableRegions, index("id", true, false, func(r *v1.Region) string { return r.GetName() })),
		table(TableSites,
			index("id", true, false, func(s *v1.Site) string { return s.GetName() }),
			index("region", false, false, func(s *v1.Site) string { return s.GetRegion() }),
		),
		// Hosts are rewritten whenever a devserver lands on or leaves them (their allocation),
		// so they carry no region index: a region's hosts are found through its sites.
		table(TableHosts,
			index("id", true, false, func(h *v1.Host) string { return h.GetName() }),
			index("site", false, false, func(h *v1.Host) string { return h.GetSite() }),
		),
		table(TableFlavors, index("id", true, false, func(f *v1.Flavor) string { return f.GetName() })),
		// Devservers are the hottest table and every index costs on every write (about 10µs
		// each; docs/benchmarks.md), so only the lookups on hot paths are indexed: by name, by
		// owner (a developer's own list) and by host (drains, capacity). Region, site and flavor
		// filters scan.
		table(TableDevservers,
			index("id", true, false, func(d *v1.Devserver) string { return d.GetName() }),
			index("owner", false, false, func(d *v1.Devserver) string { return d.GetOwner() }),
			index("host", false, true, func(d *v1.Devserver) string { return d.GetHost() }),
		),
		table(TableProfiles, index("id", true, false, func(p *v1.ContainerProfile) string { return p.GetName() })),
		table(TablePools, index("id", true, false, func(p *v1.ContainerPool) string { return PoolKey(p.GetRegion(), p.GetProfile()) })),
		table(TableContainers,
			index("id", true, false, func(c *v1.Container) string { return c.GetName() }),
			index("pool", false, false, func(c *v1.Container) string { return PoolKey(c.GetRegion(), c.GetProfile()) }),
			index("host", false, false, func(c *v1.Container) string { return c.GetHost() }),
		),
		table(TableMigrations,
			index("id", true, false, func(m *v1.Migration) string { return m.GetId() }),
			index("devserver", false, false, func(m *v1.Migration) string { return m.GetDevserver() }),
			index("dest", false, false, func(m *v1.Migration) string { return m.GetDestHost() }),
		),
		table(TableDrains, index("id", true, false, func(d *v1.Drain) string { return d.GetId() })),
		table(TableDrainItems,
			index("id", true, false, func(i *v1.DrainItem) string { return drainItemKey(i.GetDrainId(), i.GetDevserver()) }),
			index("drain", false, false, func(i *v1.DrainItem) string { return i.GetDrainId() }),
		),
		table(TableDrainEvents,
			index("id", true, false, func(e *v1.DrainEvent) string { return drainEventKey(e.GetDrainId(), e.GetSeq()) }),
			index("drain", false, false, func(e *v1.DrainEvent) string { return e.GetDrainId() }),
		),
		table(TableDecoms, index("id", true, false, func(d *v1.Decom) string { return d.GetId() })),
		table(TableDeadLetters, index("id", true, false, func(d *v1.DeadLetter) string { return deadLetterKey(d.GetSink(), d.GetMessageId()) })),
		table(TableAlerts,
			index("id", true, false, func(a *v1.Alert) string { return a.GetId() }),
			// Only open alerts are in this index: at most one per condition and subject.
			index("open", true, true, func(a *v1.Alert) string {
				if a.GetState() != v1.AlertState_ALERT_STATE_OPEN {
					return ""
				}
				return a.GetCondition() + "/" + a.GetSubject()
			}),
		),
		table(TableNotices,
			index("id", true, false, func(n *v1.Notice) string { return n.GetId() }),
			index("owner", false, false, func(n *v1.Notice) string { return n.GetOwner() }),
		),
	}
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, t := range tables {
		s.Tables[t.Name] = t
	}
	return s
}
