/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/open-local/open-local/test/cluster"
)

// stage is one FROM ... AS name section of the Dockerfile.
type stage struct {
	from     string
	copies   []string // COPY lines
	commands string   // RUN lines, joined
}

func parseDockerfile(t *testing.T) map[string]*stage {
	t.Helper()
	data, err := os.ReadFile("images/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines.
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	stages := map[string]*stage{}
	var cur *stage
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			f := strings.Fields(line)
			if len(f) != 4 || !strings.EqualFold(f[2], "AS") {
				t.Fatalf("FROM without a stage name: %s", line)
			}
			cur = &stage{from: f[1]}
			stages[f[3]] = cur
		case cur == nil:
		case strings.HasPrefix(line, "COPY "):
			cur.copies = append(cur.copies, line)
		case strings.HasPrefix(line, "RUN "):
			cur.commands += " " + line
		}
	}
	return stages
}

// TestImages checks the Dockerfile against the chart and the code, since
// this machine cannot build images: the binary each chart container runs is
// in the image it names; the build stage copies every package the binaries
// import; the node image installs the Debian packages of every tool the
// agent and the CSI node plugin execute (looked up with dpkg on this
// Debian 12 host, the release of the image's base); the controller and
// scheduler images are distroless and non-root; the binaries are static.
func TestImages(t *testing.T) {
	stages := parseDockerfile(t)
	for _, name := range []string{"build", "node", "controller", "scheduler"} {
		if stages[name] == nil {
			t.Fatalf("Dockerfile has no stage %s", name)
		}
	}

	// Chart containers → image stage and binary.
	m := render(t)
	var containers []corev1.Container
	containers = append(containers, typed[appsv1.DaemonSet](t, m.get(t, "DaemonSet", "open-local-agent")).Spec.Template.Spec.Containers...)
	containers = append(containers, typed[appsv1.Deployment](t, m.get(t, "Deployment", "open-local-controller")).Spec.Template.Spec.Containers...)
	containers = append(containers, typed[appsv1.Deployment](t, m.get(t, "Deployment", "open-local-scheduler")).Spec.Template.Spec.Containers...)
	ours := 0
	for _, c := range containers {
		img := regexp.MustCompile(`open-local/open-local-(node|controller|scheduler):`).FindStringSubmatch(c.Image)
		if img == nil {
			continue // a sidecar
		}
		ours++
		bin := filepath.Base(c.Command[0])
		if !slices.ContainsFunc(stages[img[1]].copies, func(cp string) bool {
			return strings.Contains(cp, "--from=build") && strings.Contains(cp, "/out/"+bin+" ")
		}) {
			t.Errorf("container %s runs %s from image %s, whose stage does not copy it: %v", c.Name, c.Command[0], img[1], stages[img[1]].copies)
		}
	}
	if ours != 5 {
		t.Errorf("%d containers run our images, want 5 (agent, csi-plugin, csi-controller, nls-controller, scheduler)", ours)
	}

	// The kubectl plugin ships in the controller image.
	if !slices.ContainsFunc(stages["controller"].copies, func(cp string) bool {
		return strings.Contains(cp, "--from=build") && strings.Contains(cp, "/out/kubectl-open_local ")
	}) {
		t.Errorf("the controller image does not copy kubectl-open_local: %v", stages["controller"].copies)
	}

	// The build stage has every directory of the module the binaries use.
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", "./agent", "./csi", "./scheduler", "./kubectl-open_local")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		if rest, ok := strings.CutPrefix(p, "github.com/open-local/open-local/"); ok {
			dirs[strings.Split(rest, "/")[0]] = true
		}
	}
	for d := range dirs {
		if !slices.Contains(stages["build"].copies, "COPY "+d+"/ "+d+"/") {
			t.Errorf("the build stage does not copy %s/, which the binaries import", d)
		}
	}
	ignore, err := os.ReadFile("images/Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for d := range dirs {
		if !bytes.Contains(ignore, []byte("!"+d+"/\n")) {
			t.Errorf("Dockerfile.dockerignore leaves %s/ out of the build context", d)
		}
	}

	// The node image's tools.
	tools := []string{"lvm", "blkid", "losetup", "mount", "umount", "fsck", "e2fsck", "mkfs.ext4", "mkfs.ext3",
		"mkfs.xfs", "resize2fs", "xfs_growfs"}
	for _, tool := range tools {
		pkg := debianPackage(t, tool)
		if !regexp.MustCompile(`apt-get install[^&]*\s` + regexp.QuoteMeta(pkg) + `(\s|$)`).MatchString(stages["node"].commands) {
			t.Errorf("the node image does not install %s (which provides %s)", pkg, tool)
		}
	}
	for _, s := range []string{"controller", "scheduler"} {
		if !strings.HasPrefix(stages[s].from, "gcr.io/distroless/static") {
			t.Errorf("%s image is based on %s, want distroless static", s, stages[s].from)
		}
	}
	df, _ := os.ReadFile("images/Dockerfile")
	if !strings.Contains(string(df), "CGO_ENABLED=0") {
		t.Error("the build stage does not build static binaries (CGO_ENABLED=0)")
	}
}

// debianPackage is the package that provides tool on this Debian host.
func debianPackage(t *testing.T, tool string) string {
	t.Helper()
	for _, dir := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
		out, err := exec.CommandContext(t.Context(), "dpkg", "-S", dir+"/"+tool).Output()
		if err == nil {
			return strings.TrimSpace(strings.SplitN(string(out), ":", 2)[0])
		}
	}
	t.Fatalf("no Debian package provides %s on this machine (dpkg -S)", tool)
	return ""
}

// TestStaticBinaries builds the agent and the CSI binary as the Dockerfile
// does (static, versions from hack/version.sh) and checks they need no
// dynamic loader (distroless static has none) and report the stamped version.
func TestStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binaries as the Dockerfile does (-trimpath: a cache of its own)")
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	versionOf := func(args ...string) string {
		out, err := exec.CommandContext(t.Context(), filepath.Join(root, "hack", "version.sh"), args...).Output()
		if err != nil {
			t.Fatalf("hack/version.sh %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	want := versionOf("ours")
	df, _ := os.ReadFile("images/Dockerfile")
	if !strings.Contains(string(df), `$(hack/version.sh ldflags ours)`) || !strings.Contains(string(df), `$(hack/version.sh ldflags scheduler)`) {
		t.Error("the Dockerfile does not stamp versions with hack/version.sh, as make build does")
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags", "-s -w "+versionOf("ldflags", "ours"), "-o", dir+"/", "./agent", "./csi")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, bin := range []string{"agent", "csi"} {
		f, err := elf.Open(filepath.Join(dir, bin))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", bin)
			}
		}
		f.Close()
		out, err := exec.CommandContext(t.Context(), filepath.Join(dir, bin), "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s --version = %q, %v; want it to report %s", bin, out, err, want)
		}
	}
}
