/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// StateFile is the name, inside an environment's directory, of the record of
// everything Up created. Down trusts only this record.
const StateFile = "state.json"

// VG is a volume group on loop devices with its private LVM configuration.
type VG struct {
	Name    string
	Devices []Device
	Config  *Config
	// Dir holds the backing files, the config dir (lvm/) and state.json.
	Dir string
}

// Options describe an environment for Up.
type Options struct {
	// Dir is created if missing; it must not already hold a state.json.
	Dir string
	// VG is the volume group name. In full mode it must be unique on the
	// machine: device-mapper names (/dev/mapper/<vg>-<lv>) are global.
	VG string
	// Sizes of the loop devices (one PV each), in bytes.
	Sizes []int64
	// FullMode activates LVs (needs device-mapper); see DetectFullMode.
	FullMode bool
}

// state is persisted after every step of Up, so Down can undo a half-built
// environment (Up failed, or the process was killed).
type state struct {
	VG        string   `json:"vg"`
	VGCreated bool     `json:"vgCreated"`
	FullMode  bool     `json:"fullMode"`
	ConfigDir string   `json:"configDir"`
	Files     []string `json:"files"` // backing files we created
	Devices   []Device `json:"devices"`
}

// Up creates sparse files in opts.Dir, attaches a loop device to each, writes
// a private LVM config accepting only those devices, and creates the VG on
// them. On failure it undoes what it did. Tear down with Down(ctx, opts.Dir).
func Up(ctx context.Context, opts Options) (vg *VG, err error) {
	if opts.VG == "" || len(opts.Sizes) == 0 {
		return nil, errors.New("loopvg: need a VG name and at least one size")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	statePath := filepath.Join(dir, StateFile)
	if _, err := os.Stat(statePath); err == nil {
		return nil, fmt.Errorf("loopvg: %s exists: %s is already in use (run down first)", statePath, dir)
	}
	st := &state{VG: opts.VG, FullMode: opts.FullMode, ConfigDir: filepath.Join(dir, "lvm")}
	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Roll back with a context that survives the caller's
			// cancellation: a cancelled Up must still clean up.
			err = errors.Join(err, Down(context.WithoutCancel(ctx), dir))
		}
	}()

	var paths []string
	for i, size := range opts.Sizes {
		file := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		if err := CreateSparseFile(file, size); err != nil {
			return nil, err
		}
		st.Files = append(st.Files, file)
		if err := saveState(dir, st); err != nil {
			return nil, err
		}
		d, err := Attach(ctx, file)
		if err != nil {
			return nil, err
		}
		st.Devices = append(st.Devices, d)
		if err := saveState(dir, st); err != nil {
			return nil, err
		}
		paths = append(paths, d.Path)
	}
	cfg, err := WriteConfig(st.ConfigDir, opts.FullMode, paths...)
	if err != nil {
		return nil, err
	}
	if _, err := cfg.Run(ctx, append([]string{"pvcreate", "--yes"}, paths...)...); err != nil {
		return nil, err
	}
	// Recorded before vgcreate: if vgcreate half-succeeds, Down still looks.
	st.VGCreated = true
	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	if _, err := cfg.Run(ctx, append([]string{"vgcreate", "--yes", opts.VG}, paths...)...); err != nil {
		return nil, err
	}
	return &VG{Name: opts.VG, Devices: st.Devices, Config: cfg, Dir: dir}, nil
}

// Down tears down what dir's state file records: it removes the VG (only
// through the private config, so no other VG is visible to it; in full mode
// after deactivating its LVs), detaches the loop devices still bound to our
// files, and deletes the files, the config dir and the state file. It keeps
// going after errors and returns all of them. Without a state file there is
// nothing to do.
func Down(ctx context.Context, dir string) error {
	statePath := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("loopvg: %s: %w", statePath, err)
	}

	var errs []error
	if st.VGCreated && len(st.Devices) > 0 {
		errs = append(errs, removeVG(ctx, &st))
	}
	for _, d := range st.Devices {
		if err := d.Detach(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the state file and the files: a second Down can retry, and
		// deleting files under still-attached loop devices helps no one.
		return err
	}
	for _, f := range st.Files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if st.ConfigDir != "" && filepath.Dir(st.ConfigDir) == filepath.Clean(dir) {
		errs = append(errs, os.RemoveAll(st.ConfigDir))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(statePath)
}

// removeVG deactivates (full mode) and removes st.VG if it exists.
func removeVG(ctx context.Context, st *state) error {
	var paths []string
	for _, d := range st.Devices {
		if ours, err := attachedTo(d); err == nil && ours {
			paths = append(paths, d.Path)
		}
	}
	if len(paths) == 0 {
		return nil // the devices are gone: so is the VG
	}
	// Rewrite the config from the state: it is cheap, and Down must work
	// even if the test left a broken or widened lvm.conf behind.
	cfg, err := WriteConfig(st.ConfigDir, st.FullMode, paths...)
	if err != nil {
		return err
	}
	// List rather than ask for st.VG: asking fails differently for a VG
	// that is absent and for a name vgcreate refused.
	rows, err := cfg.Report(ctx, "vgs", "-o", "vg_name")
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(rows, func(r map[string]string) bool { return r["vg_name"] == st.VG }) {
		return nil // removed by the test itself, or vgcreate never got there
	}
	var deactivateErr error
	if st.FullMode {
		// vgremove deactivates too, but a separate step names the culprit
		// (an LV still mounted or open) in the error.
		_, deactivateErr = cfg.Run(ctx, "vgchange", "--activate", "n", st.VG)
	}
	_, err = cfg.Run(ctx, "vgremove", "--force", "--yes", st.VG)
	if err == nil {
		return nil
	}
	// A test may have extended the VG onto a device it has detached since
	// (or that this config no longer lists): lvm refuses to change a VG with
	// missing PVs until they are dropped from its metadata.
	if _, rerr := cfg.Run(ctx, "vgreduce", "--removemissing", "--force", st.VG); rerr == nil {
		if _, err2 := cfg.Run(ctx, "vgremove", "--force", "--yes", st.VG); err2 == nil {
			return nil
		}
	}
	return errors.Join(deactivateErr, err)
}

func saveState(dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, StateFile))
}

// Run runs `lvm args...` with the VG's configuration.
func (v *VG) Run(ctx context.Context, args ...string) ([]byte, error) {
	return v.Config.Run(ctx, args...)
}

// LVPath is the device node of an activated LV (full mode only; in metadata
// mode use AttachLinearLV).
func (v *VG) LVPath(lv string) string { return filepath.Join("/dev", v.Name, lv) }
