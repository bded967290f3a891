package coord

import (
	"context"
	"errors"
	"fmt"
	"github.com/warren-net/warren/internal/tcptun"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/relay"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

// session is one logged-in node's control connection.
type session struct {
	key      nodeKey
	name     atomic.Pointer[string] // the node's name; String and the log read it, a rename replaces it
	conn     *quic.Conn
	stream   *quic.Stream
	log      hclog.Logger
	observed netip.AddrPort // where the control connection comes from; under Server.mu (it follows NAT rebinding)
	since    time.Time      // when it logged in

	// mu guards the following. The outbox coalesces peer changes per peer key so a slow node gets the
	// latest state of each peer, never an unbounded backlog.
	mu        sync.Mutex
	local     []netip.AddrPort // the node's own interface addresses, as it reported them
	endpoints []netip.AddrPort
	mapping   control.Mapping           // the node's NAT mapping, as it reported it
	ports     *control.Ports            // its NAT's port allocation pattern, as it reported it
	peers     map[nodeKey]bool          // who may send to this node through the relay (shares a network); see watch
	gone      bool                      // dropped (dropSession): peers no longer enters Server.watchers
	member    *relay.Member             // the node's relay binding; set at login, before the session is shared
	pending   map[nodeKey]*control.Peer // nil value = remove
	networks  *control.NetworkList      // the node's networks changed without its asking; nil = no news
	nets      []string                  // the networks the node was last told it is in (cluster.go)
	joins     *control.JoinRequests     // the join requests awaiting the node's approval changed; nil = no news
	acls      map[string]control.ACL    // rule-list changes to send, the latest per network (acls.go)
	replies   []*control.Msg

	// The writer (flush) runs only while there is something to send: a goroutine per session that
	// waited for changes was ~8 KB of stack for each of thousands of idle nodes. writing: a flush
	// is running; writable: one may start (from the end of the login until the session ends or a
	// write fails). Under mu; flushes counts the running one for the session's end.
	writing, writable bool
	flushes           sync.WaitGroup

	// pendingSince is when the oldest change in pending was queued (warren_coord_fanout_seconds).
	pendingSince time.Time

	// replySlots bounds the replies not yet written: the read loop takes a slot before it handles a
	// request, the writer gives it back once the reply is out. A node that sends requests but
	// does not read its replies stops being read, and is dropped after writeTimeout.
	replySlots chan struct{}
	// endpointRate bounds how often the node's endpoint updates go to its peers; refreshDue is the
	// refresh waiting for it (under mu).
	endpointRate *rate.Limiter
	refreshDue   *time.Timer
}

const (
	maxQueuedReplies = 32
	// writeTimeout bounds one write to a node's control stream: a node that does not read for
	// this long (its flow-control window stays shut) is disconnected.
	writeTimeout = 30 * time.Second
)

// Error codes for closing control connections.
const (
	closeOK       quic.ApplicationErrorCode = 0
	closeProtocol quic.ApplicationErrorCode = 1
	closeRefused  quic.ApplicationErrorCode = 2
	closeReplaced quic.ApplicationErrorCode = 3
)

func (s *Server) serveConn(conn *quic.Conn) {
	pub, err := identity.PeerKey(rawCerts(conn))
	if err != nil {
		conn.CloseWithError(closeProtocol, "bad identity")
		return
	}
	var key nodeKey
	copy(key[:], pub)
	log := s.log.With("node", key.String(), "remote", conn.RemoteAddr().String())

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LoginTimeout)
	stream, err := conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		conn.CloseWithError(closeProtocol, "no control stream")
		return
	}
	stream.SetReadDeadline(time.Now().Add(s.cfg.LoginTimeout))
	msg, err := control.ReadMsgMax(stream, control.MaxLoginFrame)
	if err != nil || msg.Type != control.TypeLogin {
		log.Warn("bad login", "error", err)
		conn.CloseWithError(closeProtocol, "expected login")
		return
	}
	stream.SetReadDeadline(time.Time{})
	log = s.log.With("node", identity.Label(msg.Login.Name, key[:]), "remote", conn.RemoteAddr().String())
	if cerr := s.checkLogin(key, conn.RemoteAddr()); cerr != nil {
		log.Info("login refused", "error", cerr)
		s.metrics.refused(cerr)
		refuseLogin(conn, stream, cerr)
		return
	}
	sess, err := s.login(key, conn, stream, msg.Login, log)
	if err != nil {
		log.Info("login refused", "error", err)
		s.metrics.refused(err)
		var cerr *control.Error
		if errors.As(err, &cerr) {
			control.WriteMsg(stream, &control.Msg{Type: control.TypeReply, Reply: &control.Reply{Code: cerr.Code, Error: control.CleanText(cerr.Message)}})
		}
		stream.Close()
		time.Sleep(50 * time.Millisecond) // let the reply leave before the close frame
		conn.CloseWithError(closeRefused, "login refused")
		s.loginFailed(key)
		return
	}
	s.pending.Done(conn)
	s.metrics.logins.Inc()
	sess.mu.Lock()
	sess.writable = true
	sess.mu.Unlock()
	s.wake(sess) // what was queued since the peer map
	s.readLoop(sess)
	conn.CloseWithError(closeOK, "")
	sess.mu.Lock()
	sess.writable = false
	sess.mu.Unlock()
	sess.flushes.Wait() // a write in progress fails now that the connection is closed
	s.logout(sess)
}

