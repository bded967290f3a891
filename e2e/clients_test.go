package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-net/warren/internal/testkit"
)

// needTool skips the test, saying why, when a real client is not installed (CI installs them).
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed, but CI must run this test (.ci/run installs it)", n)
			}
			t.Skipf("skipping: %s is not installed (apt-get install curl openssh-server netcat-openbsd)", n)
		}
	}
}

// TestCurl: curl through the node with --socks5 (local resolution of an IP), --socks5-hostname
// (the proxy resolves b.warren) and -x http:// (the HTTP proxy on the same port).
func TestCurl(t *testing.T) {
	needTool(t, "curl")
	port, _ := blobServer(t, 1024)
	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", port)
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	proxy := a.SOCKSAddr().String()
	bIP := b.Status().Self.IPs[0]
	for _, args := range [][]string{
		{"--socks5", proxy, fmt.Sprintf("http://%s:%d/hello", bIP, port)},
		{"--socks5-hostname", proxy, fmt.Sprintf("http://b.warren:%d/hello", port)},
		{"-x", "http://" + proxy, fmt.Sprintf("http://b.warren:%d/hello", port)},
		{"-p", "-x", "http://" + proxy, fmt.Sprintf("http://b.warren:%d/hello", port)}, // CONNECT tunnel
	} {
		out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
		if err != nil || string(out) != "hello from b\n" {
			t.Errorf("curl %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// TestSSH: ssh to a node's exposed sshd through the SOCKS port with ProxyCommand nc -X 5.
func TestSSH(t *testing.T) {
	needTool(t, "ssh", "ssh-keygen", "nc")
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			needTool(t, "sshd")
		}
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	port := freePort(t)
	conf := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPasswordAuthentication no\n"+
		"KbdInteractiveAuthentication no\nUsePAM no\nPidFile %s\nStrictModes no\nPermitRootLogin yes\n",
		port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600)
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory, when running as root
	cmd := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stderr = testkit.Writer(t)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))

	c := startCoord(t, t.TempDir())
	a := startNode(t, c, "a")
	b := startNode(t, c, "b", uint16(port))
	a.network(t, "create", "lan", "")
	b.network(t, "join", "lan", "")
	a.waitPath(t, "b", "direct")
	out, err := exec.Command("ssh", "-F", "/dev/null", "-i", filepath.Join(dir, "client"), "-p", fmt.Sprint(port),
		"-o", "ProxyCommand=nc -X 5 -x "+a.SOCKSAddr().String()+" %h %p",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		me.Username+"@b.warren", "echo hello over warren").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello over warren") {
		t.Fatalf("ssh through warren: %v\n%s", err, out)
	}
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	var err error
	testkit.Eventually(t, 60*time.Second, func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
			c.Close()
		}
		return err == nil
	}, "%s never listened: %v", addr, later(func() any { return err }))
}
