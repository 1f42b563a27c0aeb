package libvirthost

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// requiredTools are the programs a fleet runs that the Debian packages below provide.
	requiredTools = "libvirtd virsh qemu-system-x86_64 ip perl"
	// debianPackages provide requiredTools (perl-base, Essential, runs each host's reaper).
	debianPackages = "libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 iproute2 perl-base"
	// policyRCD, exiting 101, stops package scripts from starting a system libvirtd outside the
	// fleet's namespaces.
	policyRCD       = "/usr/sbin/policy-rc.d"
	policyRCDScript = "#!/bin/sh\n# Written by devfleet's libvirthost: package installs start no daemons.\nexit 101\n"
	// aptTimeout bounds the package installation.
	aptTimeout = 10 * time.Minute
)

// EnsurePackages installs libvirt, QEMU, iproute2 and perl with apt-get when one of their
// programs is missing, so that tests on a fresh Debian machine can start a fleet. Progress goes
// to log (nil discards it).
func EnsurePackages(ctx context.Context, log io.Writer) error {
	missing := missingTools()
	if len(missing) == 0 {
		return nil
	}
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "libvirthost: %s not found; installing %s\n", strings.Join(missing, ", "), debianPackages)
	if err := ensurePolicyRCD(); err != nil {
		return fmt.Errorf("libvirthost: install packages: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, aptTimeout)
	defer cancel()
	steps := [][]string{
		{"update"},
		append([]string{"install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"}, strings.Fields(debianPackages)...),
	}
	for _, args := range steps {
		cmd := command(ctx, "apt-get", args...)
		cmd.Env = append(cmd.Env, "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("libvirthost: apt-get %s: %w", args[0], err)
		}
	}
	if missing := missingTools(); len(missing) > 0 {
		return fmt.Errorf("libvirthost: %s still missing after installing %s", strings.Join(missing, ", "), debianPackages)
	}
	return nil
}

// missingTools lists the required programs found neither on PATH nor in the system directories.
func missingTools() []string {
	var missing []string
	for _, name := range strings.Fields(requiredTools) {
		if !filepath.IsAbs(tool(name)) {
			missing = append(missing, name)
		}
	}
	return missing
}

// ensurePolicyRCD writes policyRCD when there is none; an existing one is the machine's choice.
func ensurePolicyRCD() error {
	if _, err := os.Stat(policyRCD); err == nil {
		return nil
	}
	if err := os.WriteFile(policyRCD, []byte(policyRCDScript), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", policyRCD, err)
	}
	return nil
}
