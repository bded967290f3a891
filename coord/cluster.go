package coord

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// Several coords on one database (a PostgreSQL store): Config.CoordID turns this on. Each coord
// serves the nodes logged in to it as before, and tells the others what it changed through store
// events (store/events.go): after a change it publishes "node X changed" (or "network N's rules
// changed", "node X deleted"); every coord reads the events after the last ID it handled whenever
// the store's LISTEN connection wakes it (a notification, a reconnection, or the poll interval), and
// brings its own nodes up to date by reading the current state of X from the store and comparing
// it with what each of its sessions was sent (resync). Events only say what to look at, so handling
// one twice, or late, or after a later change, is harmless.
//
// Online state across coords: each coord records its logged-in nodes in presence rows (with their
// endpoints) and its own liveness in a coords row (heartbeat). A node on another coord counts online
// while that coord's heartbeat is fresh; when a coord stops beating, the others resync its nodes,
// which their peers then see offline.

// Defaults for the cluster timing in Config.
const (
	DefaultClusterHeartbeat = 2 * time.Second
	DefaultClusterTimeout   = 10 * time.Second
	DefaultEventRetention   = 6 * time.Hour
	clusterPoll             = 5 * time.Second // read events at least this often, notification or not
	eventBatch              = 256
	removeDeadCoordAfter    = time.Hour // presence rows of a coord silent this long are deleted
)

// cluster is a Server's view of the other coords. Its mu is a leaf: taken under s.mu, never the
// other way round.
type cluster struct {
	id   string
	wake chan struct{}

	mu      sync.Mutex
	last    int64                  // the last event ID handled
	remote  map[nodeKey]remote     // nodes on other coords
	dead    map[string]bool        // coords whose heartbeat is stale
	seen    map[string]time.Time   // coords' last heartbeats, as read
	events  int64                  // events handled
	batches int64                  // resync batches (resyncBatch): store reads for node events
	caught  map[bool]int64         // events read after a wake-up: by reconnected
	onWake  func(reconnected bool) // tests

	out outbox // presence changes and events on their way to the database
}

// remote is a node logged in to another coord, as its presence row says.
type remote struct {
	coord     string
	endpoints []netip.AddrPort
	mapping   control.Mapping
	ports     *control.Ports
}

// presenceJSON is how a coord stores a node's endpoints in its presence row.
type presenceJSON struct {
	Endpoints []netip.AddrPort `json:"e,omitempty"`
	Mapping   control.Mapping  `json:"m,omitempty"`
	Ports     *control.Ports   `json:"p,omitempty"`
}

// initCluster loads the other coords' nodes and starts the event loop, the LISTEN connection and
// the heartbeat. Called from New once the listener runs.
func (s *Server) initCluster() error {
	if s.cfg.CoordID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	cl := &cluster{id: s.cfg.CoordID, wake: make(chan struct{}, 1), remote: make(map[nodeKey]remote),
		dead: make(map[string]bool), seen: make(map[string]time.Time), caught: make(map[bool]int64)}
	st := s.cfg.Store
	// Rows a previous run of this coord left behind are stale: its nodes reconnect. The other coords
	// hear that they are offline until then (published once s.cluster is set, below).
	stale, err := st.RemoveCoord(ctx, cl.id)
	if err != nil {
		return err
	}
	if err := st.CoordHeartbeat(ctx, cl.id, s.Addr().String(), time.Now()); err != nil {
		return err
	}
	last, err := st.LastEventID(ctx)
	if err != nil {
		return err
	}
	cl.last = last
	ps, err := st.Presences(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		cl.remote[keyOf(p.Key)] = decodeRemote(p)
	}
	s.cluster = cl
	for _, k := range stale {
		s.publish("", store.EventNode, k)
	}
	s.readHeartbeats(ctx)
	s.l.Go(func() {
		st.Listen(s.ctx, clusterPoll, func(reconnected bool) {
			if reconnected {
				s.log.Info("cluster: listening for events", "after_event", cl.lastID())
			}
			s.catchUp(reconnected)
		}, func(err error) {
			s.log.Warn("cluster: event connection lost, reconnecting", "error", err)
		})
	})
	s.l.Every(s.cfg.ClusterHeartbeat, s.clusterTick)
	return nil
}

func (cl *cluster) lastID() int64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.last
}

// maxPresenceJSON bounds a presence row's endpoints as a coord reads them (MaxEndpoints addresses
// take well under 1 KiB); a longer one counts as none.
const maxPresenceJSON = 4096

