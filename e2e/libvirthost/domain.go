package libvirthost

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// defaultGuestMiB is the memory of a tiny guest when none is given.
const defaultGuestMiB = 128

// tinyDomain is a diskless TCG guest: no disk, NIC, video, balloon or USB, serial or console, so
// it needs nothing on the host but qemu. It boots (to a firmware "no bootable device" loop) in
// about a second and migrates in a few.
const tinyDomain = `<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='network'/>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`

// TinyDomainXML returns the libvirt XML of a small diskless guest named name, so tests of any
// package can define, start and migrate a real guest on a fleet. memMiB <= 0 means 128 MiB.
func TinyDomainXML(name string, memMiB int) string {
	if memMiB <= 0 {
		memMiB = defaultGuestMiB
	}
	var escaped strings.Builder
	_ = xml.EscapeText(&escaped, []byte(name)) // a strings.Builder never fails
	return fmt.Sprintf(tinyDomain, escaped.String(), memMiB)
}
