package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StartDaemon runs one more daemon of the cluster (our scheduler, agent, CSI
// driver, the CSI sidecars, a kubelet …) the way the control plane's own
// daemons run: output to <dir>/logs/<name>.log, recorded in state.json,
// detached if the cluster is, and stopped by Stop before the apiserver. So a
// detached cluster (make demo) is taken down completely by `localcluster
// down` too. env is added to this process's environment.
func (c *Cluster) StartDaemon(name, bin string, env []string, args ...string) error {
	if c.component(name) != nil {
		return fmt.Errorf("a daemon named %s is already recorded in %s", name, c.Dir)
	}
	logDir := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	comp, err := startProcess(name, bin, args, env, logDir, c.Detached)
	if err != nil {
		return err
	}
	c.Components = append(c.Components, comp)
	return c.save()
}

// DaemonAlive reports whether the named daemon still runs.
func (c *Cluster) DaemonAlive(name string) bool {
	comp := c.component(name)
	return comp != nil && comp.alive()
}

// DaemonLog is the path of the named daemon's log ("" if unknown).
func (c *Cluster) DaemonLog(name string) string {
	if comp := c.component(name); comp != nil {
		return comp.Log
	}
	return ""
}

// DaemonLogTail returns the last n lines of the named daemon's log.
func (c *Cluster) DaemonLogTail(name string, n int) string {
	if comp := c.component(name); comp != nil {
		return comp.logTail(n)
	}
	return ""
}

// StopDaemon stops the named daemon (SIGTERM, SIGKILL after grace) and
// forgets it.
func (c *Cluster) StopDaemon(name string, grace time.Duration) error {
	comp := c.component(name)
	if comp == nil {
		return nil
	}
	stopAll([]*component{comp}, grace)
	kept := c.Components[:0]
	for _, other := range c.Components {
		if other != comp {
			kept = append(kept, other)
		}
	}
	c.Components = kept
	return c.save()
}
