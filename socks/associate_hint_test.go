package socks

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// hintServer starts a proxy whose resolver knows no names and whose UDP goes out on loopback.
func hintServer(t *testing.T) string {
	t.Helper()
	s, err := New(Config{
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF },
		Resolve: func(_ context.Context, name string) (netip.Addr, error) {
			return netip.Addr{}, fmt.Errorf("%w: %s", ErrUnknownName, name)
		},
		ListenUDP: func() (net.PacketConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// TestAssociateNameHint: UDP ASSOCIATE's address is only a hint (RFC 1928), so a name the resolver
// does not know, like PySocks' default "0", is accepted; CONNECT to the same name still gets 0x04.
func TestAssociateNameHint(t *testing.T) {
	proxy := hintServer(t)
	echoAddr := udpEcho(t)

	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 3, 1, '0', 0, 0})
	var r [2 + 10]byte
	if _, err := io.ReadFull(c, r[:]); err != nil || r[3] != 0 {
		t.Fatalf("associate with name hint: reply %v %v, want success", r, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[6:10])), binary.BigEndian.Uint16(r[10:12]))
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.WriteToUDPAddrPort(udpPacket(0, echoAddr, "", "hi"), relay)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := client.Read(buf)
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	if _, payload, err := ParseUDPHeader(buf[:n]); err != nil || string(payload) != "hi" {
		t.Fatalf("reply %x: %q %v", buf[:n], payload, err)
	}

	// CONNECT to an unknown name is still host unreachable.
	cc, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	cc.Write([]byte{5, 1, 0, 5, 1, 0, 3, 1, '0', 0, 80})
	if _, err := io.ReadFull(cc, r[:4]); err != nil || r[3] != 4 {
		t.Fatalf("connect to unknown name: reply %v %v, want 4", r[:4], err)
	}
}

// TestAssociatePySocks runs PySocks, the most used Python SOCKS client, with its defaults (rdns, so
// the ASSOCIATE names "0"), sending a datagram through the relay to an echo server and back.
func TestAssociatePySocks(t *testing.T) {
	dir := t.TempDir() // not the repository, whose socks/ directory Python would import
	python := pythonWithPySocks(dir)
	if python == "" {
		if os.Getenv("CI") == "true" { // .ci/run installs python3-socks
			t.Fatal("no python3 with PySocks (Debian python3-socks)")
		}
		t.Skip("no python3 with PySocks (Debian python3-socks) installed")
	}
	proxy := hintServer(t)
	echoAddr := udpEcho(t)
	host, port, _ := net.SplitHostPort(proxy)
	script := `
import socket, socks, sys
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, sys.argv[1], int(sys.argv[2]))
s.settimeout(5)
s.sendto(b"pysocks", (sys.argv[3], int(sys.argv[4])))
data, _ = s.recvfrom(2048)
sys.stdout.write(data.decode())
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, host, port,
		echoAddr.Addr().String(), fmt.Sprint(echoAddr.Port()))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "pysocks" {
		t.Fatalf("PySocks: %v\n%s", err, out)
	}
}

// pythonWithPySocks returns the first Python 3 that imports PySocks: the one on PATH, else the
// system's (Debian's python3-socks is for /usr/bin/python3, which a pyenv or venv on PATH hides).
func pythonWithPySocks(dir string) string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		check := exec.Command(path, "-c", "import socks; socks.socksocket")
		check.Dir = dir
		if check.Run() == nil {
			return path
		}
	}
	return ""
}
