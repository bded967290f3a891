package main

// `warren run` on Linux: the parent asks the node for its addresses (POST /v1/attach), starts itself
// again as runNSCommand in a new user + network namespace (the caller's uid and gid mapped to
// themselves, CAP_NET_ADMIN kept across the exec as an ambient capability), which creates and
// configures the TUN device and passes its descriptor back over a socket pair; the parent hands it to
// the node, lets the child exec the command without any capability, and waits for it. The API
// connection lives as long as the parent, and with it the node's end of the device.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/tun"
)

func runInNamespace(state string, command []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := runPreflight(); err != nil {
		return err
	}
	if _, err := exec.LookPath(command[0]); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	att, err := localapi.NewClient(state).Attach(ctx)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer att.Close()
	if len(att.Info.Addrs) == 0 {
		return errors.New("run: the node sent no addresses")
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "run-parent"), os.NewFile(uintptr(fds[1]), "run-child")
	defer mine.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	args := []string{runNSCommand, strconv.Itoa(att.Info.MTU)}
	for _, a := range att.Info.Addrs {
		args = append(args, a.String())
	}
	for _, a := range att.Info.DNS {
		args = append(args, a.String()) // a bare address: a DNS server
	}
	cmd := exec.Command(self, append(append(args, "--"), command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	uid, gid := os.Getuid(), os.Getgid()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN}, // the device; the resolv.conf mounts
		Pdeathsig:   syscall.SIGKILL,
	}
	// Ctrl-C and Ctrl-\ reach the command from the terminal; SIGTERM and SIGHUP are passed on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return fmt.Errorf("run: starting the namespace: %w (%s)", err, usernsHint)
	}
	theirs.Close()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					cmd.Process.Signal(s)
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	// The child has printed why, if it sends no device; its status is ours then.
	if dev, err := recvFile(mine); err == nil {
		_, err = att.Send(dev)
		dev.Close()
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("run: the node refused the device: %w", err)
		}
		mine.Write([]byte{1}) // go
	}
	mine.Close()
	werr := cmd.Wait()
	return exitStatus(command[0], cmd.ProcessState, werr)
}

const usernsHint = "unprivileged user namespaces must be allowed: sysctl kernel.unprivileged_userns_clone=1 (Debian, older kernels), user.max_user_namespaces > 0, kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 23.10+); in a container, a seccomp profile that allows clone(CLONE_NEWUSER)"

// runPreflight says plainly what is missing for `warren run`, all at once.
func runPreflight() error {
	var missing []string
	root := os.Getuid() == 0
	sysctl := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if !root && sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
		missing = append(missing, "unprivileged user namespaces are off: sudo sysctl -w kernel.unprivileged_userns_clone=1")
	}
	if sysctl("/proc/sys/user/max_user_namespaces") == "0" {
		missing = append(missing, "user namespaces are disabled: sudo sysctl -w user.max_user_namespaces=10000")
	}
	if !root && sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
		missing = append(missing, "AppArmor restricts unprivileged user namespaces: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for warren with 'userns,')")
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
		missing = append(missing, "no TUN support: sudo modprobe tun")
	default:
		missing = append(missing, fmt.Sprintf("cannot open /dev/net/tun (%v): sudo chmod 0666 /dev/net/tun, the usual mode (opening it grants nothing by itself: creating a device needs CAP_NET_ADMIN, which warren run has only inside its own namespace)", err))
	}
	if len(missing) > 0 {
		return fmt.Errorf("run: this system does not allow it yet:\n  - %s", strings.Join(missing, "\n  - "))
	}
	return nil
}

