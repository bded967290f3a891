package netstack

import (
	"context"
	"net/netip"
)

// Flow is the overlay connection that a Config.DialLocal call serves: the peer's address and port
// (Src) and this node's (Dst; for UDP only its port is known, the address may be unset). The node
// uses it to tell services who connected (whois, PROXY protocol headers).
type Flow struct{ Src, Dst netip.AddrPort }

type flowKey struct{}

// withFlow returns ctx carrying f, for DialLocal (once per forwarded connection or UDP flow).
func withFlow(ctx context.Context, f Flow) context.Context {
	return context.WithValue(ctx, flowKey{}, f)
}

// FlowOf returns the flow a DialLocal context carries.
func FlowOf(ctx context.Context) (Flow, bool) {
	f, ok := ctx.Value(flowKey{}).(Flow)
	return f, ok
}