// String names the node in logs, "name(KEYPREFIX)" (identity.Label), with its current name: the
// session's logger carries the session itself, so a rename shows in its next line.
func (sess *session) String() string { return identity.Label(sess.nodeName(), sess.key[:]) }

// nodeName is the node's current name.
func (sess *session) nodeName() string {
	if p := sess.name.Load(); p != nil {
		return *p
	}
	return ""
}

// MarshalText is String, for JSON logs.
func (sess *session) MarshalText() ([]byte, error) { return []byte(sess.String()), nil }

// Allows reports whether the node shares a network with k: relay consent, as the coord sees it.
func (sess *session) Allows(k relay.Key) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.peers[k]
}

func rawCerts(conn *quic.Conn) [][]byte {
	certs := conn.ConnectionState().TLS.PeerCertificates
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// login registers the session and sends Welcome and the full peer map, then tells the node's peers
// that it is online.
//
// A node the login registered (first sight) whose login fails after that is deleted again before
// the refusal goes out: nodes that never completed a login are not kept (unfinished.go).
func (s *Server) login(key nodeKey, conn *quic.Conn, stream *quic.Stream, l *control.Login, log hclog.Logger) (_ *session, err error) {
	if l.Version != control.Version {
		return nil, &control.Error{Code: control.CodeVersion, Message: fmt.Sprintf("protocol version %d not supported (server speaks %d)", l.Version, control.Version)}
	}
	if err := store.ValidNodeName(l.Name); err != nil {
		return nil, &control.Error{Code: control.CodeInvalid, Message: err.Error()}
	}
	ctx := s.ctx
	if err := s.checkNewNode(ctx, key, addrPort(conn.RemoteAddr()).Addr()); err != nil {
		return nil, err
	}
	node, err := s.registerNode(ctx, key, l, log)
	if err != nil {
		return nil, err
	}
	if !node.LoginDone {
		defer func() {
			if err != nil {
				s.forgetUnfinished(key, log)
			}
		}()
	}
	if node.Name != l.Name {
		// Names are identities: a login does not rename (names.go). The node learns its name
		// from Welcome.Name.
		log.Info("login under another name than the node's: keeping the node's", "name", node.Name, "asked", l.Name)
	}
	observed := addrPort(conn.RemoteAddr())
	sess := &session{
		key: key, conn: conn, stream: stream, observed: observed, since: time.Now(),
		endpoints:    s.candidateEndpoints(observed, l.Endpoints),
		local:        l.Endpoints,
		pending:      make(map[nodeKey]*control.Peer),
		acls:         make(map[string]control.ACL),
		replySlots:   make(chan struct{}, maxQueuedReplies),
		endpointRate: rate.NewLimiter(1, 5),
		peers:        make(map[nodeKey]bool),
	}
	name := node.Name
	sess.name.Store(&name)
	sess.log = s.log.With("node", sess, "remote", conn.RemoteAddr().String())

	welcome, acls, peers, err := s.register(ctx, sess, node, l, log)
	if err != nil {
		return nil, err
	}
	// Welcome and the peer map go out after the change lock (a node that reads slowly must not hold
	// it): changes made meanwhile are queued for the session and follow the map as deltas.
	if err := sess.send(welcome); err != nil {
		s.logout(sess) // its peers were told it is online
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	// The peer map, in as many frames as it takes (control/frames.go).
	cut := s.newFrameCutter(func(f frame, more bool) error {
		pm := &control.PeerMap{Peers: f.upsert, ACLs: f.acls, More: more}
		if pm.Peers == nil {
			pm.Peers = []control.Peer{}
		}
		return sess.send(&control.Msg{Type: control.TypePeerMap, PeerMap: pm})
	})
	for _, a := range acls {
		cut.addACL(a)
	}
	for _, p := range peers {
		cut.addPeer(p)
	}
	if err := cut.close(true); err != nil {
		s.logout(sess) // its peers were told it is online
		return nil, fmt.Errorf("send peer map: %w", err)
	}
	sess.log.Info("node logged in", "ipv4", node.IPv4, "observed", observed, "networks", len(welcome.Welcome.Networks), "peers", len(peers))
	return sess, nil
}

// register makes sess the node's session under the change lock and returns what the node is to
// be sent — its welcome, its networks' rules and its peer map — having told its peers it is online.
func (s *Server) register(ctx context.Context, sess *session, node store.Node, l *control.Login, log hclog.Logger) (*control.Msg, []control.ACL, []control.Peer, error) {
	key, observed := sess.key, sess.observed
	var err error
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	if node, err = s.admit(ctx, key, node, l, log); err != nil {
		return nil, nil, nil, err
	}
	if !node.LoginDone {
		// Admitted: from here on the node exists for its peers.
		if err := s.cfg.Store.CompleteLogin(ctx, key[:]); err != nil {
			return nil, nil, nil, s.storeError("complete login", err)
		}
		node.LoginDone = true
	}
	if err := s.stillRegistered(ctx, key); err != nil {
		return nil, nil, nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, nil, errors.New("server closing")
	}
	old := s.sessions[key]
	s.sessions[key] = sess
	sess.member = s.relay.Bind(key, observed, sess)
	s.mu.Unlock()
	if old != nil {
		old.conn.CloseWithError(closeReplaced, "logged in elsewhere")
	}

	nets, err := s.cfg.Store.NetworksOf(ctx, key[:])
	if err != nil {
		s.dropSession(sess)
		return nil, nil, nil, s.storeError("list networks", err)
	}
	// Peers and rules come with networks: a node in none (every node's first login) has neither,
	// and is spared two queries under changeMu.
	var rows []store.PeerRow
	if len(nets) > 0 {
		if rows, err = s.cfg.Store.Peers(ctx, key[:]); err != nil {
			s.dropSession(sess)
			return nil, nil, nil, s.storeError("list peers", err)
		}
	}
	welcome := &control.Msg{Type: control.TypeWelcome, Welcome: &control.Welcome{
		IPv4: node.IPv4, IPv6: node.IPv6, Prefix4: s.cfg.Pools.V4, Prefix6: s.cfg.Pools.V6,
		Observed: observed, Networks: nonNil(nets), ProbePort: s.probePort(), Relay: !s.cfg.NoRelay,
		Relays: s.cfg.Relays, Ephemeral: node.Ephemeral, Tag: node.Tag, Name: node.Name,
	}}
	var acls []control.ACL
	if len(nets) > 0 {
		if acls, err = s.aclsOf(ctx, key); err != nil {
			s.dropSession(sess)
			return nil, nil, nil, s.storeError("list rules", err)
		}
	}
	peers := make([]control.Peer, 0, len(rows))
	sess.mu.Lock()
	for _, r := range rows {
		s.watch(sess, keyOf(r.Node.Key))
	}
	sess.nets = nets
	sess.mu.Unlock()
	s.setPresence(sess, false) // before its peers on other coords hear of it
	for _, r := range rows {
		peers = append(peers, *reachableBy(observed.Addr(), new(s.peerRecord(r.Node, r.Networks))))
	}
	// Tell every online peer that this node is here now.
	for _, r := range rows {
		p := s.peerRecord(node, r.Networks)
		s.enqueue(keyOf(r.Node.Key), key, &p)
	}
	// The join requests awaiting its approval follow the peer map (the node forgets its list with
	// every peer map: none = no news).
	if joins, total, err := s.joinsOf(ctx, key[:]); err != nil {
		s.log.Error("list join requests", "error", err)
	} else if total > 0 {
		sess.mu.Lock()
		sess.joins = joins
		sess.mu.Unlock()
		s.wake(sess)
	}
	s.publish("", store.EventNode, key[:])
	return welcome, acls, peers, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func keyOf(b []byte) nodeKey {
	var k nodeKey
	copy(k[:], b)
	return k
}

// storeError logs a failed store operation and turns it into the answer for the node: storage
// full (the node retries) or an internal error.
func (s *Server) storeError(step string, err error) error {
	if store.StorageFull(err) {
		s.log.Error("storage full: the disk holding the database is full; new nodes and changes are refused until space is freed",
			"step", step, "error", err)
		return &control.Error{Code: control.CodeStorageFull, Message: "the coordination server's storage is full; retry later"}
	}
	s.log.Error("store failure", "step", step, "error", err)
	return &control.Error{Code: control.CodeInternal, Message: step + ": internal error"}
}

// dropSession unregisters sess if it is still the current session of its key; it reports whether it was.
func (s *Server) dropSession(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.relay.Unbind(sess.member)
	sess.mu.Lock()
	if !sess.gone {
		sess.gone = true
		s.watchMu.Lock()
		for k := range sess.peers {
			s.unwatchLocked(sess, k)
		}
		s.watchMu.Unlock()
	}
	sess.mu.Unlock()
	if s.sessions[sess.key] != sess {
		return false
	}
	delete(s.sessions, sess.key)
	return true
}

// logout tells the node's peers that it went offline.
func (s *Server) logout(sess *session) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	if !s.dropSession(sess) {
		return // replaced by a newer login, which already announced itself, or logged out
	}
	s.markOfflineLocked(sess.key)
	s.clearPresence(sess.key, true)
	sess.log.Info("node offline")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, err := s.cfg.Store.Node(ctx, sess.key[:])
	if err != nil {
		s.log.Error("logout: load node", "error", err)
		return
	}
	rows, err := s.cfg.Store.Peers(ctx, sess.key[:])
	if err != nil {
		s.log.Error("logout: list peers", "error", err)
		return
	}
	for _, r := range rows {
		p := s.peerRecord(node, r.Networks)
		s.enqueue(keyOf(r.Node.Key), sess.key, &p)
	}
}

// peerRecord builds the control view of a node, with its online state and endpoints if logged in.
func (s *Server) peerRecord(n store.Node, networks []string) control.Peer {
	p := control.Peer{Key: n.Key, Name: n.Name, IPs: []netip.Addr{n.IPv4, n.IPv6}, Networks: networks, Tag: n.Tag}
	s.mu.Lock()
	if sess := s.sessions[keyOf(n.Key)]; sess != nil {
		p.Online = true
		sess.mu.Lock()
		p.Endpoints = slices.Clone(sess.endpoints)
		p.Mapping, p.Ports = sess.mapping, sess.ports
		sess.mu.Unlock()
	} else if r, ok := s.cluster.remoteOnline(keyOf(n.Key)); ok {
		p.Online, p.Endpoints, p.Mapping, p.Ports = true, slices.Clone(r.endpoints), r.mapping, r.ports
	}
	s.mu.Unlock()
	return p
}

// enqueue queues a peer change (p nil = remove) for the node `to`, if it is online. The latest change
// per peer wins.
func (s *Server) enqueue(to, about nodeKey, p *control.Peer) {
	s.mu.Lock()
	sess := s.sessions[to]
	var toAddr netip.Addr
	if sess != nil {
		toAddr = sess.observed.Addr()
	}
	s.mu.Unlock()
	if sess == nil {
		return
	}
	p = reachableBy(toAddr, p)
	sess.mu.Lock()
	if len(sess.pending) == 0 {
		sess.pendingSince = time.Now()
	}
	sess.pending[about] = p
	if p != nil {
		s.watch(sess, about)
	} else {
		s.unwatch(sess, about)
	}
	sess.mu.Unlock()
	s.wake(sess)
}

// watch records that sess's node may hear from k (sess.peers) and, unless sess was dropped, that it
// watches k (Server.watchers). The caller holds sess.mu.
func (s *Server) watch(sess *session, k nodeKey) {
	sess.peers[k] = true
	if sess.gone {
		return
	}
	s.watchMu.Lock()
	w := s.watchers[k]
	if w == nil {
		w = make(map[*session]struct{}, 1)
		s.watchers[k] = w
	}
	w[sess] = struct{}{}
	s.watchMu.Unlock()
}

// unwatch undoes watch. The caller holds sess.mu.
func (s *Server) unwatch(sess *session, k nodeKey) {
	delete(sess.peers, k)
	s.watchMu.Lock()
	s.unwatchLocked(sess, k)
	s.watchMu.Unlock()
}

func (s *Server) unwatchLocked(sess *session, k nodeKey) {
	if w := s.watchers[k]; w != nil {
		delete(w, sess)
		if len(w) == 0 {
			delete(s.watchers, k)
		}
	}
}

// watching returns the sessions whose nodes were told of k (k in their peers), dropped ones not.
func (s *Server) watching(k nodeKey) []*session {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	out := make([]*session, 0, len(s.watchers[k]))
	for sess := range s.watchers[k] {
		out = append(out, sess)
	}
	return out
}

// enqueueNetworks tells the node `to`, if it is online, its current list of networks with its next
// peer delta.
func (s *Server) enqueueNetworks(to nodeKey, networks []string) {
	s.mu.Lock()
	sess := s.sessions[to]
	s.mu.Unlock()
	if sess == nil {
		return
	}
	sess.mu.Lock()
	sess.networks = &control.NetworkList{Names: nonNil(networks)}
	sess.nets = networks
	sess.mu.Unlock()
	s.wake(sess)
}

func (s *Server) reply(sess *session, r *control.Reply) {
	r.Error = control.CleanText(r.Error) // it may quote what a request said
	sess.mu.Lock()
	sess.replies = append(sess.replies, &control.Msg{Type: control.TypeReply, Reply: r})
	sess.mu.Unlock()
	s.wake(sess)
}

// send writes m to the node within writeTimeout.
func (sess *session) send(m *control.Msg) error {
	sess.stream.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := control.WriteMsg(sess.stream, m)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		sess.log.Info("closing control connection: the node does not read its messages", "waited", writeTimeout)
	}
	return err
}

// wake has what is queued for sess sent: it starts the session's writer unless it is running (it
// sends what it finds before it stops) or the session is not writable.
func (s *Server) wake(sess *session) {
	sess.mu.Lock()
	start := sess.writable && !sess.writing
	if start {
		sess.writing = true
		sess.flushes.Add(1)
	}
	sess.mu.Unlock()
	if start {
		go s.flush(sess)
	}
}

// flush sends queued replies and coalesced peer deltas until nothing is queued. A failed write ends
// the session (the read loop too) and stops its writer for good.
func (s *Server) flush(sess *session) {
	defer sess.flushes.Done()
	for {
		sess.mu.Lock()
		replies, pending, since, networks, joins, acls := sess.replies, sess.pending, sess.pendingSince, sess.networks, sess.joins, sess.acls
		if len(replies) == 0 && len(pending) == 0 && networks == nil && joins == nil && len(acls) == 0 {
			sess.writing = false
			sess.mu.Unlock()
			return
		}
		// The maps taken are the writer's now; an empty one stays the session's (no new map).
		sess.replies, sess.networks, sess.joins = nil, nil, nil
		if len(pending) > 0 {
			sess.pending = make(map[nodeKey]*control.Peer)
		} else {
			pending = nil
		}
		if len(acls) > 0 {
			sess.acls = make(map[string]control.ACL)
		} else {
			acls = nil
		}
		sess.mu.Unlock()
		if err := s.write(sess, replies, pending, since, networks, joins, acls); err != nil {
			sess.conn.CloseWithError(closeOK, "")
			sess.mu.Lock()
			sess.writing, sess.writable = false, false
			sess.mu.Unlock()
			return
		}
	}
}

// write sends one batch of what flush took from the session.
func (s *Server) write(sess *session, replies []*control.Msg, pending map[nodeKey]*control.Peer, since time.Time,
	networks *control.NetworkList, joins *control.JoinRequests, acls map[string]control.ACL) error {
	for _, m := range replies {
		if err := sess.send(m); err != nil {
			return err
		}
		<-sess.replySlots
	}
	// Rules first, or with the peers they apply to; the network list with the first frame.
	cut := s.newFrameCutter(func(f frame, _ bool) error {
		delta := &control.PeerDelta{Networks: networks, Joins: joins, ACLs: f.acls, Upsert: f.upsert, Remove: f.remove}
		networks, joins = nil, nil
		return sess.send(&control.Msg{Type: control.TypePeerDelta, PeerDelta: delta})
	})
	for _, a := range acls {
		cut.addACL(a)
	}
	for k, p := range pending {
		if p == nil {
			cut.addRemove(k[:])
		} else {
			cut.addPeer(*p)
		}
	}
	if err := cut.close(networks != nil || joins != nil); err != nil {
		return err
	}
	if len(pending) > 0 {
		s.metrics.fanout.Observe(time.Since(since).Seconds())
	}
	return nil
}

// readLoop handles the node's requests until the connection ends or the node misbehaves.
func (s *Server) readLoop(sess *session) {
	// Unblock the read when the server shuts down. A callback rather than a goroutine that waits
	// for it: at 10,000 sessions a goroutine each is ~80 MB of stacks.
	stop := context.AfterFunc(s.ctx, func() { sess.conn.CloseWithError(closeOK, "server shutting down") })
	defer stop()
	for {
		s.addrWatch.sent(sess) // the login, then each message: see followAddrs
		msg, err := control.ReadMsgMax(sess.stream, control.MaxNodeFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && sess.conn.Context().Err() == nil && s.ctx.Err() == nil {
				sess.log.Warn("closing control connection: bad frame", "error", err)
				sess.conn.CloseWithError(closeProtocol, "malformed control frame")
			}
			return
		}
		switch msg.Type {
		case control.TypeRequest:
			select {
			case sess.replySlots <- struct{}{}:
			case <-sess.conn.Context().Done():
				return
			}
			if rep := s.limitRequest(sess, msg.Request); rep != nil {
				s.reply(sess, rep)
				continue
			}
			s.reply(sess, s.handleRequest(sess, msg.Request))
		case control.TypeEndpoints:
			s.updateEndpoints(sess, msg.Endpoints)
		default:
			sess.log.Warn("closing control connection: unexpected message", "type", msg.Type)
			sess.conn.CloseWithError(closeProtocol, "unexpected message")
			return
		}
	}
}

func (s *Server) updateEndpoints(sess *session, u *control.Endpoints) {
	s.mu.Lock() // s.mu before sess.mu, as everywhere (peerRecord)
	sess.mu.Lock()
	same := slices.Equal(sess.local, u.Endpoints) && sess.mapping == u.Mapping && samePorts(sess.ports, u.Ports)
	if !same {
		sess.local = u.Endpoints
		sess.endpoints = s.candidateEndpoints(sess.observed, u.Endpoints)
		sess.mapping, sess.ports = u.Mapping, u.Ports // validated with the message (control.Validate)
	}
	sess.mu.Unlock()
	s.mu.Unlock()
	if !same {
		s.scheduleEndpointRefresh(sess)
	}
}

// samePorts reports whether two port patterns (nil = none) are equal.
func samePorts(a, b *control.Ports) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// scheduleEndpointRefresh tells sess's peers its endpoints: at once if its rate allows, else once
// when it does, with whatever the endpoints are by then. Each refresh goes to every peer, so a node
// gets a few, then one a second, however many updates it sends; the latest always goes out.
func (s *Server) scheduleEndpointRefresh(sess *session) {
	sess.mu.Lock()
	if sess.refreshDue != nil {
		sess.mu.Unlock()
		return // the refresh due will carry this update too
	}
	d := sess.endpointRate.Reserve().Delay()
	if d > 0 {
		sess.refreshDue = time.AfterFunc(d, func() {
			sess.mu.Lock()
			sess.refreshDue = nil
			sess.mu.Unlock()
			s.refreshEndpoints(sess)
		})
	}
	sess.mu.Unlock()
	if d == 0 {
		s.refreshEndpoints(sess)
	}
}

func (s *Server) refreshEndpoints(sess *session) {
	if sess.conn.Context().Err() != nil {
		return // logged out meanwhile
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.setPresence(sess, true) // the other coords read the endpoints there
	if err := s.refreshPeers(sess.key, nil); err != nil {
		s.log.Error("endpoints: refresh peers", "error", err)
	}
}

// IPv4 ranges no peer reaches a node at: "this network" (0.0.0.0/8) and the reserved 240.0.0.0/4,
// which holds the limited broadcast address.
var (
	thisNetwork4 = netip.MustParsePrefix("0.0.0.0/8")
	reserved4    = netip.MustParsePrefix("240.0.0.0/4")
)

// candidateEndpoints returns the address the server observed followed by the node's own that a
// peer could reach it at, without duplicates. Dropped: multicast, unspecified, link-local,
// 0.0.0.0/8 and 240.0.0.0/4 (broadcast) addresses, the overlay's own addresses (a peer would send
// the node's packets into the overlay) and, unless the server sees the node on loopback too (node
// and server on one host, as in tests), loopback: peers would only send probes at whatever listens
// there on their own host. Loopback endpoints that remain go only to peers on loopback too
// (reachableBy). A node that reaches the server over TCP offers only its own addresses.
func (s *Server) candidateEndpoints(observed netip.AddrPort, local []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(local)+1)
	if tcptun.IsSynthetic(observed.Addr()) {
		observed = netip.AddrPort{} // a TCP client's stream (tcptun): no peer can send there
	}
	if observed.IsValid() {
		out = append(out, observed)
	}
	onLoopback := observed.Addr().IsLoopback()
	for _, ep := range local {
		ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
		a := ep.Addr()
		if a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() || thisNetwork4.Contains(a) || reserved4.Contains(a) ||
			s.cfg.Pools.V4.Contains(a) || s.cfg.Pools.V6.Contains(a) || (a.IsLoopback() && !onLoopback) {
			continue // no peer can reach a node there; peers would only send probes at whatever is
		}
		if !slices.Contains(out, ep) && len(out) < control.MaxEndpoints {
			out = append(out, ep)
		}
	}
	return out
}

// reachableBy returns p as the node `to` (whose control connection comes from toAddr) is to see it:
// without loopback endpoints unless to is on loopback too. p is not modified.
func reachableBy(toAddr netip.Addr, p *control.Peer) *control.Peer {
	if p == nil || toAddr.IsLoopback() || !slices.ContainsFunc(p.Endpoints, func(ep netip.AddrPort) bool { return ep.Addr().IsLoopback() }) {
		return p
	}
	q := *p
	q.Endpoints = slices.DeleteFunc(slices.Clone(p.Endpoints), func(ep netip.AddrPort) bool { return ep.Addr().IsLoopback() })
	return &q
}

func addrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
