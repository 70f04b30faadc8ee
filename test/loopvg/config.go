/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/template"

	"github.com/open-local/open-local/test/capability"
)

// Config is a private LVM configuration directory. Every lvm command run with
// Env() sees only Devices: the global_filter accepts exactly those paths and
// rejects everything else, and the devices file, udev and lvm's hints cache are
// off, so nothing about the host's own disks leaks in or is written to.
type Config struct {
	// Dir is the LVM_SYSTEM_DIR: it holds lvm.conf, backup/, archive/, lock/.
	Dir string
	// FullMode means activation is on (the kernel has device-mapper).
	FullMode bool

	mu      sync.Mutex
	devices []string
}

// DetectFullMode reports whether LVs can be activated here, i.e. whether the
// kernel has device-mapper.
func DetectFullMode() bool {
	ok, _ := capability.Has(capability.DeviceMapper)
	return ok
}

// WriteConfig creates dir (if needed) and writes an lvm.conf that accepts
// only devicePaths.
func WriteConfig(dir string, fullMode bool, devicePaths ...string) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Config{Dir: abs, FullMode: fullMode}
	for _, sub := range []string{"backup", "archive", "lock"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := c.AddDevices(devicePaths...); err != nil {
		return nil, err
	}
	return c, nil
}

// Devices returns the device paths the filter accepts.
func (c *Config) Devices() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.devices)
}

// AddDevices widens the filter to also accept paths and rewrites lvm.conf
// (e.g. before vgextend onto a new device). Paths already accepted are ignored.
func (c *Config) AddDevices(paths ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	devs := slices.Clone(c.devices)
	for _, p := range paths {
		if err := validDevicePath(p); err != nil {
			return err
		}
		if !slices.Contains(devs, p) {
			devs = append(devs, p)
		}
	}
	conf, err := renderConfig(c.Dir, c.FullMode, devs)
	if err != nil {
		return err
	}
	// Write and rename, so a concurrently running lvm command reads either
	// the old or the new file, never half of one.
	tmp := filepath.Join(c.Dir, ".lvm.conf.tmp")
	if err := os.WriteFile(tmp, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(c.Dir, "lvm.conf")); err != nil {
		return err
	}
	c.devices = devs
	return nil
}

// validDevicePath rejects what cannot be put into the filter safely: lvm's
// filter syntax uses | as the regexp delimiter and " to end the string.
func validDevicePath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsAny(p, "|\"\\\n") {
		return fmt.Errorf("device path %q: want a clean absolute path without | \" \\ or newlines", p)
	}
	return nil
}

var confTemplate = template.Must(template.New("lvm.conf").Parse(`# Written by open-local test/loopvg. A private configuration: lvm sees only
# the devices accepted below and writes its backups and locks into this directory.
global {
	# 0: metadata-only mode for kernels without device-mapper.
	activation = {{if .Full}}1{{else}}0{{end}}
	use_lvmpolld = 0
	notify_dbus = 0
	event_activation = 0
	# Private locks: our commands never wait for (or block) the host's lvm.
	locking_dir = "{{.Dir}}/lock"
}
devices {
	global_filter = [ {{range .Accept}}"a|^{{.}}$|", {{end}}"r|.*|" ]
	use_devicesfile = 0
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
	# No /run/lvm/hints: it is shared with the host's lvm.
	hints = "none"
}
activation {
	# There is no udevd in the test VM or the CI container.
	udev_sync = 0
	udev_rules = 0
	verify_udev_operations = 0
	# No dmeventd.
	monitoring = 0
}
backup {
	backup_dir = "{{.Dir}}/backup"
	archive_dir = "{{.Dir}}/archive"
}
`))

func renderConfig(dir string, full bool, devices []string) (string, error) {
	if strings.ContainsAny(dir, "\"\\\n") {
		return "", fmt.Errorf("config dir %q contains a quote, backslash or newline", dir)
	}
	accept := make([]string, len(devices))
	for i, d := range devices {
		accept[i] = regexp.QuoteMeta(d)
	}
	var b strings.Builder
	err := confTemplate.Execute(&b, struct {
		Dir    string
		Full   bool
		Accept []string
	}{dir, full, accept})
	return b.String(), err
}

// Env is the environment every lvm command for this configuration needs.
func (c *Config) Env() []string {
	env := []string{
		"LVM_SYSTEM_DIR=" + c.Dir,
		// go test and the agent hold fds open; lvm would warn about each.
		"LVM_SUPPRESS_FD_WARNINGS=1",
	}
	if c.FullMode {
		// No udevd: libdevmapper creates /dev/mapper/* and /dev/<vg>/<lv>.
		env = append(env, "DM_DISABLE_UDEV=1")
	}
	return env
}

// Command returns `lvm args...` set up to use this configuration.
func (c *Config) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "lvm", args...)
	cmd.Env = append(os.Environ(), c.Env()...)
	return cmd
}

// Run runs `lvm args...` with this configuration and returns stdout.
func (c *Config) Run(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, c.Env(), "lvm", args...)
}

// Report runs an lvm report command (pvs, vgs, lvs) in JSON with sizes in
// bytes and no unit suffix, and returns the rows of its only section. Example:
//
//	c.Report(ctx, "vgs", "-o", "vg_name,vg_size", "vg0")
func (c *Config) Report(ctx context.Context, command string, args ...string) ([]map[string]string, error) {
	argv := append([]string{command, "--reportformat", "json", "--units", "b", "--nosuffix"}, args...)
	out, err := c.Run(ctx, argv...)
	if err != nil {
		return nil, err
	}
	return parseReport(out)
}

// parseReport decodes {"report":[{"<section>":[{field:value}...]}]}.
func parseReport(out []byte) ([]map[string]string, error) {
	var r struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("parse lvm report: %w: %q", err, out)
	}
	var rows []map[string]string
	for _, sec := range r.Report {
		for _, rs := range sec {
			rows = append(rows, rs...)
		}
	}
	return rows, nil
}
