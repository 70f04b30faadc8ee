package apis_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Generated deepcopy, CRD YAML and client code must match what
// `make generate` produces from the types today.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerates code (~10 s); skipped with -short")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	// Copy what generation reads (module files, types, header, script) plus the outputs, then regenerate there.
	for _, dir := range []string{"apis", "config", "hack", "deploy/helm/open-local/crds"} {
		copyTree(t, filepath.Join(root, dir), filepath.Join(scratch, dir))
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(scratch, f))
	}
	cmd := exec.Command(filepath.Join(root, "hack", "update-codegen.sh"))
	cmd.Env = append(os.Environ(), "OUT="+scratch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("update-codegen.sh: %v\n%s", err, out)
	}
	for _, dir := range []string{"apis", "config", "deploy/helm/open-local/crds"} {
		want := readTree(t, filepath.Join(scratch, dir))
		got := readTree(t, filepath.Join(root, dir))
		for name, data := range want {
			if !bytes.Equal(got[name], data) {
				t.Errorf("%s/%s is stale: run `make generate`", dir, name)
			}
		}
		for name := range got {
			if _, ok := want[name]; !ok {
				t.Errorf("%s/%s is not generated any more: run `make generate`", dir, name)
			}
		}
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		files[rel] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	for rel, data := range readTree(t, src) {
		copyBytes(t, data, filepath.Join(dst, rel))
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	copyBytes(t, data, dst)
}

func copyBytes(t *testing.T, data []byte, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o644)
	if filepath.Ext(dst) == ".sh" {
		mode = 0o755
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}
