package node

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/internal/metrics"
	"github.com/warren-net/warren/node/localapi"
	"github.com/warren-net/warren/peer"
)

// The node's metrics (GET /v1/metrics on the local API, and Config.Metrics) are computed at scrape
// time from the counters where they live: the node's drop counters (the ones `warren status`
// shows, through stats), the peer endpoint's link counters (peer.Endpoint.Stats) and the proxy's
// request counters. Labels are bounded sets (paths, reasons, NAT mappings, proxy kinds); no label
// names a peer.

// rttBuckets span a link on one host (tens of microseconds) to one across the world and back.
var rttBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// proxyKinds are the label values of warren_node_proxy_connections_total.
var proxyKinds = []string{"socks-connect", "socks-udp", "http", "http-connect", "inbound-exposed"}

// natLabels name the NAT mappings peers report, for the punch metrics.
var natLabels = map[control.Mapping]string{control.MappingUnknown: "unknown", control.MappingIndependent: string(control.MappingIndependent),
	control.MappingDependent: string(control.MappingDependent)}

var (
	descPeers  = prometheus.NewDesc("warren_node_peers", "Peers by the path of their current link (idle: wound down after --link-idle without traffic; none: no link).", []string{"path"}, nil)
	descSent   = prometheus.NewDesc("warren_node_link_sent_bytes_total", "Bytes of QUIC packets sent on peer links, by path (retransmissions and keep-alives included; UDP and IP headers not).", []string{"path"}, nil)
	descRecv   = prometheus.NewDesc("warren_node_link_received_bytes_total", "Bytes of QUIC packets received on peer links, by path.", []string{"path"}, nil)
	descSentP  = prometheus.NewDesc("warren_node_link_sent_packets_total", "QUIC packets sent on peer links, by path.", []string{"path"}, nil)
	descRecvP  = prometheus.NewDesc("warren_node_link_received_packets_total", "QUIC packets received on peer links, by path.", []string{"path"}, nil)
	descRTT    = prometheus.NewDesc("warren_node_link_rtt_seconds", "Smoothed round-trip time of each peer's current link at scrape time, by path (a snapshot: the count is the links up now).", []string{"path"}, nil)
	descDrops  = prometheus.NewDesc("warren_node_packets_dropped_total", "Overlay packets the node dropped, by reason (the counters warren status shows).", []string{"reason"}, nil)
	descTx     = prometheus.NewDesc("warren_node_packets_sent_total", "Overlay packets handed to peer links.", nil, nil)
	descUDP    = prometheus.NewDesc("warren_node_proxy_udp_dropped_total", "Datagrams the proxy's UDP associations dropped, by reason.", []string{"reason"}, nil)
	descProxy  = prometheus.NewDesc("warren_node_proxy_connections_total", "Proxy requests by kind (socks-connect, socks-udp, http, http-connect), and connections from peers to exposed ports (inbound-exposed).", []string{"kind"}, nil)
	descRefus  = prometheus.NewDesc("warren_node_proxy_refused_total", "Local proxy clients refused because their user may not use the proxy.", nil, nil)
	descPunch  = prometheus.NewDesc("warren_node_punch_attempts_total", "Direct dials after hole punching found an answering address (made by the dialing side of each pair), by the peer's NAT mapping.", []string{"nat"}, nil)
	descPunchR = prometheus.NewDesc("warren_node_punch_results_total", "How direct dials ended (direct: the link came up), by the peer's NAT mapping.", []string{"nat", "result"}, nil)
	descEgress = prometheus.NewDesc("warren_node_egress_dials_total", "Connections (tcp) and flows (udp) that apps inside warren run opened outside the overlay, by result: dialed from the host, refused by the proxy's rules (this host's addresses without --allow-local), failed.", []string{"proto", "result"}, nil)
	descDevStr = prometheus.NewDesc("warren_node_tun_streams_total", "TCP connections that apps on a TUN device (--tun, warren run) opened to peers, carried on the stream path, by result: dialed, refused by the peer (port not exposed, rules, service down), failed (no link in time).", []string{"result"}, nil)
	descCoord  = prometheus.NewDesc("warren_node_coord_connected", "1 while the node is connected to its coordination server.", nil, nil)
)

// stats returns the node's packet counters: `warren status` and the metrics read this one source.
func (n *Node) stats() localapi.Stats {
	return localapi.Stats{
		PacketsSent:        n.sendq.sent.Load(),
		DroppedQueueFull:   n.sendq.full.Load(),
		DroppedNoRoute:     n.drops.noRoute.Load() + n.sendq.failed.Load(),
		DroppedSpoofed:     n.drops.spoofed.Load(),
		DroppedRateLimited: n.drops.rateLimited.Load(),
		DroppedACL:         n.drops.acl.Load(),
	}
}

// newRegistry returns the node's metrics registry.
func (n *Node) newRegistry() *metrics.Registry {
	r := metrics.New()
	r.Register(metrics.NewFunc(n.collect, descPeers, descSent, descRecv, descSentP, descRecvP, descRTT, descDrops, descTx, descUDP,
		descProxy, descRefus, descPunch, descPunchR, descCoord, descEgress, descDevStr))
	return r
}