// decodeRemote reads another coord's presence row. Rows come from the shared database, written by
// coords, but are decoded defensively all the same: bounded, and a bad one means no endpoints (the
// node is still online; peers reach it through a relay or once it updates them).
func decodeRemote(p store.Presence) remote {
	var pj presenceJSON
	if len(p.Endpoints) <= maxPresenceJSON {
		if json.Unmarshal([]byte(p.Endpoints), &pj) != nil {
			pj = presenceJSON{}
		}
	}
	if len(pj.Endpoints) > control.MaxEndpoints {
		pj.Endpoints = pj.Endpoints[:control.MaxEndpoints]
	}
	if pj.Mapping != control.MappingDependent || !pj.Ports.Valid() {
		pj.Ports = nil // a pattern goes with an endpoint-dependent mapping only (control.Peer)
	}
	return remote{coord: p.Coord, endpoints: pj.Endpoints, mapping: pj.Mapping, ports: pj.Ports}
}

// remoteOnline returns the presence of a node logged in to another live coord.
func (cl *cluster) remoteOnline(k nodeKey) (remote, bool) {
	if cl == nil {
		return remote{}, false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	r, ok := cl.remote[k]
	if !ok || r.coord == cl.id || cl.dead[r.coord] {
		return remote{}, false
	}
	return r, true
}

// publish tells the other coords about a change, through the outbox (queueCluster).
func (s *Server) publish(network, kind string, key []byte) {
	if s.cluster == nil {
		return
	}
	s.queueCluster(store.ClusterWrite{Event: true, Network: network, Kind: kind, Payload: s.cluster.payload(key)})
}

// payload is an event's payload for node key (nil for network events): "COORDID KEYHEX".
func (cl *cluster) payload(key []byte) string { return cl.id + " " + hex.EncodeToString(key) }

// setPresence records that sess is logged in here, with its endpoints: at login (taking the node
// over from any other coord), or with new endpoints (refresh: only while the row is still this
// coord's, so that a late refresh never takes back a node that has moved on).
func (s *Server) setPresence(sess *session, refresh bool) {
	if s.cluster == nil {
		return
	}
	sess.mu.Lock()
	b, _ := json.Marshal(presenceJSON{Endpoints: sess.endpoints, Mapping: sess.mapping, Ports: sess.ports})
	sess.mu.Unlock()
	op := store.PresenceSet
	if refresh {
		op = store.PresenceUpdate
	}
	s.queueCluster(store.ClusterWrite{Presence: op, Key: sess.key[:], Coord: s.cluster.id, Endpoints: string(b), At: time.Now()})
}

// clearPresence removes the node's presence row unless the node has moved to another coord; with
// announce, the others hear of the logout if it did.
func (s *Server) clearPresence(key nodeKey, announce bool) {
	if s.cluster == nil {
		return
	}
	w := store.ClusterWrite{Presence: store.PresenceClear, Key: key[:], Coord: s.cluster.id}
	if announce {
		w.Event, w.Kind, w.Payload = true, store.EventNode, s.cluster.payload(key[:])
	}
	s.queueCluster(w)
}

// The outbox: presence changes and events are queued in the order they are made (under changeMu,
// where they were written before) and written in batches by one flusher goroutine at a time, one
// transaction per batch (store.WriteCluster). A login or an endpoint change no longer waits for two
// commits and the store's writer lock while it holds changeMu, and under load many changes share
// one commit. A failed batch is logged, as a failed publish was: the changes stand here, and the
// other coords' nodes catch up at their next login or the next event about the node.
const (
	outboxBatch = 512     // writes per transaction
	outboxMax   = 1 << 16 // queued writes beyond which new ones are dropped (the database is down)
)

// outbox is the cluster's queue of writes to the shared database.
type outbox struct {
	mu      sync.Mutex
	queue   []store.ClusterWrite
	running bool           // a flusher goroutine is writing
	dropped int64          // writes dropped because the queue was full
	wg      sync.WaitGroup // the flusher; Server.Close waits for it
	// setting counts the logins' presence rows (PresenceSet) queued or being written, by node:
	// until ours lands, a row naming another coord is older than our session (resyncOne).
	setting map[nodeKey]int
}

// settingPresence reports whether a login's presence row for k is still on its way.
func (o *outbox) settingPresence(k nodeKey) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.setting[k] > 0
}

