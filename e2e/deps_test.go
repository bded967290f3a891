package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
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

// TestDependencyDirection enforces the layering of DESIGN.md: leaves stay leaves, the proxy never sees
// gVisor, the netstack never sees QUIC, and so on.
func TestDependencyDirection(t *testing.T) {
	forbidden := map[string][]string{
		"control":     {"!std"},
		"localapi":    {"!std"},
		"adminapi":    {"!std"},
		"identity":    {"!std"},
		"backoff":     {"!std"},
		"relay":       {"!std"},
		"flagfile":    {"!std"},
		"socks":       {"gvisor.dev/", mod + "netstack", mod + "peer", mod + "node", mod + "coord"},
		"netstack":    {"github.com/quic-go/", mod + "peer", mod + "node", mod + "coord", mod + "socks", mod + "control"},
		"peer":        {"gvisor.dev/", mod + "netstack", mod + "socks", mod + "node", mod + "coord"},
		"coord":       {"gvisor.dev/", mod + "netstack", mod + "socks", mod + "peer", mod + "node"},
		"coord/admin": {"gvisor.dev/", mod + "netstack", mod + "socks", mod + "peer", mod + "node"},
		"coord/store": {"gvisor.dev/", "github.com/quic-go/", mod + "control", mod + "coord"},
		"node":        {mod + "coord", mod + "cmd"},
		"udprelay":    {"gvisor.dev/", mod + "netstack", mod + "socks", mod + "peer", mod + "node", mod + "coord"},
		"abuse":       {"gvisor.dev/", mod + "control", mod + "netstack", mod + "socks", mod + "peer", mod + "node", mod + "coord"},
	}
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		rules := forbidden[rel]
		for _, dep := range p.Deps {
			for _, rule := range rules {
				bad := false
				if rule == "!std" {
					bad = strings.Contains(strings.Split(dep, "/")[0], ".") && !strings.HasPrefix(dep, "vendor/")
				} else {
					bad = dep == rule || strings.HasPrefix(dep, rule+"/") || (strings.HasSuffix(rule, "/") && strings.HasPrefix(dep, rule))
					if rule == mod+"coord" && dep == mod+"coord/store" && rel == "coord/store" {
						bad = false
					}
				}
				if bad {
					t.Errorf("%s must not depend on %s (rule %q)", rel, dep, rule)
				}
			}
		}
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

// TestPackageDocs: every package says what it does.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}
