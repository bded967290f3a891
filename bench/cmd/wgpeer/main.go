// Command wgpeer is the comparison peer for `make bench`: one wireguard-go device with a gVisor
// netstack (golang.zx2c4.com/wireguard/tun/netstack) on a loopback UDP port, the way userspace
// WireGuard tools such as wireproxy serve users without root. Two wgpeer processes form a tunnel.
//
// One side serves the benchmark's load server (package load) on a TCP port of its netstack and a
// UDP echo on the same port number (--serve), or forwards that port to a load server process of its
// own on loopback (--forward, as wireproxy's server tunnels reach a local service); the other side serves a SOCKS5 proxy on 127.0.0.1 whose
// CONNECTs are dialed into its netstack (--socks); go-socks5 also serves UDP ASSOCIATE, dialing UDP
// into the netstack. When both listeners are up it prints "ready" on stdout; it runs until SIGINT or
// SIGTERM. With --tun it uses a kernel TUN device instead of a netstack (the peer-tun row).
//
// The private key comes from the environment (WGPEER_PRIVATE_KEY, hex), not the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	socks5 "github.com/things-go/go-socks5"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warren-net/warren/bench/internal/load"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wgpeer:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "", "this device's tunnel `IP`")
	peerAddr := flag.String("peer-addr", "", "the peer's tunnel `IP` (its allowed IP)")
	peerKey := flag.String("peer-key", "", "the peer's public key (`hex`)")
	listenPort := flag.Int("listen-port", 0, "UDP `port` of the WireGuard socket")
	endpoint := flag.String("endpoint", "", "the peer's UDP `address` (127.0.0.1:PORT)")
	mtu := flag.Int("mtu", 1420, "tunnel MTU (wireguard-go's default is 1420)")
	serve := flag.Int("serve", 0, "serve the load server on this TCP `port` of the netstack")
	forward := flag.String("forward", "", "with --serve: forward the port's TCP connections and UDP datagrams to this loopback\n"+
		"`address` (a load server of its own) instead of serving the load server in-process")
	socksAddr := flag.String("socks", "", "serve SOCKS5 on this loopback `address`, dialing into the netstack")
	tunName := flag.String("tun", "", "use a kernel TUN device of this `name` (wireguard-go's own, with its offloads) instead of a\n"+
		"netstack; the caller gives it its address; --serve and --socks are not available")
	verbose := flag.Bool("v", false, "log wireguard-go's verbose messages to stderr")
	flag.Parse()

	privKey := os.Getenv("WGPEER_PRIVATE_KEY")
	if privKey == "" || *peerKey == "" || *addr == "" || *peerAddr == "" || *listenPort == 0 || *endpoint == "" {
		return errors.New("need WGPEER_PRIVATE_KEY, --addr, --peer-addr, --peer-key, --listen-port and --endpoint")
	}
	local, err := netip.ParseAddr(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	ep, err := netip.ParseAddrPort(*endpoint)
	if err != nil || (!ep.Addr().IsLoopback() && *tunName == "") {
		return fmt.Errorf("--endpoint %q: want a loopback IP:PORT (any address with --tun, in a namespace of its own)", *endpoint)
	}

	var tdev tun.Device
	var tnet *netstack.Net
	if *tunName != "" {
		if *serve != 0 || *socksAddr != "" {
			return errors.New("--tun: no --serve or --socks (the kernel serves the device's address)")
		}
		if tdev, err = tun.CreateTUN(*tunName, *mtu); err != nil {
			return fmt.Errorf("create TUN %s: %w", *tunName, err)
		}
	} else if tdev, tnet, err = netstack.CreateNetTUN([]netip.Addr{local}, nil, *mtu); err != nil {
		return fmt.Errorf("create netstack TUN: %w", err)
	}
	level := device.LogLevelError
	if *verbose {
		level = device.LogLevelVerbose
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(level, "wg: "))
	defer dev.Close() // closes the TUN, the netstack and the UDP socket too
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		privKey, *listenPort, *peerKey, ep, *peerAddr)
	if err := dev.IpcSet(cfg); err != nil {
		return fmt.Errorf("configure device: %w", err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("device up: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	if *serve != 0 {
		ln, err := tnet.ListenTCP(&net.TCPAddr{IP: local.AsSlice(), Port: *serve})
		if err != nil {
			return fmt.Errorf("listen on netstack port %d: %w", *serve, err)
		}
		defer ln.Close()
		uc, err := tnet.ListenUDP(&net.UDPAddr{IP: local.AsSlice(), Port: *serve})
		if err != nil {
			return fmt.Errorf("listen on netstack udp port %d: %w", *serve, err)
		}
		defer uc.Close()
		if *forward != "" {
			if ap, err := netip.ParseAddrPort(*forward); err != nil || !ap.Addr().IsLoopback() {
				return fmt.Errorf("--forward %q: a loopback IP:PORT only", *forward)
			}
			go func() { errc <- forwardTCP(ln, *forward) }()
			go func() { errc <- forwardUDP(uc, *forward) }()
		} else {
			go func() { errc <- load.Serve(ln) }()
			go func() { errc <- load.ServeUDP(uc) }()
		}
	}
	if *socksAddr != "" {
		ln, err := net.Listen("tcp", *socksAddr)
		if err != nil {
			return fmt.Errorf("socks listen: %w", err)
		}
		if !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
			ln.Close()
			return fmt.Errorf("--socks %q: loopback addresses only", *socksAddr)
		}
		defer ln.Close()
		srv := socks5.NewServer(
			socks5.WithDial(tnet.DialContext),
			socks5.WithLogger(socks5.NewLogger(log.New(os.Stderr, "socks: ", log.LstdFlags))),
		)
		go func() { errc <- srv.Serve(ln) }()
	}
	fmt.Println("ready")
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("listener stopped: %w", err)
	}
}
