package state

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// TableOf names the table rows of m's type live in, or "" when they live in none: replaying
// recorded events onto a store needs to know where each object goes.
func TableOf(m proto.Message) string {
	switch m.(type) {
	case *fsmv1.Node:
		return TableNodes
	case *v1.Region:
		return TableRegions
	case *v1.Site:
		return TableSites
	case *v1.Host:
		return TableHosts
	case *v1.Flavor:
		return TableFlavors
	case *v1.Devserver:
		return TableDevservers
	case *v1.Notice:
		return TableNotices
	case *v1.ContainerProfile:
		return TableProfiles
	case *v1.ContainerPool:
		return TablePools
	case *v1.Container:
		return TableContainers
	case *v1.Migration:
		return TableMigrations
	case *v1.Drain:
		return TableDrains
	case *v1.DrainItem:
		return TableDrainItems
	case *v1.DrainEvent:
		return TableDrainEvents
	case *v1.Decom:
		return TableDecoms
	case *v1.DeadLetter:
		return TableDeadLetters
	case *v1.Alert:
		return TableAlerts
	}
	return ""
}

// Clone returns an independent store holding the same rows, in O(1) (memdb is copy on write):
// a past state is built by undoing recent changes on a clone, never on the live store.
func (s *Store) Clone() *Store {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Store{db: s.db.Snapshot(), abandon: make(chan struct{})}
}

// Put writes a recorded row as it is, without the rules a command obeys: replaying history
// onto a store (analyzers, backtesting), never applying commands.
func (w *WriteTxn) Put(m proto.Message) error {
	t := TableOf(m)
	if t == "" {
		return fmt.Errorf("state: no table holds %T", m)
	}
	return w.insert(t, m)
}

// Delete removes a recorded row (matched by its ID), if present.
func (w *WriteTxn) Delete(m proto.Message) error {
	t := TableOf(m)
	if t == "" {
		return fmt.Errorf("state: no table holds %T", m)
	}
	err := w.remove(t, m)
	if err != nil && isNotFound(err) {
		return nil
	}
	return err
}

func isNotFound(err error) bool { return errors.Is(err, memdb.ErrNotFound) }
