package bicopy

import (
	"io"
	"net"
	"sync"
)

// Group runs relays for an owner whose Close must end every relay it started and wait for them:
// Close closes each relay still running with Relay.Close, which a direction parked in the package's
// epoll set needs, since it notices nothing else. The zero Group is ready to use.
type Group struct {
	mu     sync.Mutex
	relays map[*Relay]struct{} // running: started, done not yet begun
	closed bool
	wg     sync.WaitGroup // relays started, until their done has returned; Add only under mu while open
}

// Start relays between a and b as the package's Start does, counted in g; done (if not nil) runs
// once the relay has ended, and Close waits for it. After Close it starts nothing: it closes a and
// b, runs done before it returns, as for a relay that ended at once, and reports false. So the
// caller's cleanup lives in done alone, whichever way it goes.
func (g *Group) Start(a net.Conn, aR io.Reader, b net.Conn, done func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		a.Close()
		b.Close()
		if done != nil {
			done()
		}
		return false
	}
	if g.relays == nil {
		g.relays = make(map[*Relay]struct{})
	}
	g.wg.Add(1)
	var r *Relay
	r = Start(a, aR, b, func() {
		g.mu.Lock() // Start is past its assignment to r by the time this holds mu
		delete(g.relays, r)
		g.mu.Unlock()
		if done != nil {
			done()
		}
		g.wg.Done()
	})
	g.relays[r] = struct{}{}
	g.mu.Unlock()
	return true
}

// Close closes every relay of g still running and waits until all have ended and their done
// callbacks have returned; from then on Start starts nothing. It is idempotent (a later Close waits
// too) and must not be called from a done callback of g's, which it would wait for.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	relays := make([]*Relay, 0, len(g.relays))
	for r := range g.relays {
		relays = append(relays, r)
	}
	g.mu.Unlock()
	for _, r := range relays {
		r.Close()
	}
	g.wg.Wait()
}
