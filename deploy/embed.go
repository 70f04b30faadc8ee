// Package deploy carries the install manifests into Go programs, so tests,
// the local cluster and the demo apply exactly what the Helm chart ships.
package deploy

import "embed"

// CRDs holds the generated CustomResourceDefinitions of the chart.
//
//go:embed helm/open-local/crds/*.yaml
var CRDs embed.FS

// CRDDir is the directory of the CRDs inside CRDs.
const CRDDir = "helm/open-local/crds"
