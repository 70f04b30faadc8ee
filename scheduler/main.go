// Command scheduler is the open-local scheduler: kube-scheduler with the
// OpenLocal storage plugin compiled in. It runs as a secondary scheduler
// from the KubeSchedulerConfiguration in config/profile
// (--config=open-local-scheduler.yaml); pods opt in with
// spec.schedulerName: open-local-scheduler. Every kube-scheduler flag
// works as upstream documents it.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as upstream's binary
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/open-local/open-local/scheduler/plugin"
)

func main() {
	command := app.NewSchedulerCommand(app.WithPlugin(plugin.Name, plugin.New))
	os.Exit(cli.Run(command))
}
