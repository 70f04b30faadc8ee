/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command vm-guest runs inside the test VM (see package test/vm): it runs the
// test binaries listed in the plan file one after another, streams their
// output and writes results.json beside the plan.
//
//	vm-guest /shared/dir/plan.json
package main

import (
	"context"
	"os"

	"github.com/open-local/open-local/test/vm"
)

func main() {
	os.Exit(vm.GuestMain(context.Background(), os.Args[1:], os.Stdout))
}
