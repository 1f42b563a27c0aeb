package libvirthost

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// systemPath lists the directories searched for tools when PATH lacks them (root's PATH usually
// has them; a test runner's may not).
const systemPath = "/usr/sbin:/sbin:/usr/bin:/bin"

// tool returns the path of the program name, or name itself when it is nowhere to be found (the
// command then fails with a clear "not found").
func tool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range filepath.SplitList(systemPath) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}

// commandEnv is the environment of every command: the caller's, with the sbin directories on
// PATH and the C locale so that virsh output parses the same everywhere.
func commandEnv() []string {
	path := os.Getenv("PATH")
	for _, d := range filepath.SplitList(systemPath) {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	return append(os.Environ(), "PATH="+strings.TrimPrefix(path, ":"), "LC_ALL=C")
}

// command is name (resolved by tool) with args, with commandEnv and a bounded wait for its
// output once it is killed.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, tool(name), args...)
	cmd.Env = commandEnv()
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// run runs name with args for at most timeout and returns its standard output; the error holds
// the command line and its standard error.
func run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}
