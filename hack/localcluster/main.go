// Command localcluster starts and stops the local control plane (etcd,
// kube-apiserver, kube-controller-manager, kwok) that `make cluster-up`,
// `make test` and `make demo` run on.
//
//	localcluster up   --dir D   # starts detached daemons, prints the kubeconfig path
//	localcluster down --dir D   # stops them (safe to repeat)
//	localcluster status --dir D
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/open-local/open-local/test/cluster"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: localcluster up|down|status --dir DIR [--api-port N] [--kwok-node-selector SELECTOR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "/tmp/open-local/cluster", "work directory (PKI, etcd data, logs, kubeconfig)")
	apiPort := fs.Int("api-port", 0, "kube-apiserver port on 127.0.0.1 (0: any free port)")
	kwokSelector := fs.String("kwok-node-selector", "", "kwok manages only the Nodes matching this label selector (default: all Nodes)")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, os.Args[1], *dir, *apiPort, *kwokSelector); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, verb, dir string, apiPort int, kwokSelector string) error {
	switch verb {
	case "up":
		tools, err := cluster.ToolsDir(ctx)
		if err != nil {
			return err
		}
		c, err := cluster.Start(ctx, cluster.Options{Dir: dir, ToolsDir: tools, Detached: true,
			Ports: cluster.Ports{APIServer: apiPort}, KwokNodeSelector: kwokSelector})
		if err != nil {
			return err
		}
		fmt.Println(c.Kubeconfig)
	case "down":
		if c, err := cluster.Attach(dir); err == nil {
			c.Stop()
		} else if c, err := cluster.LoadState(dir); err == nil {
			c.Stop() // partly running: stop what is left
		}
	case "status":
		c, err := cluster.Attach(dir)
		if err != nil {
			return err
		}
		fmt.Printf("running: apiserver %s, kubeconfig %s\n", c.Server(), c.Kubeconfig)
	default:
		return fmt.Errorf("unknown verb %q", verb)
	}
	return nil
}
