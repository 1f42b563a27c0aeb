package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigSources checks the precedence flag > environment > file > default. Not parallel:
// it sets environment variables.
func TestConfigSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "devfleetd.yaml")
	if err := os.WriteFile(file, []byte("node-id: from-file\ndata-dir: /file/dir\ngrpc-addr: 10.0.0.1:7401\njoin: [a:1, b:2]\nraft-heartbeat-timeout: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEVFLEET_DATA_DIR", "/env/dir")
	t.Setenv("DEVFLEET_HTTP_ADDR", "10.0.0.1:9999")

	cmd := newCommand()
	if err := cmd.ParseFlags([]string{"--config", file, "--node-id", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigSources(cmd.Flags(), file); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	for flag, want := range map[string]string{
		"node-id":                "from-flag",      // flag beats env and file
		"data-dir":               "/env/dir",       // env beats file
		"http-addr":              "10.0.0.1:9999",  // env
		"grpc-addr":              "10.0.0.1:7401",  // file
		"join":                   "[a:1,b:2]",      // a YAML list sets a repeatable flag
		"raft-heartbeat-timeout": "2s",             // file
		"raft-addr":              "127.0.0.1:7400", // default
	} {
		if got := get(flag); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"nodeid: x\n", `unknown key "nodeid"`},
		{"raft-heartbeat-timeout: soon\n", "raft-heartbeat-timeout"},
		{"node-id: [\n", "devfleetd.yaml"},
	} {
		file := filepath.Join(dir, "devfleetd.yaml")
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := newCommand()
		if err := cmd.ParseFlags(nil); err != nil {
			t.Fatal(err)
		}
		err := applyConfigSources(cmd.Flags(), file)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one mentioning %s", tc.content, err, tc.want)
		}
	}
}

func TestOptionChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		o    options
		want string
	}{
		{options{dataDir: "/d"}, "--node-id"},
		{options{nodeID: "n1"}, "--data-dir"},
		{options{nodeID: "n1", dataDir: "/d", bootstrap: true, join: []string{"a:1"}}, "exclude each other"},
		{options{dev: true, bootstrap: true}, "--dev"},
	} {
		if err := tc.o.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %s", tc.o, err, tc.want)
		}
	}
}
