/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import "github.com/prometheus/client_golang/prometheus"

// QuarantinedDevices is the gauge open_local_quarantined_devices{nodename}:
// disks released by a Device volume that wait for their wipe (LocalVolume
// phase Quarantined). They are held, so a non-zero value that stays is
// capacity lost: the wipe keeps failing, or policy manual awaits an operator.
type QuarantinedDevices struct{ g *prometheus.GaugeVec }

// NewQuarantinedDevices registers the gauge with reg.
func NewQuarantinedDevices(reg prometheus.Registerer) *QuarantinedDevices {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "open_local_quarantined_devices",
		Help: "Disks released by a Device volume and not yet wiped (LocalVolume phase Quarantined): held, offered to no claim until wiped by the agent's --device-wipe policy or released by an operator.",
	}, []string{"nodename"})
	reg.MustRegister(g)
	return &QuarantinedDevices{g: g}
}

// Set reports node's count.
func (q *QuarantinedDevices) Set(node string, n int) {
	if q == nil {
		return
	}
	q.g.WithLabelValues(node).Set(float64(n))
}
