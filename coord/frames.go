package coord

import "github.com/warren-net/warren/control"

// frameCutter cuts rule lists, peer upserts and removals, in the order added, into frames of at most
// budget bytes (by control's upper bounds: control.PeerSize, control.ACLSize) and control.MaxPeers
// peers, and hands each to flush — more is set for all but the one close flushes. Like a
// bufio.Writer, it remembers flush's first error, does nothing after it, and close returns it. See
// control/frames.go.
type frameCutter struct {
	budget int
	flush  func(f frame, more bool) error
	err    error
	size   int
	frame
}

// frame is the contents of one peer map or delta frame.
type frame struct {
	acls   []control.ACL
	upsert []control.Peer
	remove [][]byte
}

// newFrameCutter returns a frameCutter with the server's frame budget.
func (s *Server) newFrameCutter(flush func(f frame, more bool) error) *frameCutter {
	budget := s.cfg.frameBudget
	if budget <= 0 {
		budget = control.FrameBudget
	}
	return &frameCutter{budget: budget, flush: flush}
}

// removeSize bounds a removal's size (a base64 key) in a frame.
const removeSize = 64

func (c *frameCutter) addACL(a control.ACL) {
	if c.room(control.ACLSize(&a), 0, len(c.acls) == control.MaxNetworks) {
		c.acls = append(c.acls, a)
	}
}

func (c *frameCutter) addPeer(p control.Peer) {
	if c.room(control.PeerSize(&p), 1, false) {
		c.upsert = append(c.upsert, p)
	}
}

func (c *frameCutter) addRemove(key []byte) {
	if c.room(removeSize, 1, false) {
		c.remove = append(c.remove, key)
	}
}

// room makes room for an item of size bytes (and peers peers), flushing the current frame first if
// the item would not fit in it or the frame is full, and reports whether to add it (no error yet).
func (c *frameCutter) room(size, peers int, full bool) bool {
	n := len(c.upsert) + len(c.remove)
	if (c.size+size > c.budget || n+peers > control.MaxPeers || full) && (c.size > 0 || n > 0) {
		c.cut(true)
	}
	c.size += size
	return c.err == nil
}

func (c *frameCutter) cut(more bool) {
	if c.err == nil {
		c.err = c.flush(c.frame, more)
	}
	c.size, c.frame = 0, frame{}
}

// close flushes the last frame — with always, even an empty one — and returns the first error.
func (c *frameCutter) close(always bool) error {
	if always || c.size > 0 || len(c.acls)+len(c.upsert)+len(c.remove) > 0 {
		c.cut(false)
	}
	return c.err
}
