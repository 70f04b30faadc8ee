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

// ChartDir is the chart's directory relative to this package (tests render
// it with helm).
const ChartDir = "helm/open-local"

// Dashboard is the Grafana dashboard the chart ships (monitoring.grafanaDashboard).
//
//go:embed helm/open-local/dashboards/open-local.json
var Dashboard []byte

// Values is the chart's values.yaml: its defaults, for programs that write
// values files for it (openlocalvalues).
//
//go:embed helm/open-local/values.yaml
var Values []byte
