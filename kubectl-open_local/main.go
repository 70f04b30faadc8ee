/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command kubectl-open_local is the kubectl plugin `kubectl open-local`:
// how full each node is, the LocalVolumes, why a pod is Pending and what is
// leaked, computed from the API with the scheduler's own capacity code.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/open-local/open-local/kubectl-open_local/cmd"
)

func main() {
	root := cmd.NewRoot(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
