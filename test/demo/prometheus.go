/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/prometheus"
)

// promScrapeInterval: short, so the steps' load shows in rates.
const promScrapeInterval = 5 * time.Second

// demoAlert is the alert step 8 makes fire on purpose (an LV no
// LocalVolume names), held for promAlertFor.
const (
	demoAlert    = "OpenLocalOrphanLVs"
	promAlertFor = 10 * time.Second
)

// promRateInterval stands in for Grafana's $__rate_interval (at least four
// scrape intervals).
const promRateInterval = 30 * time.Second

// The ServiceAccount Prometheus scrapes as, bound by the chart's
// monitoring.metricsReader to its metrics-reader ClusterRole.
const promNamespace, promServiceAccount = "kube-system", "prometheus"

// promJobs are open-local's endpoints as the chart's ServiceMonitors
// scrape them (job = the metrics Service; HTTPS with the token).
func (d *demo) promJobs(tokenFile string) []prometheus.Job {
	return []prometheus.Job{
		{Name: "open-local-agent-metrics", Targets: []string{loopback(d.ports.agent), loopback(d.ports.csiNode)},
			TokenFile: tokenFile, Labels: map[string]string{"node": d.nodeName}},
		{Name: "open-local-controller-metrics", Targets: []string{loopback(d.ports.csiController), loopback(d.ports.nlsController)},
			TokenFile: tokenFile},
		{Name: "open-local-scheduler-metrics", Targets: []string{loopback(d.ports.scheduler)}, TokenFile: tokenFile},
	}
}

// setUpPrometheus runs Debian's Prometheus as one more daemon: the chart's
// metrics-reader role bound to its ServiceAccount, the chart's alert rules.
func (d *demo) setUpPrometheus(ctx context.Context) (string, error) {
	if ok, why := capability.Has(capability.Prometheus); !ok {
		return "", fmt.Errorf("prometheus: %s", why)
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return "", err
	}
	manifest, err := d.helmTemplate(ctx, []string{"--set", "monitoring.metricsReader.serviceAccounts[0].name=" + promServiceAccount,
		"--set", "monitoring.metricsReader.serviceAccounts[0].namespace=" + promNamespace}, "templates/rbac-metrics-reader.yaml")
	if err != nil {
		return "", err
	}
	if _, err := d.applyManifest(ctx, "metrics-reader.yaml", manifest); err != nil {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: promServiceAccount, Namespace: promNamespace}}
	if _, err := d.kube.CoreV1().ServiceAccounts(promNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	// A day: the demo cluster is left running for the user.
	tr, err := d.kube.CoreV1().ServiceAccounts(promNamespace).CreateToken(ctx, promServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(24 * 3600))}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	dir := d.path("prometheus")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		return "", err
	}
	// The chart's rules; the alert step 8 makes fire on purpose holds for
	// promAlertFor instead of its half hour (its expression is the chart's).
	raw, err := os.ReadFile(filepath.Join(d.cfg.RepoRoot, "deploy", "helm", "open-local", "rules", "open-local.rules.yaml"))
	if err != nil {
		return "", err
	}
	short, err := prometheus.ShortenFor(raw, promAlertFor, demoAlert)
	if err != nil {
		return "", err
	}
	rules := filepath.Join(dir, "open-local.rules.yaml")
	if err := os.WriteFile(rules, short, 0o644); err != nil {
		return "", err
	}
	jobs := d.promJobs(tokenFile)
	cfg, err := prometheus.Config(jobs, []string{rules}, promScrapeInterval)
	if err != nil {
		return "", err
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		return "", err
	}
	if err := d.cluster.StartDaemon("prometheus", bin, nil, prometheus.Args(cfgFile, filepath.Join(dir, "data"), loopback(d.ports.prometheus))...); err != nil {
		return "", err
	}
	prom, err := prometheus.NewClient(loopback(d.ports.prometheus))
	if err != nil {
		return "", err
	}
	err = d.poll(ctx, time.Minute, "prometheus", func(ctx context.Context) (bool, string, error) {
		ok, why := prom.Ready(ctx, jobs)
		return ok, why, nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("Debian's Prometheus at http://%s scraping the agent, CSI node and controller plugins, NLS controller and scheduler over HTTPS as ServiceAccount %s/%s (the chart's metrics-reader role), with the chart's alert rules (%s held for %s instead of its 30m, so step 8 can make it fire)",
		loopback(d.ports.prometheus), promNamespace, promServiceAccount, demoAlert, promAlertFor), nil
}
