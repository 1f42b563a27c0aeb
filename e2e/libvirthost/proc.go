package libvirthost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsID identifies a namespace (the device and inode of its nsfs file).
type nsID struct{ dev, ino uint64 }

// statNS returns the namespace that path (/run/netns/X or /proc/PID/ns/net) refers to.
func statNS(path string) (nsID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nsID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsID{}, fmt.Errorf("stat %s: no inode", path)
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// netnsByName returns the named network namespace; ok is false when it does not exist.
func netnsByName(name string) (id nsID, ok bool, err error) {
	id, err = statNS(filepath.Join(netnsDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nsID{}, false, nil
	}
	if err != nil {
		return nsID{}, false, fmt.Errorf("namespace %s: %w", name, err)
	}
	return id, true, nil
}

// inNetns reports whether pid is a live (not zombie) process in the network namespace ns. Only
// such processes are ever signalled: they are the fleet's own.
func inNetns(pid int, ns nsID) bool {
	id, err := statNS("/proc/" + strconv.Itoa(pid) + "/ns/net")
	return err == nil && id == ns // a zombie's ns/net cannot be followed
}

// pidsIn lists the live processes in the network namespace ns.
func pidsIn(ns nsID) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if inNetns(pid, ns) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// terminate sends SIGTERM to pid if it is in ns and waits up to grace for it to leave.
func terminate(ctx context.Context, pid int, ns nsID, grace time.Duration) {
	if pid <= 0 || !inNetns(pid, ns) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for inNetns(pid, ns) && time.Now().Before(deadline) {
		if sleep(ctx, 20*time.Millisecond) != nil {
			return
		}
	}
}

// sweep kills every process left in ns but spare (0: none) and waits until none is, for up to
// limit.
func sweep(ctx context.Context, ns nsID, spare int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		pids, err := pidsIn(ns)
		if err != nil {
			return err
		}
		pids = slices.DeleteFunc(pids, func(pid int) bool { return pid == spare })
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still running after SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = killPid(pid)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("processes %v: %w", pids, err)
		}
	}
}

// killPid sends SIGKILL to pid.
func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// readPidFile returns the pid in path, 0 when there is none.
func readPidFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
