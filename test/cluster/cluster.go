// Package cluster runs a real Kubernetes control plane on 127.0.0.1 from
// binaries built from Go modules pinned by this repository: etcd,
// kube-apiserver, kube-controller-manager and kwok (which keeps API-created
// Nodes Ready and marks pods Running, since no kubelet runs here).
//
// Tests get one per package (ForTest + Main) or reuse an already running
// one (OPEN_LOCAL_CLUSTER_DIR); `make cluster-up` starts a detached one with
// the localcluster command.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
)

// Ports of the control plane, all on 127.0.0.1. Zero picks a free port.
type Ports struct {
	Etcd              int `json:"etcd"`
	EtcdPeer          int `json:"etcdPeer"`
	APIServer         int `json:"apiServer"`
	ControllerManager int `json:"controllerManager"`
	Kwok              int `json:"kwok"`
}

// Options say what to start and where.
type Options struct {
	// Dir holds PKI, etcd data, logs, the kubeconfig and state.json.
	Dir string
	// ToolsDir has etcd, kube-apiserver, kube-controller-manager, kwok, kubectl.
	ToolsDir string
	Ports    Ports
	// NoControllerManager skips kube-controller-manager (it is needed for PVC binding).
	NoControllerManager bool
	// NoKwok skips kwok (then API-created Nodes stay NotReady and tainted).
	NoKwok bool
	// KwokNodeSelector, when set, is a label selector: kwok manages (keeps
	// Ready, runs pods of) only the Nodes it matches, instead of every Node.
	// A cluster with a real kubelet needs it, or kwok would fight the kubelet
	// over that node's status and pods.
	KwokNodeSelector string
	// Detached daemons outlive this process; otherwise they die with it.
	Detached bool
	// ExtraAPIServerFlags are appended to kube-apiserver's command line.
	ExtraAPIServerFlags []string
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string       `json:"dir"`
	Kubeconfig string       `json:"kubeconfig"`
	ToolsDir   string       `json:"toolsDir"`
	Ports      Ports        `json:"ports"`
	Components []*component `json:"components"`
	// Detached says whether the daemons outlive the process that started
	// them (StartDaemon starts more the same way).
	Detached bool `json:"detached,omitempty"`
	// Host, when set, is the address this machine reaches the apiserver
	// at, for a view of a cluster that runs on another machine (a VM's
	// guest reaching its host: ExportForGuest). Its Components are only
	// the daemons started on this machine.
	Host string `json:"host,omitempty"`

	restConfig *rest.Config
}

const stateFile = "state.json"