// queueCluster queues w and starts a flusher unless one runs.
func (s *Server) queueCluster(w store.ClusterWrite) {
	o := &s.cluster.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) >= outboxMax {
		o.dropped++
		if o.dropped == 1 || o.dropped%1000 == 0 {
			s.log.Error("cluster: outbox full, change not written for the other coords", "dropped", o.dropped)
		}
		return
	}
	o.queue = append(o.queue, w)
	if w.Presence == store.PresenceSet {
		if o.setting == nil {
			o.setting = make(map[nodeKey]int)
		}
		o.setting[keyOf(w.Key)]++
	}
	if !o.running {
		o.running = true
		o.wg.Add(1)
		go s.flushCluster()
	}
}

// flushCluster writes the queue in batches until it is empty. Not s.ctx: a closing server still
// tells the others about its nodes' logouts (Close waits for it).
func (s *Server) flushCluster() {
	o := &s.cluster.out
	defer o.wg.Done()
	for {
		o.mu.Lock()
		n := min(len(o.queue), outboxBatch)
		if n == 0 {
			o.running = false
			o.queue = nil // let a burst's backing array go
			o.mu.Unlock()
			return
		}
		batch := slices.Clone(o.queue[:n])
		o.queue = o.queue[n:]
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.cfg.Store.WriteCluster(ctx, batch)
		cancel()
		o.mu.Lock()
		if err != nil {
			s.log.Error("cluster: write presence and events", "changes", len(batch), "error", err)
			if s.ctx.Err() != nil && len(o.queue) > 0 {
				// Closing, and the database fails: do not hold Close for 10 s a batch.
				s.log.Error("cluster: closing; changes not written for the other coords", "changes", len(o.queue))
				batch = append(batch, o.queue...)
				o.queue = o.queue[:0]
			}
		}
		for _, w := range batch {
			if w.Presence == store.PresenceSet {
				if k := keyOf(w.Key); o.setting[k] <= 1 {
					delete(o.setting, k)
				} else {
					o.setting[k]--
				}
			}
		}
		o.mu.Unlock()
	}
}

// flushed waits until the outbox is written (Close; tests).
func (cl *cluster) flushed() {
	if cl != nil {
		cl.out.wg.Wait()
	}
}

// catchUp handles every event after the last one handled, in batches.
func (s *Server) catchUp(reconnected bool) {
	cl := s.cluster
	if cl.onWake != nil {
		cl.onWake(reconnected)
	}
	n := 0
	for s.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		evs, err := s.cfg.Store.EventsAfter(ctx, cl.lastID(), eventBatch)
		cancel()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("cluster: read events", "error", err)
			}
			return
		}
		if len(evs) == 0 {
			break
		}
		// Node events are resynced together, up to the next event of another kind (which may
		// depend on them) or the batch's end; a node named twice is read once.
		var keys []nodeKey
		queued := make(map[nodeKey]bool)
		flush := func() {
			s.resync(keys...)
			keys = keys[:0]
			clear(queued)
		}
		for _, e := range evs {
			origin, key, hasKey := parsePayload(e.Payload)
			switch {
			case origin == cl.id:
				// our own change: our nodes were told when we made it
			case hasKey && (e.Kind == store.EventNode || e.Kind == store.EventGone):
				if !queued[key] {
					queued[key] = true
					keys = append(keys, key)
				}
			default:
				flush()
				s.handleEvent(e)
			}
		}
		flush()
		cl.mu.Lock()
		cl.last = evs[len(evs)-1].ID
		cl.events += int64(len(evs))
		cl.mu.Unlock()
		n += len(evs)
		if len(evs) < eventBatch {
			break
		}
	}
	if n > 0 {
		cl.mu.Lock()
		cl.caught[reconnected] += int64(n)
		cl.mu.Unlock()
		if reconnected {
			s.log.Info("cluster: caught up after reconnecting", "events", n)
		}
	}
}

// handleEvent brings this coord's nodes up to date with one event of another coord.
func (s *Server) handleEvent(e store.Event) {
	origin, key, hasKey := parsePayload(e.Payload)
	if origin == s.cluster.id {
		return // our own change: our nodes were told when we made it
	}
	if !hasKey && e.Kind != store.EventACL {
		s.log.Warn("cluster: bad event", "id", e.ID, "kind", e.Kind)
		return
	}
	switch e.Kind {
	case store.EventNode, store.EventGone:
		s.resync(key)
	case store.EventACL:
		s.resyncACL(e.Network)
	case store.EventJoins:
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		s.changeMu.Lock()
		s.pushJoinsHere(ctx, key[:])
		s.changeMu.Unlock()
	default:
		s.log.Debug("cluster: unknown event kind", "id", e.ID, "kind", e.Kind)
	}
}

