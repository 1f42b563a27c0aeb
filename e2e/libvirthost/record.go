package libvirthost

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// recordFile is the name, under Options.Dir, of what a fleet started.
const recordFile = "fleet.json"

// record is what a fleet started, kept in Dir so that any process can stop it.
type record struct {
	Prefix string       `json:"prefix"`
	Switch string       `json:"switch_netns"`
	Hosts  []hostRecord `json:"hosts"`
	// Made lists the network namespaces this fleet created, each added right after its
	// creation: Stop touches no other, so a name clash never tears down another fleet.
	Made []string `json:"made_netns,omitempty"`
}

// made reports whether the fleet created the network namespace name.
func (r record) made(name string) bool { return slices.Contains(r.Made, name) }

// hostRecord is one host of a record.
type hostRecord struct {
	Name  string `json:"name"`
	Netns string `json:"netns"`
	Dir   string `json:"dir"`
	Addr  string `json:"addr"`
	UUID  string `json:"uuid"`
	Port  string `json:"switch_port"`
	Pid   int    `json:"pid,omitempty"`
	// Reaper is the pid of the process that runs libvirtd and reaps what it leaves.
	Reaper int `json:"reaper_pid,omitempty"`
}

// host is the public view of h.
func (h hostRecord) host() Host {
	return Host{
		Name:   h.Name,
		URI:    h.uri(),
		Socket: h.socket(),
		Addr:   h.Addr,
		TCPURI: "qemu+tcp://" + h.Addr + "/system",
		Netns:  h.Netns,
		Dir:    h.Dir,
		UUID:   h.UUID,
		Pid:    h.Pid,
	}
}

func (h hostRecord) socket() string { return filepath.Join(h.Dir, "run", "libvirt-sock") }

func (h hostRecord) uri() string { return "qemu+unix:///system?socket=" + h.socket() }

// writeRecord replaces the record in dir atomically.
func writeRecord(dir string, rec record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	tmp, err := os.CreateTemp(dir, recordFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, recordFile)); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

// readRecord returns the record in dir; the error wraps fs.ErrNotExist when there is none.
func readRecord(dir string) (record, error) {
	var rec record
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return rec, fmt.Errorf("read record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("read record %s: %w", filepath.Join(dir, recordFile), err)
	}
	return rec, nil
}

func removeRecord(dir string) error {
	if err := os.Remove(filepath.Join(dir, recordFile)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove record: %w", err)
	}
	return nil
}
