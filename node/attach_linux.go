package node

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// checkPeer lets only the node's own user and root attach a device (SO_PEERCRED): the socket's mode
// says the same, this holds even if someone loosened it.
func checkPeer(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("attach: peer credentials: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("attach: uid %d may not attach devices to this node (only uid %d and root)", cred.Uid, os.Getuid())
	}
	return nil
}

// receiveTUN reads the one byte carrying the device's descriptor and checks that it is a TUN device.
func receiveTUN(conn *net.UnixConn) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("attach: reading the descriptor: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("attach: want exactly one descriptor")
	}
	fd := fds[0]
	unix.CloseOnExec(fd)
	ifr, err := unix.NewIfreq("")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr)
	}
	if err != nil || ifr.Uint16()&unix.IFF_TUN == 0 || ifr.Uint16()&unix.IFF_NO_PI == 0 {
		unix.Close(fd)
		return nil, errors.New("attach: the descriptor is not a TUN device (IFF_TUN, IFF_NO_PI)")
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}
