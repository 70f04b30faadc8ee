/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command loopvg creates and destroys a volume group on loop devices for
// demos and scripts (make demo / make demo-down), using the same code as the
// tests (test/loopvg):
//
//	loopvg up   --dir D --vg NAME --size 2G [--size 2G]... [--mode auto|full|metadata]
//	loopvg down --dir D
//
// up prints shell assignments (LVM_SYSTEM_DIR, LOOPVG_VG, LOOPVG_DEVICES,
// LOOPVG_FULL_MODE) that can be eval'ed; everything it creates is recorded in
// D/state.json, and down removes exactly that.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/open-local/open-local/test/loopvg"
)

func main() {
	// Cancel on ^C so a half-done `up` rolls itself back instead of leaking
	// loop devices.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loopvg:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usageText = `usage:
  loopvg up   --dir DIR --vg NAME --size SIZE [--size SIZE]... [--mode auto|full|metadata]
  loopvg down --dir DIR`

// sizes is a repeatable --size flag.
type sizes []int64

func (s *sizes) String() string { return fmt.Sprint(*s) }
func (s *sizes) Set(v string) error {
	n, err := loopvg.ParseSize(v)
	if err != nil {
		return err
	}
	*s = append(*s, n)
	return nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{usageText}
	}
	fs := flag.NewFlagSet("loopvg "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "directory for backing files, LVM config and state.json")
	switch args[0] {
	case "up":
		vgName := fs.String("vg", "", "volume group name")
		mode := fs.String("mode", "auto", "auto (full if the kernel has device-mapper), full or metadata")
		var sz sizes
		fs.Var(&sz, "size", "size of one loop device (PV), e.g. 2G; repeatable")
		if err := fs.Parse(args[1:]); err != nil {
			return usageError{err.Error() + "\n" + usageText}
		}
		if *dir == "" || *vgName == "" || len(sz) == 0 || fs.NArg() > 0 {
			return usageError{usageText}
		}
		var full bool
		switch *mode {
		case "auto":
			full = loopvg.DetectFullMode()
		case "full":
			full = true
		case "metadata":
		default:
			return usageError{fmt.Sprintf("--mode %q: want auto, full or metadata", *mode)}
		}
		vg, err := loopvg.Up(ctx, loopvg.Options{Dir: *dir, VG: *vgName, Sizes: sz, FullMode: full})
		if err != nil {
			return err
		}
		devs := make([]string, len(vg.Devices))
		for i, d := range vg.Devices {
			devs[i] = d.Path
		}
		_, err = fmt.Fprintf(stdout, "LVM_SYSTEM_DIR=%s\nLOOPVG_VG=%s\nLOOPVG_DEVICES='%s'\nLOOPVG_FULL_MODE=%v\n",
			vg.Config.Dir, vg.Name, strings.Join(devs, " "), vg.Config.FullMode)
		return err
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return usageError{err.Error() + "\n" + usageText}
		}
		if *dir == "" || fs.NArg() > 0 {
			return usageError{usageText}
		}
		// Teardown must finish even when interrupted half-way.
		return loopvg.Down(context.WithoutCancel(ctx), *dir)
	default:
		return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usageText)}
	}
}
