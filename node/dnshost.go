package node

// Names outside the warren zone for `warren run` with egress: the node's DNS server asks the host's
// resolver (the one the proxy uses) for A and AAAA, with a timeout, and answers with what it may
// reach: answers inside the overlay, loopback and unspecified ones are dropped (DNS rebinding, as
// hostAnswer does for the proxy: only NAME.warren leads into the overlay). Other types, and reverse
// names outside the overlay, stay REFUSED. TUN mode and --overlay-only keep REFUSED for all of them.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/dns/dnsmessage"
)

// hostLookupTimeout bounds one host lookup; the client's resolver retries on its own schedule.
const hostLookupTimeout = 5 * time.Second

// maxHostAnswers caps the addresses in one answer, so that it always fits in 512 bytes: a truncated
// reply would send the client to DNS over TCP, which the node does not serve.
const maxHostAnswers = 8

// hostLookup answers questions the node does not know the answer to.
type hostLookup interface {
	// answer returns the reply code and records for q; ok false leaves q REFUSED.
	answer(q dnsmessage.Question) (rcode dnsmessage.RCode, answers []dnsAnswer, ok bool)
}

// hostResolver asks lookup (net.DefaultResolver.LookupNetIP) and filters its answers.
type hostResolver struct {
	ctx     context.Context
	log     hclog.Logger
	lookup  func(ctx context.Context, network, host string) ([]netip.Addr, error)
	overlay overlay
}

// hostDNS returns the node's host resolver for the DNS server.
func (n *Node) hostDNS() hostLookup {
	return &hostResolver{ctx: n.ctx, log: n.log, lookup: net.DefaultResolver.LookupNetIP, overlay: n.overlay}
}

func (h *hostResolver) answer(q dnsmessage.Question) (dnsmessage.RCode, []dnsAnswer, bool) {
	if q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA {
		return 0, nil, false
	}
	name := strings.TrimSuffix(q.Name.String(), ".")
	if name == "" || strings.HasSuffix(strings.ToLower(name), ".warren") {
		return 0, nil, false
	}
	ctx, cancel := context.WithTimeout(h.ctx, hostLookupTimeout)
	defer cancel()
	// Both families at once: a name with only AAAA records then gets an empty A answer, not NXDOMAIN.
	ips, err := h.lookup(ctx, "ip", name)
	if h.log.IsDebug() {
		h.log.Debug("DNS: asked the host", "name", name, "answers", ips, "error", err)
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return dnsmessage.RCodeNameError, nil, true
	case err != nil:
		return dnsmessage.RCodeServerFailure, nil, true
	}
	var answers []dnsAnswer
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		if ip.Is4() != (q.Type == dnsmessage.TypeA) || !h.reachable(ip) {
			continue
		}
		if answers = append(answers, dnsAnswer{addr: ip}); len(answers) == maxHostAnswers {
			break
		}
	}
	return dnsmessage.RCodeSuccess, answers, true
}

// reachable reports whether an answer may be given: not in the overlay, not loopback or unspecified.
func (h *hostResolver) reachable(ip netip.Addr) bool {
	return !h.overlay.contains(ip) && !ip.IsLoopback() && !ip.IsUnspecified()
}
