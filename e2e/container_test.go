package e2e

// Tests of the container image (Dockerfile) and the compose example (deploy/compose.yaml). No
// container engine can be assumed in CI, so they check what can be checked for real: the image's
// final stage is built with podman from binaries built here, and the compose file's command lines run
// as uid 65532 in network namespaces the test creates, standing in for the containers.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// repoFile is the path of a file in the repository (tests run in e2e/).
func repoFile(name string) string { return filepath.Join("..", name) }

// composeService is what the test takes from a service of deploy/compose.yaml.
type composeService struct {
	Entrypoint, Command []string
	NetworkMode         string
}

// readCompose reads the services of a compose file written the way deploy/compose.yaml is: services
// at two spaces' indent, their keys at four, entrypoint and command as one-line JSON arrays.
func readCompose(t *testing.T, path string) map[string]*composeService {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	services := map[string]*composeService{}
	var cur *composeService
	inServices := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case !strings.HasPrefix(line, " "):
			inServices, cur = line == "services:", nil
		case inServices && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   "):
			cur = &composeService{}
			services[strings.TrimSuffix(strings.TrimSpace(line), ":")] = cur
		case cur != nil:
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			v = strings.TrimSpace(v)
			var dst *[]string
			switch k {
			case "entrypoint":
				dst = &cur.Entrypoint
			case "command":
				dst = &cur.Command
			case "network_mode":
				cur.NetworkMode = strings.Trim(v, `"`)
			}
			if dst != nil {
				if err := json.Unmarshal([]byte(v), dst); err != nil {
					t.Fatalf("%s: %s is not a one-line JSON array: %v\n%s", path, k, err, line)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return services
}

// imageConfig is what the Dockerfile's final stage says about running the image.
type imageConfig struct {
	Entrypoint []string
	Env        []string // KEY=VALUE
	User       string
	Volume     string
}

// readDockerfile reads the final stage's ENTRYPOINT, ENV, USER and VOLUME, and returns the final
// stage's text (from its FROM line on).
func readDockerfile(t *testing.T) (imageConfig, string) {
	t.Helper()
	b, err := os.ReadFile(repoFile("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.LastIndex(text, "\nFROM ")
	if i < 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	final := text[i+1:]
	var c imageConfig
	for _, line := range strings.Split(final, "\n") {
		word, rest, _ := strings.Cut(line, " ")
		switch word {
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &c.Entrypoint); err != nil {
				t.Fatalf("Dockerfile ENTRYPOINT: %v", err)
			}
		case "ENV":
			c.Env = append(c.Env, strings.Fields(rest)...)
		case "USER":
			c.User = rest
		case "VOLUME":
			c.Volume = rest
		}
	}
	return c, final
}

// TestContainerScenario runs deploy/compose.yaml's coord and two nodes with their command lines from
// the file (entrypoints from it and the Dockerfile, the volume path mapped to a directory per
// service) as uid 65532 without capabilities, each in a network namespace of its own on one bridge,
// where the name "coord" resolves as compose's DNS would make it. web-node shares its namespace with a
// web server on 127.0.0.1:8080 (busybox httpd in the file), app-node with the app, which fetches
// http://web.warren:8080/ through app-node's proxy as the file's app does (http_proxy). The setup
// commands in the file's header (`exec SERVICE warren ...`) run as written, in the service's namespace.
// No container runtime runs here: what this does not test is the engine's part (images, volumes,
// DNS, network_mode), which TestImageFinalStage covers in part.
func TestContainerScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and runs the services as uid 65532 (CI runs as root)")
	}
	needTool(t, "ip", "setpriv")
	services := readCompose(t, repoFile("deploy/compose.yaml"))
	image, _ := readDockerfile(t)
	for _, name := range []string{"coord", "web", "web-node", "app", "app-node"} {
		if services[name] == nil {
			t.Fatalf("compose.yaml has no service %q", name)
		}
	}
	if services["web-node"].NetworkMode != "service:web" || services["app-node"].NetworkMode != "service:app" {
		t.Fatalf("the nodes do not share their program's namespace: %+v %+v", services["web-node"], services["app-node"])
	}

	// The binaries where uid 65532 may run them, and a directory per volume it owns (mode 0700, as
	// the image's /var/lib/warren).
	top, err := os.MkdirTemp("", "warren-compose-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o711)
	binDir := filepath.Join(top, "bin")
	os.Mkdir(binDir, 0o755)
	for _, b := range []string{"warren", "warren-coord"} {
		copyFile(t, bin(t, b), filepath.Join(binDir, b))
		os.Chmod(filepath.Join(binDir, b), 0o755)
	}
	volume := func(service string) string {
		d := filepath.Join(top, service)
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		os.Chown(d, 65532, 65532)
		return d
	}
	// argv maps the image's paths to this host: /usr/local/bin/X to the built X, the volume to dir.
	argv := func(args []string, dir string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			a = strings.Replace(a, "/usr/local/bin", binDir, 1)
			out[i] = strings.Replace(a, image.Volume, dir, 1)
		}
		return out
	}
	env := func(dir string) []string {
		var e []string
		for _, kv := range image.Env {
			e = append(e, strings.Replace(kv, image.Volume, dir, 1))
		}
		return append(e, "PATH="+binDir+":/usr/bin:/bin")
	}
	user := strings.Split(image.User, ":")
	if len(user) != 2 || user[0] != "65532" {
		t.Fatalf("Dockerfile USER %q, want 65532:65532", image.User)
	}
	asUser := []string{"setpriv", "--reuid=" + user[0], "--regid=" + user[1], "--clear-groups", "--no-new-privs"}

	nets := composeNet(t, "coord", "web", "app")
	// start runs a service's command line in its namespace (network_mode: service:X means X's).
	start := func(service string) *proc {
		s := services[service]
		ns := service
		if mode, ok := strings.CutPrefix(s.NetworkMode, "service:"); ok {
			ns = mode
		}
		entry := s.Entrypoint
		if entry == nil {
			entry = image.Entrypoint
		}
		dir := volume(service)
		args := append(append([]string{"netns", "exec", nets[ns]}, asUser...), argv(append(entry, s.Command...), dir)...)
		cmd := exec.Command("ip", args...)
		cmd.Env = env(dir)
		t.Logf("%s: %s", service, strings.Join(cmd.Args, " "))
		return startCmd(t, service, cmd)
	}

	coord := start("coord")
	coord.line(t, "warren-coord listening on")
	// The web server web-node exposes, on web's loopback; busybox httpd in the file.
	var ln net.Listener
	inNS(t, nets["web"], func() { ln, err = net.Listen("tcp", "127.0.0.1:8080") })
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello from web") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	nodes := map[string]*proc{"web-node": start("web-node"), "app-node": start("app-node")}
	for name, p := range nodes {
		waitLoggedIn(t, filepath.Join(top, name))
		// The node runs as the image's user with no capabilities.
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^Uid:\s+65532\s+65532\s+65532\s+65532$`).Match(status) ||
			!regexp.MustCompile(`(?m)^CapEff:\s+0+$`).Match(status) {
			t.Errorf("%s does not run as 65532 without capabilities:\n%s", name, status)
		}
	}

	// The setup commands of the file's header, as written.
	for _, c := range composeExecs(t) {
		dir := filepath.Join(top, c.service)
		args := append(append([]string{"netns", "exec", nets[strings.TrimSuffix(c.service, "-node")]}, asUser...), argv(c.args, dir)...)
		cmd := exec.Command("ip", args...)
		cmd.Env = env(dir)
		out, err := cmd.CombinedOutput()
		t.Logf("exec %s %s: %v\n%s", c.service, strings.Join(c.args, " "), err, out)
		if err != nil {
			t.Fatalf("setup command failed: exec %s %s", c.service, strings.Join(c.args, " "))
		}
	}

	// The app: an HTTP GET through app-node's proxy, from app's namespace (http_proxy in the file).
	proxyURL, _ := url.Parse("http://127.0.0.1:1080")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), DialContext: nsDialer(nets["app"]).DialContext}}
	var body string
	testkit.Eventually(t, 60*time.Second, func() bool {
		resp, err := client.Get("http://web.warren:8080/")
		if err != nil {
			body = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK && body == "hello from web\n"
	}, "app never fetched web.warren:8080 through its proxy; last: %v", later(func() any { return body }))
}

// composeExec is a setup command from compose.yaml's header: `... exec SERVICE warren ARGS`.
type composeExec struct {
	service string
	args    []string
}

func composeExecs(t *testing.T) []composeExec {
	t.Helper()
	b, err := os.ReadFile(repoFile("deploy/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []composeExec
	for _, m := range regexp.MustCompile(`(?m)^#.* exec (\S+) (warren .*)$`).FindAllStringSubmatch(string(b), -1) {
		args := strings.Fields(m[2])
		args[0] = "/usr/local/bin/warren"
		out = append(out, composeExec{service: m[1], args: args})
	}
	if len(out) < 2 {
		t.Fatalf("compose.yaml's header has %d setup commands (exec SERVICE warren ...), want the create and the join", len(out))
	}
	return out
}

// composeNet creates a network namespace per name, on one bridge (in a namespace of its own) with
// addresses 10.98.0.1, .2, ... in order, and makes the first name resolve to its address in every
// namespace (/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts), as compose's DNS
// resolves service names. It returns the namespaces by name; they go when the test ends.
func composeNet(t *testing.T, names ...string) map[string]string {
	t.Helper()
	id := os.Getpid() % 100000
	sw := fmt.Sprintf("wcs-%d", id)
	nets := map[string]string{}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sw).Run() })
	ip("netns", "add", sw)
	ip("-n", sw, "link", "add", "br0", "type", "bridge")
	ip("-n", sw, "link", "set", "br0", "up")
	hosts := fmt.Sprintf("127.0.0.1 localhost\n10.98.0.1 %s\n", names[0])
	for i, name := range names {
		ns := fmt.Sprintf("wc%d-%s", id, name)
		nets[name] = ns
		t.Cleanup(func() {
			exec.Command("ip", "netns", "del", ns).Run()
			os.RemoveAll("/etc/netns/" + ns)
		})
		ip("netns", "add", ns)
		in, out := fmt.Sprintf("eth%d", i), fmt.Sprintf("wc%dp%d", id, i)
		ip("link", "add", in, "netns", ns, "type", "veth", "peer", "name", out, "netns", sw)
		ip("-n", sw, "link", "set", out, "master", "br0", "up")
		ip("-n", ns, "addr", "add", fmt.Sprintf("10.98.0.%d/24", i+1), "dev", in)
		ip("-n", ns, "link", "set", in, "up")
		ip("-n", ns, "link", "set", "lo", "up")
		if err := os.MkdirAll("/etc/netns/"+ns, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/etc/netns/"+ns+"/hosts", []byte(hosts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nets
}
