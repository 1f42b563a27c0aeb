package state

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protodelim"

	fsmv1 "github.com/devfleet/devfleet/proto/gen/devfleet/fsm/v1"
	v1 "github.com/devfleet/devfleet/proto/gen/devfleet/v1"
)

// SnapshotVersion is the format of the stream Persist writes. Restore refuses other versions.
const SnapshotVersion = 1

// maxRecordSize bounds one snapshot record, so a corrupt length cannot make Restore allocate
// without limit.
const maxRecordSize = 16 << 20

// Persist writes every table of the view to w as length-delimited SnapshotRecords: a header,
// the table indexes, then the rows of each table, parents before children.
func (v *View) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	put := func(rec *fsmv1.SnapshotRecord) error {
		_, err := protodelim.MarshalTo(bw, rec)
		return err
	}
	if err := put(&fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Header{
		Header: &fsmv1.SnapshotHeader{Version: SnapshotVersion, Index: v.LatestIndex()},
	}}); err != nil {
		return err
	}
	for _, t := range append([]string{TableIndex}, Tables...) {
		it := v.iter(t, "id")
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if err := put(record(raw)); err != nil {
				return fmt.Errorf("persist %s: %w", t, err)
			}
		}
	}
	return bw.Flush()
}

func record(raw any) *fsmv1.SnapshotRecord {
	switch r := raw.(type) {
	case *fsmv1.TableIndex:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_TableIndex{TableIndex: r}}
	case *fsmv1.Node:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Node{Node: r}}
	case *v1.Region:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Region{Region: r}}
	case *v1.Site:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Site{Site: r}}
	case *v1.Host:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Host{Host: r}}
	case *v1.Flavor:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Flavor{Flavor: r}}
	case *v1.Devserver:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Devserver{Devserver: r}}
	case *v1.Notice:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Notice{Notice: r}}
	case *v1.ContainerProfile:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_ContainerProfile{ContainerProfile: r}}
	case *v1.ContainerPool:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_ContainerPool{ContainerPool: r}}
	case *v1.Container:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Container{Container: r}}
	case *v1.Migration:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Migration{Migration: r}}
	case *v1.Drain:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Drain{Drain: r}}
	case *v1.DrainItem:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_DrainItem{DrainItem: r}}
	case *v1.DrainEvent:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_DrainEvent{DrainEvent: r}}
	case *v1.Decom:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Decom{Decom: r}}
	case *v1.DeadLetter:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_DeadLetter{DeadLetter: r}}
	case *v1.Alert:
		return &fsmv1.SnapshotRecord{Record: &fsmv1.SnapshotRecord_Alert{Alert: r}}
	}
	panic(fmt.Sprintf("state: no snapshot record for %T", raw))
}

// Restore reads a stream written by Persist into a new store. The caller swaps it in with
// ReplaceWith, so a failed restore leaves the current state untouched.
func Restore(r io.Reader) (*Store, error) {
	s := New()
	txn := s.db.Txn(true)
	defer txn.Abort()
	br := bufio.NewReaderSize(r, 256<<10)
	opts := protodelim.UnmarshalOptions{MaxSize: maxRecordSize}
	for n := 0; ; n++ {
		rec := &fsmv1.SnapshotRecord{}
		err := opts.UnmarshalFrom(br, rec)
		if errors.Is(err, io.EOF) && n > 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("restore: record %d: %w", n, err)
		}
		if n == 0 {
			h := rec.GetHeader()
			if h == nil {
				return nil, errors.New("restore: stream does not start with a snapshot header")
			}
			if h.GetVersion() != SnapshotVersion {
				return nil, fmt.Errorf("restore: snapshot format version %d, this build reads %d", h.GetVersion(), SnapshotVersion)
			}
			continue
		}
		var table string
		var row any
		switch x := rec.GetRecord().(type) {
		case *fsmv1.SnapshotRecord_TableIndex:
			table, row = TableIndex, x.TableIndex
		case *fsmv1.SnapshotRecord_Node:
			table, row = TableNodes, x.Node
		case *fsmv1.SnapshotRecord_Region:
			table, row = TableRegions, x.Region
		case *fsmv1.SnapshotRecord_Site:
			table, row = TableSites, x.Site
		case *fsmv1.SnapshotRecord_Host:
			table, row = TableHosts, x.Host
		case *fsmv1.SnapshotRecord_Flavor:
			table, row = TableFlavors, x.Flavor
		case *fsmv1.SnapshotRecord_Devserver:
			table, row = TableDevservers, x.Devserver
		case *fsmv1.SnapshotRecord_Notice:
			table, row = TableNotices, x.Notice
		case *fsmv1.SnapshotRecord_ContainerProfile:
			table, row = TableProfiles, x.ContainerProfile
		case *fsmv1.SnapshotRecord_ContainerPool:
			table, row = TablePools, x.ContainerPool
		case *fsmv1.SnapshotRecord_Container:
			table, row = TableContainers, x.Container
		case *fsmv1.SnapshotRecord_Migration:
			table, row = TableMigrations, x.Migration
		case *fsmv1.SnapshotRecord_Drain:
			table, row = TableDrains, x.Drain
		case *fsmv1.SnapshotRecord_DrainItem:
			table, row = TableDrainItems, x.DrainItem
		case *fsmv1.SnapshotRecord_DrainEvent:
			table, row = TableDrainEvents, x.DrainEvent
		case *fsmv1.SnapshotRecord_Decom:
			table, row = TableDecoms, x.Decom
		case *fsmv1.SnapshotRecord_DeadLetter:
			table, row = TableDeadLetters, x.DeadLetter
		case *fsmv1.SnapshotRecord_Alert:
			table, row = TableAlerts, x.Alert
		default:
			return nil, fmt.Errorf("restore: record %d has a type this build does not know", n)
		}
		if err := txn.Insert(table, row); err != nil {
			return nil, fmt.Errorf("restore: record %d into %s: %w", n, table, err)
		}
	}
	txn.Commit()
	return s, nil
}
