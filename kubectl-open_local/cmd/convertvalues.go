/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/open-local/open-local/deploy/openlocalvalues"
)

// convertValuesCommand needs no cluster: it reads a file of alibaba/open-local's
// chart and prints ours (docs/migrating-from-open-local.md).
func (o *options) convertValuesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "convert-values FILE",
		Short: "Print values for our chart from a values file of alibaba/open-local's chart (- reads stdin)",
		Example: "  helm get values open-local -n kube-system -a -o yaml > old.yaml\n" +
			"  kubectl open-local convert-values old.yaml > values.yaml",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var in []byte
			var err error
			if args[0] == "-" {
				in, err = io.ReadAll(o.streams.In)
			} else {
				in, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			out, notes, err := openlocalvalues.Convert(in)
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintf(o.streams.ErrOut, "note: %s\n", n)
			}
			_, err = o.streams.Out.Write(out)
			return err
		},
	}
}