// collect sends the node's metrics. Parts set by Start (the peer endpoint, the proxy, the coord
// client) are read only once Start has finished (n.started), so a scrape during Start races nothing.
func (n *Node) collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st := n.stats()
	counter(descTx, st.PacketsSent)
	for _, d := range []struct {
		reason string
		v      uint64
	}{{"queue_full", st.DroppedQueueFull}, {"no_route", st.DroppedNoRoute}, {"spoofed", st.DroppedSpoofed},
		{"rate_limited", st.DroppedRateLimited}, {"acl", st.DroppedACL}} {
		counter(descDrops, d.v, d.reason)
	}
	counter(descRefus, n.proxyRefused.Load())
	for i, res := range egressResults {
		counter(descEgress, n.egressN.tcp[i].Load(), "tcp", res)
		counter(descEgress, n.egressN.udp[i].Load(), "udp", res)
		counter(descDevStr, n.devStreams[i].Load(), res)
	}
	started := n.started.Load()

	// Proxy requests and UDP drops.
	kinds := make(map[string]uint64, len(proxyKinds))
	kinds["inbound-exposed"] = n.inboundExposed.Load()
	var udp *socksUDPDrops
	if started && n.proxy != nil {
		rq := n.proxy.srv.Requests()
		kinds["socks-connect"], kinds["socks-udp"] = rq.SOCKSConnect.Load(), rq.SOCKSUDP.Load()
		kinds["http"], kinds["http-connect"] = rq.HTTP.Load(), rq.HTTPConnect.Load()
		u := n.proxy.srv.UDPStats()
		udp = &socksUDPDrops{{"fragmented", u.Fragmented.Load()}, {"malformed", u.Malformed.Load()}, {"foreign", u.Foreign.Load()},
			{"unresolved", u.Unresolved.Load()}, {"unsolicited", u.Unsolicited.Load()}}
	}
	for _, k := range proxyKinds {
		counter(descProxy, kinds[k], k)
	}
	if udp == nil {
		udp = &socksUDPDrops{{"fragmented", 0}, {"malformed", 0}, {"foreign", 0}, {"unresolved", 0}, {"unsolicited", 0}}
	}
	for _, d := range *udp {
		counter(descUDP, d.v, d.reason)
	}

	// Links: peers by path, traffic, RTT, punching.
	paths := slices.Clone(peer.Paths)
	byPath := map[string]int{}
	var ls peer.Stats
	connected := 0.0
	if started {
		for _, p := range n.peers.sorted() {
			byPath[n.linkStatus(p).Path]++
		}
		ls = n.ep.Stats()
		if n.coord != nil && n.coord.connected() {
			connected = 1
		}
	}
	for p := range byPath {
		if p != peer.PathNone && p != peer.PathIdle && !slices.Contains(paths, p) {
			paths = append(paths, p) // a path the list lacks still shows (the set is the peer package's)
		}
	}
	ch <- prometheus.MustNewConstMetric(descCoord, prometheus.GaugeValue, connected)
	for _, p := range append(paths, peer.PathIdle, peer.PathNone) {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(byPath[p]), p)
	}
	for _, p := range paths {
		t := ls.Traffic[p]
		counter(descSent, t.BytesSent, p)
		counter(descRecv, t.BytesReceived, p)
		counter(descSentP, t.PacketsSent, p)
		counter(descRecvP, t.PacketsReceived, p)
		ch <- rttHistogram(ls.RTT[p], p)
	}
	for _, m := range []control.Mapping{control.MappingUnknown, control.MappingIndependent, control.MappingDependent} {
		pc := ls.Punches[m]
		counter(descPunch, pc.Attempts, natLabels[m])
		counter(descPunchR, pc.Succeeded, natLabels[m], "direct")
		counter(descPunchR, pc.Failed, natLabels[m], "failed")
	}
}

type socksUDPDrops []struct {
	reason string
	v      uint64
}

// rttHistogram builds the RTT histogram of one path from the links' RTTs.
func rttHistogram(rtts []time.Duration, path string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(rttBuckets))
	var sum float64
	for _, b := range rttBuckets {
		buckets[b] = 0
	}
	for _, d := range rtts {
		s := d.Seconds()
		sum += s
		for _, b := range rttBuckets {
			if s <= b {
				buckets[b]++
			}
		}
	}
	return prometheus.MustNewConstHistogram(descRTT, uint64(len(rtts)), sum, buckets, path)
}

// linkStatus is the state of the link to p: `warren status` and the metrics read it here. Before
// Start has finished there is none to read safely.
func (n *Node) linkStatus(p control.Peer) peer.Status {
	if k, ok := peer.KeyOf(p.Key); ok && n.started.Load() && n.ep != nil {
		return n.ep.Status(k)
	}
	return peer.Status{Path: peer.PathNone}
}

// startMetrics serves the registry on Config.Metrics (loopback only), if set.
func (n *Node) startMetrics() error {
	if n.cfg.Metrics == "" {
		return nil
	}
	ms, err := metrics.Listen(n.cfg.Metrics, n.registry.Handler())
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.metricsSrv = ms
	n.log.Info("serving metrics", "addr", "http://"+ms.Addr().String()+"/metrics")
	return nil
}

// MetricsAddr returns the address Config.Metrics is served on, or "".
func (n *Node) MetricsAddr() string {
	if n.metricsSrv == nil {
		return ""
	}
	return n.metricsSrv.Addr().String()
}