// Start brings the control plane up and installs our CRDs. On error,
// everything it started is stopped again.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Dir == "" || opts.ToolsDir == "" {
		return nil, errors.New("cluster: Dir and ToolsDir are required")
	}
	if err := validKwokSelector(opts.KwokNodeSelector); err != nil {
		return nil, fmt.Errorf("cluster: KwokNodeSelector: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if old, err := Attach(dir); err == nil {
		return nil, fmt.Errorf("a cluster already runs in %s (api port %d): stop it first", dir, old.Ports.APIServer)
	}
	// A previous run that died: stop whatever of it is still alive.
	if old, err := LoadState(dir); err == nil {
		old.Stop()
	}
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	p := pki{dir: filepath.Join(dir, "pki")}
	if err := p.ensure(); err != nil {
		return nil, fmt.Errorf("generate PKI: %w", err)
	}
	ports, err := resolvePorts(opts.Ports)
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), ToolsDir: opts.ToolsDir, Ports: ports, Detached: opts.Detached}
	if err := c.writeKubeconfig(p); err != nil {
		return nil, err
	}
	// Not c: `return nil, err` sets it to nil before deferred calls run.
	started := c
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	start := func(name string, args ...string) (*component, error) {
		comp, err := startProcess(name, filepath.Join(opts.ToolsDir, name), args, nil, logDir, opts.Detached)
		if err != nil {
			return nil, err
		}
		c.Components = append(c.Components, comp)
		return comp, c.save()
	}
	loop := func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

	etcdData := filepath.Join(dir, "etcd-data")
	if err := os.RemoveAll(etcdData); err != nil {
		return nil, err
	}
	etcd, err := start("etcd", "--name=local", "--data-dir="+etcdData,
		"--listen-client-urls="+loop(ports.Etcd), "--advertise-client-urls="+loop(ports.Etcd),
		"--listen-peer-urls="+loop(ports.EtcdPeer), "--initial-advertise-peer-urls="+loop(ports.EtcdPeer),
		"--initial-cluster=local="+loop(ports.EtcdPeer),
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, etcd, loop(ports.Etcd)+"/health", nil, 60*time.Second); err != nil {
		return nil, err
	}

	apiArgs := []string{
		"--etcd-servers=" + loop(ports.Etcd),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports.APIServer),
		// Without it, a loopback advertise address makes the apiserver exit.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + p.path("apiserver.crt"), "--tls-private-key-file=" + p.path("apiserver.key"),
		"--client-ca-file=" + p.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.path("sa.pub"), "--service-account-signing-key-file=" + p.path("sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC", "--allow-privileged=true",
	}
	api, err := start("kube-apiserver", append(apiArgs, opts.ExtraAPIServerFlags...)...)
	if err != nil {
		return nil, err
	}
	adminTLS, err := p.clientTLS()
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, api, c.Server()+"/readyz", adminTLS, 120*time.Second); err != nil {
		return nil, err
	}

	if !opts.NoControllerManager {
		// kube-controller-manager exits when one of its startup requests
		// fails, which a starved machine (the emulated test VM beside other
		// work) can make happen: give it a few tries.
		for attempt := 1; ; attempt++ {
			kcm, err := start("kube-controller-manager", "--kubeconfig="+c.Kubeconfig,
				"--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
				"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports.ControllerManager),
				"--leader-elect=false", "--use-service-account-credentials=false",
				// The default 20 QPS makes the PV controller (~4 writes per bind)
				// the bottleneck of any PVC-heavy test or benchmark.
				"--kube-api-qps=1000", "--kube-api-burst=2000",
				"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
				"--cluster-signing-cert-file="+p.path("ca.crt"), "--cluster-signing-key-file="+p.path("ca.key"),
				"--controllers=*")
			if err != nil {
				return nil, err
			}
			err = waitHealthy(ctx, kcm, "https://127.0.0.1:"+strconv.Itoa(ports.ControllerManager)+"/healthz",
				insecureLoopbackTLS(), 60*time.Second)
			if err == nil {
				break
			}
			if kcm.alive() || attempt == 3 {
				return nil, err
			}
			c.Components = slices.DeleteFunc(c.Components, func(x *component) bool { return x == kcm })
		}
	}

	if !opts.NoKwok {
		stages := filepath.Join(dir, "kwok-stages.yaml")
		if err := os.WriteFile(stages, []byte(kwokStages()), 0o644); err != nil {
			return nil, err
		}
		kwok, err := start("kwok", append([]string{"--kubeconfig=" + c.Kubeconfig, "--config=" + stages,
			"--server-address=127.0.0.1:" + strconv.Itoa(ports.Kwok),
			"--cidr=10.244.0.0/16", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40"},
			kwokManageFlags(opts.KwokNodeSelector)...)...)
		if err != nil {
			return nil, err
		}
		if err := waitHealthy(ctx, kwok, loop(ports.Kwok)+"/healthz", nil, 60*time.Second); err != nil {
			return nil, err
		}
	}
	if err := InstallCRDs(ctx, c.RESTConfig()); err != nil {
		return nil, err
	}
	return c, c.save()
}