// parsePayload splits an event payload, "COORDID KEYHEX" (KEYHEX empty for network events), into
// the publishing coord and the node key; hasKey is false without a valid key.
func parsePayload(payload string) (origin string, key nodeKey, hasKey bool) {
	origin, keyHex, _ := strings.Cut(payload, " ")
	if len(keyHex) != 2*len(key) {
		return origin, key, false
	}
	if _, err := hex.Decode(key[:], []byte(keyHex)); err != nil {
		return origin, nodeKey{}, false
	}
	return origin, key, true
}

// resync re-reads the given nodes — presence, record, peers, networks — and queues for this
// coord's sessions whatever differs from what they were sent: each node's view of its peers if it
// is logged in here, and every local peer's view of it. The nodes are read in batches of
// store.MaxBatchKeys, a few queries per batch: a coord that has fallen behind catches up by the
// batch, not by the event (resyncing one node at a time, each with three queries, could not keep up
// with two coords' endpoint changes at 10,000 nodes).
func (s *Server) resync(keys ...nodeKey) {
	for len(keys) > 0 {
		n := min(len(keys), store.MaxBatchKeys)
		s.resyncBatch(keys[:n])
		keys = keys[n:]
	}
}

func (s *Server) resyncBatch(keys []nodeKey) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	st, cl := s.cfg.Store, s.cluster
	s.changeMu.Lock()
	defer s.changeMu.Unlock()

	bs := make([][]byte, len(keys))
	for i := range keys {
		bs[i] = keys[i][:]
	}
	pres, err := st.PresencesOf(ctx, bs)
	if err != nil {
		s.log.Error("cluster: read presence", "error", err)
		return
	}
	cl.mu.Lock()
	cl.batches++
	for _, x := range keys {
		if p, ok := pres[string(x[:])]; ok {
			cl.remote[x] = decodeRemote(p)
		} else {
			delete(cl.remote, x)
		}
	}
	cl.mu.Unlock()
	nodes, peers, err := st.NodesWithPeers(ctx, bs)
	if err != nil {
		s.log.Error("cluster: resync nodes", "nodes", len(keys), "error", err)
		return
	}
	for _, x := range keys {
		p, online := pres[string(x[:])]
		me, exists := nodes[string(x[:])]
		s.resyncOne(ctx, x, p, online, me, exists, peers[string(x[:])])
	}
}

// resyncOne is resync for node x, read as p (online: it has a presence row), me (exists: not
// deleted) and rows (its peers). The caller holds changeMu.
func (s *Server) resyncOne(ctx context.Context, x nodeKey, p store.Presence, online bool, me store.Node, exists bool, rows []store.PeerRow) {
	st, cl := s.cfg.Store, s.cluster
	s.mu.Lock()
	mine := s.sessions[x]
	s.mu.Unlock()
	if mine != nil && online && p.Coord != cl.id && !cl.out.settingPresence(x) {
		// The node logged in to another coord: this session is over. Unregister it first so its
		// logout neither announces it offline nor clears the other coord's presence row. (Not
		// while our own login's row is still on its way: the row read is the one it replaces.)
		if s.dropSession(mine) {
			mine.conn.CloseWithError(closeReplaced, "logged in to another coordination server")
		}
		mine = nil
	}
	if !exists {
		rows = nil
	}
	now := make(map[nodeKey]bool, len(rows)) // empty for a deleted node: everyone drops it
	for _, r := range rows {
		k := keyOf(r.Node.Key)
		now[k] = true
		rec := s.peerRecord(me, r.Networks)
		s.enqueue(k, x, &rec) // no-op unless k is logged in here
	}
	for _, l := range s.watching(x) { // the sessions told of x: those no longer its peers drop it
		if l.key == x {
			continue
		}
		l.mu.Lock()
		had := l.peers[x]
		l.mu.Unlock()
		if had && !now[l.key] {
			s.enqueue(l.key, x, nil)
		}
	}
	if mine == nil {
		return
	}
	if !exists {
		// Deleted elsewhere (the operator, the ephemeral reaper): end its session, and its presence
		// (its logout, skipped once the session is dropped, would have).
		if s.dropSession(mine) {
			mine.conn.CloseWithError(closeOK, "removed by the server operator")
			s.clearPresence(x, false)
		}
		return
	}
	for _, r := range rows {
		rec := s.peerRecord(r.Node, r.Networks)
		s.enqueue(x, keyOf(r.Node.Key), &rec)
	}
	mine.mu.Lock()
	var gone []nodeKey
	for k := range mine.peers {
		if !now[k] {
			gone = append(gone, k)
		}
	}
	oldNets := mine.nets
	mine.mu.Unlock()
	for _, k := range gone {
		s.enqueue(x, k, nil)
	}
	nets, err := st.NetworksOf(ctx, x[:])
	if err != nil {
		s.log.Error("cluster: resync networks", "error", err)
		return
	}
	if !slices.Equal(nets, oldNets) {
		for _, n := range oldNets {
			if !slices.Contains(nets, n) {
				if err := s.pushACL(ctx, x, n); err != nil {
					s.log.Error("cluster: resync rules", "error", err)
				}
			}
		}
		for _, n := range nets {
			if !slices.Contains(oldNets, n) {
				if err := s.pushACL(ctx, x, n); err != nil {
					s.log.Error("cluster: resync rules", "error", err)
				}
			}
		}
		s.enqueueNetworks(x, nets)
	}
}

