package bicopy

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// The poller holds parked sockets: an epoll set of its own, level-triggered and one-shot, whose
// descriptor is itself read through Go's netpoller, so the one goroutine that waits on it parks
// like any socket reader (no thread of its own). That goroutine runs only while a socket is
// parked: it ends when the set is empty and starts again with the next park.
var thePoller poller

type poller struct {
	once sync.Once
	epfd int      // the epoll set
	f    *os.File // the same descriptor, for the netpoller (f.Fd would make it blocking)
	rc   syscall.RawConn
	err  error // creating the set failed: nothing parks

	mu      sync.Mutex
	parked  map[uint64]*socketSource
	nextKey uint64
	running bool // the goroutine is waiting on f
}

func (p *poller) init() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		p.err = err
		return
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		p.err = err
		return
	}
	p.epfd = fd
	p.f = os.NewFile(uintptr(fd), "bicopy-epoll")
	if p.rc, p.err = p.f.SyscallConn(); p.err != nil {
		p.f.Close()
	}
	p.parked = make(map[uint64]*socketSource)
}

// epollCtl is syscall.EpollCtl (tests make it fail).
var epollCtl = syscall.EpollCtl

// canPark reports whether sockets can be parked here.
func canPark() bool {
	thePoller.once.Do(thePoller.init)
	return thePoller.err == nil
}

// park puts s in the poller's set, to be restarted (a new goroutine running its direction) once it
// is readable, hung up or in error. It reports false if s cannot park (its direction is being
// closed, the socket is closed, or the set could not be made): the caller keeps reading.
func (s *socketSource) park() bool {
	p := &thePoller
	if !canPark() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.cancelled {
		return false
	}
	op := syscall.EPOLL_CTL_MOD // re-arms the one-shot registration
	if !s.registered {
		op = syscall.EPOLL_CTL_ADD
		p.nextKey++
		s.key = p.nextKey
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(s.key), Pad: int32(s.key >> 32)}
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { err = epollCtl(p.epfd, op, int(fd), &ev) }); cerr != nil {
		return false // closed: the next read says so
	}
	if err != nil {
		// The set refuses it (ENOSPC: fs.epoll.max_user_watches reached; ENOMEM): this direction
		// waits on its goroutine from now on, without a deadline to wake it for nothing.
		s.noPark = true
		s.conn.SetReadDeadline(time.Time{})
		return false
	}
	s.registered = true
	p.parked[s.key] = s
	if !p.running {
		p.running = true
		p.f.SetReadDeadline(time.Time{})
		go p.run()
	}
	return true
}

// cancel ends s's parking for good: s leaves the set, and no later park succeeds. It reports whether
// s was parked: then its direction has no goroutine, and the caller must start one.
func (s *socketSource) cancel() bool {
	p := &thePoller
	if !canPark() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.cancelled = true
	p.deregister(s)
	_, parked := p.parked[s.key]
	if parked {
		delete(p.parked, s.key)
		if len(p.parked) == 0 && p.running {
			p.f.SetReadDeadline(time.Now()) // wake the goroutine: nothing is left to wait for
		}
	}
	return parked
}

// deregister takes s out of the epoll set while its descriptor is still its own (a closed socket
// has left the set by itself, and its number may already be another socket's). p.mu is held.
func (p *poller) deregister(s *socketSource) {
	if !s.registered {
		return
	}
	s.registered = false
	s.rc.Control(func(fd uintptr) { syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
}

// run restarts the directions of sockets that became ready, until no socket is parked.
func (p *poller) run() {
	var (
		events [64]syscall.EpollEvent
		ready  []*socketSource
	)
	wait := func(fd uintptr) bool {
		n, err := syscall.EpollWait(int(fd), events[:], 0)
		if err != nil || n <= 0 {
			return false // nothing (EINTR is nothing too): wait for the set to be readable
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if s, ok := p.parked[key]; ok {
				delete(p.parked, key)
				ready = append(ready, s)
			}
		}
		p.mu.Unlock()
		return true
	}
	for {
		err := p.rc.Read(wait) // nil: events came; an error: the wake-up of cancel
		for i, s := range ready {
			go s.d.run()
			ready[i] = nil
		}
		ready = ready[:0]
		p.mu.Lock()
		if len(p.parked) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		if err != nil {
			p.f.SetReadDeadline(time.Time{})
		}
		p.mu.Unlock()
	}
}