// Attach returns the cluster running in dir, or an error if it is not up.
func Attach(dir string) (*Cluster, error) {
	c, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	for _, comp := range c.Components {
		if !comp.alive() {
			return nil, fmt.Errorf("%w: %s (pid %d) is gone", errNotRunning, comp.Name, comp.Pid)
		}
	}
	tlsConfig, err := pki{dir: filepath.Join(c.Dir, "pki")}.clientTLS()
	if err != nil {
		return nil, err
	}
	if c.Host != "" {
		// The control plane runs on another machine: only its answer counts.
		tlsConfig.ServerName = "127.0.0.1"
		if err := waitReady(context.Background(), c.Server()+"/readyz", tlsConfig, 30*time.Second); err != nil {
			return nil, err
		}
		return c, nil
	}
	if api := c.component("kube-apiserver"); api == nil {
		return nil, errNotRunning
	} else if err := waitHealthy(context.Background(), api, c.Server()+"/readyz", tlsConfig, 5*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop stops clients first, then the apiserver, then etcd (an apiserver whose
// etcd is gone takes many seconds to exit), and forgets the state.
func (c *Cluster) Stop() {
	var clients, api, etcd []*component
	for _, comp := range c.Components {
		switch comp.Name {
		case "kube-apiserver":
			api = append(api, comp)
		case "etcd":
			etcd = append(etcd, comp)
		default:
			clients = append(clients, comp)
		}
	}
	stopAll(clients, 10*time.Second)
	stopAll(api, 10*time.Second)
	stopAll(etcd, 10*time.Second)
	_ = os.Remove(filepath.Join(c.Dir, stateFile))
	_ = os.RemoveAll(filepath.Join(c.Dir, "etcd-data"))
}

// Server is the apiserver URL.
func (c *Cluster) Server() string {
	host := "127.0.0.1"
	if c.Host != "" {
		host = c.Host
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(c.Ports.APIServer))
}

// ExportForGuest writes into dir a view of this cluster for another
// machine that reaches this one's 127.0.0.1 at host (a QEMU guest with
// user networking: 10.0.2.2): a copy of the client certificates, a
// kubeconfig for host (the serving certificate is for 127.0.0.1), and the
// state Attach reads. The control plane itself keeps running here.
func (c *Cluster) ExportForGuest(dir, host string) error {
	src, dst := pki{dir: filepath.Join(c.Dir, "pki")}, pki{dir: filepath.Join(dir, "pki")}
	if err := os.MkdirAll(dst.dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"ca.crt", "admin.crt", "admin.key"} {
		data, err := os.ReadFile(src.path(f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst.path(f), data, 0o600); err != nil {
			return err
		}
	}
	g := &Cluster{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), ToolsDir: c.ToolsDir, Ports: c.Ports, Host: host}
	if err := g.writeKubeconfig(dst); err != nil {
		return err
	}
	return g.save()
}

// RESTConfig is an admin config for the cluster, with QPS high enough that
// tests measure our code, not client throttling.
func (c *Cluster) RESTConfig() *rest.Config {
	if c.restConfig == nil {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			panic(fmt.Sprintf("kubeconfig %s written by this package is unreadable: %v", c.Kubeconfig, err))
		}
		cfg.QPS, cfg.Burst = 500, 1000
		c.restConfig = cfg
	}
	return rest.CopyConfig(c.restConfig)
}

// Client is a Kubernetes clientset for the cluster.
func (c *Cluster) Client() kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.RESTConfig())
}

// OpenLocalClient is the typed clientset of our CRDs.
func (c *Cluster) OpenLocalClient() olclient.Interface {
	return olclient.NewForConfigOrDie(c.RESTConfig())
}

// Tool is the path of a tool binary (e.g. "kubectl").
func (c *Cluster) Tool(name string) string { return filepath.Join(c.ToolsDir, name) }

func (c *Cluster) component(name string) *component {
	for _, comp := range c.Components {
		if comp.Name == name {
			return comp
		}
	}
	return nil
}

func (c *Cluster) save() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.Dir, stateFile))
}

// LoadState reads the recorded state of a cluster in dir, running or not.
func LoadState(dir string) (*Cluster, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", errNotRunning, dir)
	} else if err != nil {
		return nil, err
	}
	c := &Cluster{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return c, nil
}

func resolvePorts(p Ports) (Ports, error) {
	free, err := FreePorts(5)
	if err != nil {
		return p, err
	}
	for i, ptr := range []*int{&p.Etcd, &p.EtcdPeer, &p.APIServer, &p.ControllerManager, &p.Kwok} {
		if *ptr == 0 {
			*ptr = free[i]
		} else if !portFree(*ptr) {
			return p, fmt.Errorf("port %d on 127.0.0.1 is taken", *ptr)
		}
	}
	return p, nil
}

func (c *Cluster) writeKubeconfig(p pki) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: %q, tls-server-name: 127.0.0.1, certificate-authority: %q}}]
users: [{name: admin, user: {client-certificate: %q, client-key: %q}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
`, c.Server(), p.path("ca.crt"), p.path("admin.crt"), p.path("admin.key"))
	return os.WriteFile(c.Kubeconfig, []byte(kc), 0o600)
}

func (p pki) clientTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.path("admin.crt"), p.path("admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(p.path("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Kill SIGKILLs one component (tests of restart behaviour).
func (c *Cluster) Kill(name string) {
	if comp := c.component(name); comp != nil {
		comp.signal(syscall.SIGKILL)
	}
}

// insecureLoopbackTLS is for health probes of our own components on
// 127.0.0.1, which serve self-signed certificates.
func insecureLoopbackTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback probe of a self-signed endpoint we started
}
