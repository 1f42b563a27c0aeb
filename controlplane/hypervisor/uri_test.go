package hypervisor

import "testing"

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    target
		wantErr bool
	}{
		{uri: "qemu+unix:///system?socket=/tmp/h1/run/libvirt-sock",
			want: target{transport: transportUnix, socket: "/tmp/h1/run/libvirt-sock", driver: "qemu:///system"}},
		{uri: "qemu:///system", want: target{transport: transportUnix, socket: defaultSocket, driver: "qemu:///system"}},
		{uri: "qemu+tcp://10.0.0.1/system", want: target{transport: transportTCP, addr: "10.0.0.1:16509", driver: "qemu:///system"}},
		{uri: "qemu+tcp://h1.example:1234/system", want: target{transport: transportTCP, addr: "h1.example:1234", driver: "qemu:///system"}},
		{uri: "qemu+tcp://[fd00::1]/system", want: target{transport: transportTCP, addr: "[fd00::1]:16509", driver: "qemu:///system"}},
		{uri: "fake://h1", want: target{transport: transportFake}},
		{uri: "qemu+ssh://root@h1/system", wantErr: true},
		{uri: "qemu+tls://h1/system", wantErr: true},
		{uri: "xen:///system", wantErr: true},
		{uri: "qemu+tcp:///system", wantErr: true},
		{uri: "qemu+unix://h1/system", wantErr: true},
		{uri: "::nope", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := parseURI(tt.uri)
			if tt.wantErr {
				if err == nil {
					t.Errorf("parseURI = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.query, tt.want.query = nil, nil
			if got.transport != tt.want.transport || got.socket != tt.want.socket || got.addr != tt.want.addr || got.driver != tt.want.driver {
				t.Errorf("parseURI = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFakeOptions(t *testing.T) {
	o, err := fakeOptions("fake://h7?cpus=8&memory_mib=16384&hostname=box", mustQuery(t, "fake://h7?cpus=8&memory_mib=16384&hostname=box"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Host != "h7" || o.CPUs != 8 || o.MemoryMiB != 16384 || o.Hostname != "box" {
		t.Errorf("fakeOptions = %+v", o)
	}
	if _, err := fakeOptions("fake://h7?cpus=-1", mustQuery(t, "fake://h7?cpus=-1")); err == nil {
		t.Error("negative cpus accepted")
	}
}

func mustQuery(t *testing.T, uri string) map[string][]string {
	t.Helper()
	tg, err := parseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	return tg.query
}
