package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

type pkgInfo struct {
	ImportPath string
	Doc        string
	Deps       []string
	Standard   bool
}

func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", "github.com/warren-net/warren/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkgInfo
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkgInfo
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

const mod = "github.com/warren-net/warren/"

// rule forbids a package (and, with tree, everything under it) some imports, and says why.
type rule struct {
	pkg    string
	tree   bool     // the rule covers pkg's subpackages too
	except []string // subpackages the tree rule leaves out
	deny   []string // import paths (a trailing "/" means a prefix); "!std" means anything outside the standard library
	reason string
}

// Node side: node/..., peer, netstack, socks, tun (cmd/warren wires them). Server side: coord/...
// (cmd/warren-coord wires it). Shared: control, identity, acl, internal/... . docs/ARCHITECTURE.md
// ("Package layout") shows the same rules and reasons as a table: change both together.
var (
	nodeSide   = []string{mod + "node", mod + "peer", mod + "netstack", mod + "socks", mod + "tun"}
	serverSide = []string{mod + "coord"}
)

// dependencyRules is the layering of docs/ARCHITECTURE.md, each rule with the reason it exists.
var dependencyRules = []rule{
	{pkg: "control", deny: []string{"!std"}, reason: "the wire contract between node and coord: both sides import it, it imports neither"},
	{pkg: "identity", deny: []string{"!std"}, reason: "keys and certificates: a leaf both sides trust"},
	{pkg: "internal", tree: true, except: []string{"internal/testkit", "internal/metrics"}, deny: []string{"!std"}, reason: "small std-only helpers either side may use (backoff, bicopy, deadline, flagfile, naming, packet, peercred, privdir, ...)"},
	{pkg: "node/localapi", deny: []string{"!std"}, reason: "the CLI's contract with a running node: JSON types only, so the CLI never links the daemon"},
	{pkg: "coord/operatorapi", deny: []string{"!std"}, reason: "the operator CLI's contract with a running coord: JSON types only"},
	{pkg: "acl", deny: append([]string{"gvisor.dev/", "github.com/quic-go/"}, append(nodeSide, serverSide...)...), reason: "access rules are evaluated on both sides: pure data and matching"},
	{pkg: "socks", deny: []string{"gvisor.dev/", "github.com/quic-go/", mod + "netstack", mod + "peer", mod + "node", mod + "coord"}, reason: "the proxy front end dials through a small interface: it never sees gVisor or QUIC"},
	{pkg: "netstack", deny: []string{"github.com/quic-go/", mod + "peer", mod + "node", mod + "coord", mod + "socks", mod + "control"}, reason: "the userspace TCP/IP stack moves IP packets: it never sees QUIC, the proxy or the coord"},
	{pkg: "peer", deny: []string{"gvisor.dev/", mod + "netstack", mod + "socks", mod + "node", mod + "coord"}, reason: "peer links carry opaque packets and streams: no netstack, no proxy, no server internals"},
	{pkg: "node", tree: true, deny: append([]string{mod + "cmd"}, serverSide...), reason: "the node side never links server code: a node trusts the coord only through the control protocol"},
	{pkg: "coord", tree: true, deny: append([]string{"gvisor.dev/", mod + "cmd"}, nodeSide...), reason: "the server side never links node code: it knows nodes only through the control protocol"},
	{pkg: "coord/store", deny: []string{"github.com/quic-go/", mod + "control", mod + "coord/relay", mod + "coord/operator"}, reason: "persistence knows rows, not protocols"},
	{pkg: "coord/relay", deny: []string{mod + "coord/store", mod + "coord/operator"}, reason: "the relay runs standalone (warren-coord relay) without the coord's database"},
	{pkg: "internal/testkit/pgtest", deny: []string{"!std"}, reason: "a throwaway PostgreSQL for any package's tests: it runs Debian's binaries and speaks SQL through psql, so it links no driver"},
	{pkg: "internal/testkit", deny: append([]string{"gvisor.dev/", "github.com/quic-go/"}, append(nodeSide, serverSide...)...), reason: "test helpers shared by every package's tests must not pull either side in"},
	{pkg: "internal/metrics", deny: append([]string{"gvisor.dev/", "github.com/quic-go/", mod + "control", mod + "identity"}, append(nodeSide, serverSide...)...), reason: "metric helpers both sides use (a private Prometheus registry, a loopback-only listener): each side registers its own metrics, the helpers know neither"},
	{pkg: "coord/loadtest", deny: []string{mod + "coord/store", mod + "coord/relay", mod + "coord/operator", mod + "coord/listener", mod + "coord/abuse"}, reason: "a load generator is a client: it knows the server only through the control protocol, as a node does"},
	{pkg: "coord/abuse", deny: []string{mod + "control", mod + "coord/store", mod + "coord/relay"}, reason: "abuse controls are building blocks the coord and the relay share"},
}

// TestDependencyDirection enforces the layering of docs/ARCHITECTURE.md: leaves stay leaves, node side
// and server side never import each other, the proxy never sees gVisor, the netstack never sees QUIC.
func TestDependencyDirection(t *testing.T) {
	pkgs := listPackages(t)
	for _, r := range dependencyRules {
		matched := false
		for _, p := range pkgs {
			rel := strings.TrimPrefix(p.ImportPath, mod)
			if rel != r.pkg && !(r.tree && strings.HasPrefix(rel, r.pkg+"/")) || slices.Contains(r.except, rel) {
				continue
			}
			matched = true
			for _, dep := range p.Deps {
				for _, deny := range r.deny {
					if denied(dep, deny) && !strings.HasPrefix(dep, p.ImportPath+"/") && dep != p.ImportPath {
						t.Errorf("%s must not depend on %s: %s", rel, dep, r.reason)
					}
				}
			}
		}
		if !matched {
			t.Errorf("rule for %s matches no package: the layout changed, update the rule and docs/ARCHITECTURE.md", r.pkg)
		}
	}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		if strings.HasPrefix(rel, "cmd/") || rel == "demo" || rel == "e2e" {
			continue
		}
		for _, dep := range p.Deps {
			if strings.HasPrefix(dep, mod+"cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd", rel, dep)
			}
		}
	}
}

// denied reports whether dep matches one deny entry.
func denied(dep, deny string) bool {
	switch {
	case deny == "!std":
		// The std-only helpers under internal/ count as standard library (testkit and metrics, which
		// pull in third-party modules, do not).
		if strings.HasPrefix(dep, mod+"internal/") && !strings.HasPrefix(dep, mod+"internal/testkit") && !strings.HasPrefix(dep, mod+"internal/metrics") {
			return false
		}
		return strings.Contains(strings.Split(dep, "/")[0], ".") && !strings.HasPrefix(dep, "vendor/")
	case strings.HasSuffix(deny, "/"):
		return strings.HasPrefix(dep, deny)
	default:
		return dep == deny || strings.HasPrefix(dep, deny+"/")
	}
}

// TestPackageDocs: every package says what it does.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}
