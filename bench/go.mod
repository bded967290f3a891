// The benchmarks: a module of its own so that the product never depends on wireguard-go.
// benchtable drives the built warren binaries; the replace points any import of warren's packages
// at this tree.
module github.com/warren-net/warren/bench

go 1.26.0

replace github.com/warren-net/warren => ../

require (
	github.com/things-go/go-socks5 v0.1.0
	golang.org/x/crypto v0.37.0
	golang.org/x/net v0.39.0
	golang.org/x/sys v0.32.0
	golang.zx2c4.com/wireguard v0.0.0-20250521234502-f333402bd9cb
)

require (
	github.com/google/btree v1.1.2 // indirect
	golang.org/x/time v0.7.0 // indirect
	golang.zx2c4.com/wintun v0.0.0-20230126152724-0fa3db229ce2 // indirect
	gvisor.dev/gvisor v0.0.0-20250503011706-39ed1f5ac29c // indirect
)
