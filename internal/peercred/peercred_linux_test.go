package peercred

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/warren-net/warren/internal/testkit"
)

func TestParseHexAddrPort(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0000":                         "0.0.0.0:0",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"0000000000000000FFFF00000100007F:C07E": "[::ffff:127.0.0.1]:49278",
	} {
		got, err := parseHexAddrPort(in)
		if err != nil || got.String() != want {
			t.Errorf("%s: got %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "01007F:0016", "zz00007F:0016", "0100007F:10000"} {
		if _, err := parseHexAddrPort(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// Our own connections and datagrams are ours.
func TestOwnSockets(t *testing.T) {
	me := uint32(os.Getuid())
	for _, network := range []string{"tcp4", "tcp6"} {
		host := "127.0.0.1"
		if network == "tcp6" {
			host = "::1"
		}
		ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if uid, err := ConnOwner(s); err != nil || uid != me {
			t.Errorf("%s: owner %d, %v; want %d", network, uid, err, me)
		}
	}

	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if uid, err := UDPOwner(u.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil || uid != me {
		t.Errorf("udp: owner %d, %v; want %d", uid, err, me)
	}

	sock := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	uc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	us, err := uln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	if uid, err := ConnOwner(us); err != nil || uid != me {
		t.Errorf("unix: owner %d, %v; want %d", uid, err, me)
	}

	if _, err := TCPOwner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); err != ErrNotFound {
		t.Errorf("no such socket: %v", err)
	}
}

// helperEnv makes the test binary act as a client of another user (see TestMain).
const helperEnv = "PEERCRED_TEST_DIAL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		// A client run as another user: connect, say who we are, wait for the server to hang up.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			os.Exit(2)
		}
		c.Write([]byte(strconv.Itoa(os.Getuid()) + "\n"))
		c.Read(make([]byte, 1))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Another local user's connection is told apart and refused by the Listener; ours pass.
func TestListenerRefusesOtherUsers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan int64, 1)
	l := &Listener{Listener: ln, Policy: OwnerPolicy(uint32(os.Getuid())), Refused: func(uid int64, _ error) { refused <- uid }}
	defer l.Close()

	cmd := testkit.SelfAsNobody(t, helperEnv+"="+ln.Addr().String())
	out := &strings.Builder{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	if uid := <-refused; uid != 65534 {
		t.Errorf("refused uid %d, want 65534", uid)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	// Our own connection still gets through after the refusal.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	s.Close()
}