// resyncACL sends network's rules to its members logged in here.
func (s *Server) resyncACL(network string) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	members, err := s.cfg.Store.Members(ctx, network)
	if err != nil {
		s.log.Error("cluster: resync rules", "network", network, "error", err)
		return
	}
	var a *control.ACL
	for _, m := range members {
		k := keyOf(m.Key)
		s.mu.Lock()
		here := s.sessions[k] != nil
		s.mu.Unlock()
		if !here {
			continue
		}
		if a == nil {
			if a, err = s.loadACL(ctx, network); err != nil {
				s.log.Error("cluster: resync rules", "network", network, "error", err)
				return
			}
		}
		s.enqueueACL(k, *a)
	}
}

// clusterTick beats this coord's heartbeat, reads the others', resyncs the nodes of coords that
// died or came back, and prunes old events.
func (s *Server) clusterTick() {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	if err := s.cfg.Store.CoordHeartbeat(ctx, s.cluster.id, s.Addr().String(), now); err != nil {
		if s.ctx.Err() == nil {
			s.log.Error("cluster: heartbeat", "error", err)
		}
		return
	}
	s.readHeartbeats(ctx)
	if _, err := s.cfg.Store.PruneEvents(ctx, now.Add(-s.cfg.EventRetention)); err != nil && s.ctx.Err() == nil {
		s.log.Error("cluster: prune events", "error", err)
	}
}

// readHeartbeats updates which coords are dead; the nodes of each coord that changed state are
// resynced (their peers here see them go offline or come back).
func (s *Server) readHeartbeats(ctx context.Context) {
	cl := s.cluster
	coords, err := s.cfg.Store.Coords(ctx)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Error("cluster: read heartbeats", "error", err)
		}
		return
	}
	now := time.Now()
	var flipped []string
	cl.mu.Lock()
	for _, c := range coords {
		if c.ID == cl.id {
			continue
		}
		dead := now.Sub(c.Heartbeat) > s.cfg.ClusterTimeout
		if dead != cl.dead[c.ID] {
			flipped = append(flipped, c.ID)
		}
		cl.dead[c.ID] = dead
		cl.seen[c.ID] = c.Heartbeat
	}
	var keys []nodeKey
	for k, r := range cl.remote {
		if slices.Contains(flipped, r.coord) {
			keys = append(keys, k)
		}
	}
	cl.mu.Unlock()
	for _, id := range flipped {
		s.log.Warn("cluster: coordination server changed state", "coord", id, "dead", cl.isDead(id), "nodes", len(keys))
	}
	s.resync(keys...)
	for _, c := range coords {
		if c.ID != cl.id && now.Sub(c.Heartbeat) > removeDeadCoordAfter {
			if _, err := s.cfg.Store.RemoveCoord(ctx, c.ID); err != nil {
				s.log.Error("cluster: remove dead coord", "coord", c.ID, "error", err)
			}
		}
	}
}

func (cl *cluster) isDead(id string) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.dead[id]
}
