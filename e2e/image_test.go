package e2e

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxImageSize bounds the image: two static, stripped binaries and a few small files.
const maxImageSize = 80 << 20

// TestImageFinalStage builds the Dockerfile's final stage with podman, from a root file system that
// deploy/container/rootfs.sh (what the build stage runs) builds here: the build stage itself needs
// the golang image from a registry, which the test does not pull, so only its script is tested. It
// checks the image's configuration (user, entrypoint, volume, environment), its size, and its files
// (static binaries, /tmp 1777, the state directory owned by 65532 with mode 0700); runs both
// binaries' `version` as uid 65532 chrooted into the exported file system; then runs the image with
// podman if the container runtime can run containers here, and says why not if it cannot.
func TestImageFinalStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the root file system has files owned by 65532, and podman runs rootful here (CI runs as root)")
	}
	needTool(t, "podman")
	tmp := t.TempDir()
	ctxDir := filepath.Join(tmp, "context")
	build := exec.Command("sh", "deploy/container/rootfs.sh", filepath.Join(ctxDir, "rootfs"))
	build.Dir = ".."
	build.Env = append(os.Environ(), "VERSION=image-test")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("rootfs.sh: %v\n%s", err, out)
	}
	// The final stage as written, its COPY --from=build reading the root file system from the context.
	want, final := readDockerfile(t)
	if !strings.HasPrefix(final, "FROM scratch\n") {
		t.Fatalf("the final stage does not start FROM scratch:\n%s", final)
	}
	n := strings.Count(final, "COPY --from=build ")
	final = strings.ReplaceAll(final, "COPY --from=build ", "COPY ")
	final = strings.ReplaceAll(final, " /rootfs/", " rootfs/")
	if n != 2 || strings.Contains(final, "--from") {
		t.Fatalf("the final stage copies from the build stage %d times (want 2: everything, then the state directory for 65532):\n%s", n, final)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte(final), 0o644); err != nil {
		t.Fatal(err)
	}

	// A storage of its own: nothing shared with other podman users, and no registry involved.
	podman := func(args ...string) (string, error) {
		base := []string{"--root", filepath.Join(tmp, "storage"), "--runroot", filepath.Join(tmp, "run"), "--storage-driver", "vfs"}
		out, err := exec.Command("podman", append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	const tag = "localhost/warren:image-test"
	t.Cleanup(func() {
		podman("rm", "--force", "image-test")
		podman("rmi", "--force", tag)
	})
	if out, err := podman("build", "--pull=never", "--network=none", "-t", tag, "-f", filepath.Join(ctxDir, "Containerfile"), ctxDir); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	out, err := podman("image", "inspect", tag)
	if err != nil {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	var inspect []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
			Env        []string
			Volumes    map[string]struct{}
			WorkingDir string
		}
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	img := inspect[0]
	t.Logf("image size: %d bytes (%.1f MiB)", img.Size, float64(img.Size)/(1<<20))
	if img.Config.User != "65532:65532" || img.Config.User != want.User {
		t.Errorf("user %q, want 65532:65532", img.Config.User)
	}
	if !slices.Equal(img.Config.Entrypoint, []string{"/usr/local/bin/warren", "up"}) {
		t.Errorf("entrypoint %q, want warren up", img.Config.Entrypoint)
	}
	if _, ok := img.Config.Volumes["/var/lib/warren"]; !ok || len(img.Config.Volumes) != 1 {
		t.Errorf("volumes %v, want /var/lib/warren", img.Config.Volumes)
	}
	if !slices.Contains(img.Config.Env, "WARREN_STATE=/var/lib/warren") {
		t.Errorf("env %v has no WARREN_STATE=/var/lib/warren", img.Config.Env)
	}
	if img.Size <= 0 || img.Size > maxImageSize {
		t.Errorf("image size %d bytes, want at most %d", img.Size, maxImageSize)
	}

	// The files, as a container created from the image sees them (created, not run).
	if out, err := podman("create", "--name", "image-test", tag); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	export := filepath.Join(tmp, "fs.tar")
	if out, err := podman("export", "-o", export, "image-test"); err != nil {
		t.Fatalf("podman export: %v\n%s", err, out)
	}
	files := readTar(t, export)
	for name, check := range map[string]func(*tar.Header) error{
		"tmp/": func(h *tar.Header) error {
			return wantMode(h, os.ModeDir|os.ModeSticky|0o777, 0)
		},
		"var/lib/warren/": func(h *tar.Header) error {
			return wantMode(h, os.ModeDir|0o700, 65532)
		},
		"etc/passwd": func(h *tar.Header) error {
			if !strings.Contains(string(files.data["etc/passwd"]), "warren:x:65532:65532:") {
				return fmt.Errorf("no user 65532:\n%s", files.data["etc/passwd"])
			}
			return nil
		},
		"usr/local/bin/warren":       func(h *tar.Header) error { return staticELF(files.data[h.Name]) },
		"usr/local/bin/warren-coord": func(h *tar.Header) error { return staticELF(files.data[h.Name]) },
	} {
		h := files.headers[name]
		if h == nil {
			t.Errorf("the image has no %s", name)
			continue
		}
		if err := check(h); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var names []string
	for name := range files.headers {
		names = append(names, name)
	}
	slices.Sort(names)
	t.Logf("image files: %s", strings.Join(names, " "))

	// The binaries run in the image's file system alone (no libc, no shell), as its user: chroot into
	// the exported file system, whatever the container runtime can do here.
	fs := filepath.Join(tmp, "fs")
	os.Mkdir(fs, 0o755)
	if out, err := exec.Command("tar", "-xf", export, "-C", fs).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	for _, b := range []string{"warren", "warren-coord"} {
		out, err := exec.Command("chroot", "--userspec=65532:65532", fs, "/usr/local/bin/"+b, "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), b+" image-test") {
			t.Errorf("%s version in the image's file system as 65532: %v\n%s", b, err, out)
		}
	}

	// Running it needs a container runtime that works here; where crun cannot (setrlimit refused in a
	// sandbox without CAP_SYS_RESOURCE, cgroups in hybrid mode), the test says why and stops.
	out, err = podman("run", "--rm", "--network=none", "--entrypoint", "/usr/local/bin/warren", tag, "version")
	if err != nil {
		t.Logf("not run: the container runtime cannot run containers on this machine: %v\n%s", err, out)
		return
	}
	if !strings.Contains(out, "image-test") {
		t.Errorf("warren version in the image: %s", out)
	}
}

type tarFiles struct {
	headers map[string]*tar.Header
	data    map[string][]byte // regular files up to 64 MiB
}

func readTar(t *testing.T, path string) tarFiles {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := tarFiles{headers: map[string]*tar.Header{}, data: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir && !strings.HasSuffix(name, "/") {
			name += "/"
		}
		h.Name = name
		files.headers[name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				t.Fatal(err)
			}
			files.data[name] = b
		}
	}
}

func wantMode(h *tar.Header, mode os.FileMode, uid int) error {
	if got := h.FileInfo().Mode(); got != mode || h.Uid != uid {
		return fmt.Errorf("mode %v uid %d, want %v uid %d", got, h.Uid, mode, uid)
	}
	return nil
}

// staticELF checks that b is an ELF executable without an interpreter (statically linked).
func staticELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return err
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked (has an interpreter)")
		}
	}
	return nil
}
