// Command hostsctl starts and stops a fleet of local libvirt hosts (package libvirthost) for
// `make run` and for trying the control plane by hand:
//
//	hostsctl up --n 3 --dir /tmp/devfleet-run/hosts   # prints "NAME URI MIGRATION_URI" per host, daemons keep running
//	hostsctl down --dir /tmp/devfleet-run/hosts       # stops what up recorded in --dir
//	hostsctl deps                                     # installs libvirt and QEMU if missing
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/devfleet/devfleet/e2e/libvirthost"
)

const usage = `usage:
  hostsctl up --n N --dir DIR [--prefix P]   start N hosts; print "NAME URI MIGRATION_URI" per host
  hostsctl down --dir DIR                    stop the hosts recorded in DIR
  hostsctl deps                              install libvirt, QEMU and iproute2 if missing
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hostsctl:", err)
		os.Exit(1)
	}
}

// run executes one subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:], stdout, stderr)
	case "down":
		return down(ctx, args[1:], stderr)
	case "deps":
		// make test runs this once, before test packages that start hosts run in parallel
		// and would otherwise race to apt-get.
		return libvirthost.EnsurePackages(ctx, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("up", flag.ContinueOnError)
	fl.SetOutput(stderr)
	n := fl.Int("n", 3, "number of hosts")
	dir := fl.String("dir", "", "directory for the hosts' files and the fleet's record (required)")
	prefix := fl.String("prefix", "", "network namespace prefix (default: random)")
	timeout := fl.Duration("timeout", 2*time.Minute, "give up starting after this long")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("up: --dir is required")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := libvirthost.EnsurePackages(ctx, stderr); err != nil {
		return err
	}
	f, err := libvirthost.Start(ctx, libvirthost.Options{N: *n, Dir: *dir, Prefix: *prefix})
	if err != nil {
		return err
	}
	for _, h := range f.Hosts() {
		fmt.Fprintf(stdout, "%s %s %s\n", h.Name, h.URI, h.TCPURI)
	}
	return nil
}

func down(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("down", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", "", "directory given to up (required)")
	timeout := fl.Duration("timeout", 2*time.Minute, "give up stopping after this long")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("down: --dir is required")
	}
	f, err := libvirthost.Load(*dir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "hostsctl: no hosts recorded in %s; nothing to stop\n", *dir)
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return f.Stop(ctx)
}
