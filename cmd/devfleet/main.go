// devfleet is the operator's command-line client of a devfleet control plane.
package main

import (
	"os"

	"github.com/devfleet/devfleet/cmd/devfleet/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