// cmdRunNS runs inside the new namespaces: MTU ADDR... -- COMMAND [ARGS...], with the socket pair
// to the parent as fd 3.
func cmdRunNS(args []string) error {
	i := 0
	for i < len(args) && args[i] != "--" {
		i++
	}
	if i < 2 || i+1 >= len(args) {
		return errors.New("run: bad internal invocation")
	}
	mtu, err := strconv.Atoi(args[0])
	if err != nil {
		return fmt.Errorf("run: bad MTU: %w", err)
	}
	var addrs []netip.Prefix
	var dns []netip.Addr
	for _, a := range args[1:i] {
		if ip, err := netip.ParseAddr(a); err == nil {
			dns = append(dns, ip)
			continue
		}
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		addrs = append(addrs, p)
	}
	command := args[i+1:]
	parent := os.NewFile(3, "run-parent")
	unix.CloseOnExec(3)

	dev, err := tun.Create(tun.Config{Name: tun.DefaultName, Addrs: addrs, MTU: mtu})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if err := mountResolvConf(dns); err != nil {
		fmt.Fprintf(os.Stderr, "warren run: NAME.warren will not resolve inside: %v\n", err)
	}
	// Kernel ping without privileges uses ICMP sockets, which the namespace allows our group.
	gid := strconv.Itoa(os.Getgid())
	os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(gid+" "+gid), 0)
	path, err := exec.LookPath(command[0])
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if err := sendFile(parent, dev); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	dev.Close() // the node holds the device now
	var b [1]byte
	if n, _ := parent.Read(b[:]); n != 1 {
		return exitCode(1) // the parent says why
	}
	parent.Close()
	// The command gets no capability: with a non-root uid the exec drops all but ambient ones.
	unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if unix.Capget(&hdr, &caps[0]) == nil {
		caps[0].Inheritable, caps[1].Inheritable = 0, 0
		unix.Capset(&hdr, &caps[0])
	}
	return fmt.Errorf("run: %w", syscall.Exec(path, command, os.Environ()))
}

// mountResolvConf points the namespace's resolver at the node's DNS servers: it makes the mount
// namespace's mounts private, hides /run/systemd/resolve behind a tmpfs holding our resolv.conf
// (so neither a stub-resolv.conf symlink nor nss-resolve's socket leads to the host's resolver) and
// nscd's socket directory behind an empty one, and
// bind-mounts a generated resolv.conf over /etc/resolv.conf (over its target, if it is a symlink).
func mountResolvConf(dns []netip.Addr) error {
	if len(dns) == 0 {
		return errors.New("the node sent no DNS address")
	}
	var conf strings.Builder
	conf.WriteString("# warren run: the node answers NAME.warren and overlay reverse lookups\n")
	for _, a := range dns {
		fmt.Fprintf(&conf, "nameserver %s\n", a)
	}
	conf.WriteString("search warren\n")
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("private mounts: %w", err)
	}
	if fi, err := os.Stat(resolvedDir); err == nil && fi.IsDir() {
		if err := unix.Mount("tmpfs", resolvedDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
			return fmt.Errorf("tmpfs over %s: %w", resolvedDir, err)
		}
		for _, name := range []string{"stub-resolv.conf", "resolv.conf"} {
			if err := os.WriteFile(resolvedDir+"/"+name, []byte(conf.String()), 0o644); err != nil {
				return err
			}
		}
	}
	// A host's nscd would answer from the host's resolver: hide its socket too.
	for _, dir := range []string{"/run/nscd", "/var/run/nscd"} {
		if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
			unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=4k")
		}
	}
	f, err := os.CreateTemp("", "warren-run-resolv-*.conf")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // the mount keeps the file
	_, err = f.WriteString(conf.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(f.Name(), "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount over /etc/resolv.conf: %w", err)
	}
	return nil
}

// resolvedDir is systemd-resolved's runtime directory.
const resolvedDir = "/run/systemd/resolve"

// sendFile sends f's descriptor over the socket pair c.
func sendFile(c *os.File, f *os.File) error {
	return unix.Sendmsg(int(c.Fd()), []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0)
}

// recvFile receives one descriptor over the socket pair c; an error if the other side closed first.
func recvFile(c *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(c.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("no descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.New("no descriptor")
	}
	return os.NewFile(uintptr(fds[0]), "/dev/net/tun"), nil
}
