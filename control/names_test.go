package control

import (
	"strings"
	"testing"
)

// TestCoordStringsChecked: names and text the coord sends a node are checked on decoding, so a
// hostile or buggy coord cannot hand the CLI terminal escapes, or peers names DNS cannot carry.
func TestCoordStringsChecked(t *testing.T) {
	welcome := `"ipv4":"100.64.0.1","ipv6":"fd7a::1","prefix4":"100.64.0.0/10","prefix6":"fd7a::/48","observed":"1.2.3.4:5"`
	peer := func(name, tag, network string) string {
		return `{"type":"peerdelta","peerdelta":{"upsert":[{"key":"` + strings.Repeat("A", 43) + `=","name":"` + name +
			`","tag":"` + tag + `","ips":["100.64.0.2"],"networks":["` + network + `"]}]}}`
	}
	bad := map[string]string{
		"escape in a peer name":      peer(`ali\u001b[2Jce`, "", "lan"),
		"upper-case peer name":       peer("Alice", "", "lan"),
		"peer name with a dot":       peer("bob.evil", "", "lan"),
		"peer name ending in '-'":    peer("bob-", "", "lan"),
		"escape in a tag":            peer("bob", `x\u001bx`, "lan"),
		"escape in a network name":   peer("bob", "", `l\u001ban`),
		"space in a network name":    peer("bob", "", "my lan"),
		"escape in an error":         `{"type":"reply","reply":{"id":1,"code":"refused","error":"no\u001b]0;pwned\u0007"}}`,
		"bidi override in an error":  `{"type":"reply","reply":{"id":1,"code":"refused","error":"gnp.\u202eexe"}}`,
		"C1 CSI in an error":         `{"type":"reply","reply":{"id":1,"code":"refused","error":"a\u009b2Jb"}}`,
		"newline in an error":        `{"type":"reply","reply":{"id":1,"code":"refused","error":"a\nb"}}`,
		"escape in a member name":    `{"type":"reply","reply":{"id":1,"members":[{"name":"a\u001b","state":"member"}]}}`,
		"member key not a print":     `{"type":"reply","reply":{"id":1,"members":[{"name":"a","key":"\u001b[31m","state":"member"}]}}`,
		"escape in a network list":   `{"type":"reply","reply":{"id":1,"networks":["a\u001b"]}}`,
		"bad name in a rename reply": `{"type":"reply","reply":{"id":1,"name":"A B"}}`,
		"escape in a rule entry":     `{"type":"reply","reply":{"id":1,"acl":{"network":"lan","rules":[{"from":["a\u001b"],"to":["b"],"ports":["*"]}]}}}`,
		"bad name in a welcome":      `{"type":"welcome","welcome":{` + welcome + `,"networks":[],"name":"x\u001by"}}`,
		"bad tag in a welcome":       `{"type":"welcome","welcome":{` + welcome + `,"networks":[],"tag":"T"}}`,
		"rename with a network":      `{"type":"request","request":{"id":1,"op":"rename","name":"a","network":"lan"}}`,
		"rename without a name":      `{"type":"request","request":{"id":1,"op":"rename"}}`,
		"join with a name":           `{"type":"request","request":{"id":1,"op":"join","network":"lan","name":"a"}}`,
	}
	for what, s := range bad {
		if _, err := Decode([]byte(s)); err == nil {
			t.Errorf("%s: Decode(%s) succeeded", what, s)
		}
	}
	good := []string{
		peer("bob-2", "ci", "my_lan.1"),
		`{"type":"reply","reply":{"id":1,"code":"refused","error":"network \"lan\" — déjà vu"}}`,
		`{"type":"reply","reply":{"id":1,"members":[{"name":"key-AbC_-9","key":"SHA256:` + strings.Repeat("x", 43) + `","state":"banned"}]}}`,
		`{"type":"reply","reply":{"id":1,"name":"new-name"}}`,
		`{"type":"request","request":{"id":1,"op":"rename","name":"new-name"}}`,
		`{"type":"welcome","welcome":{` + welcome + `,"networks":["lan"],"name":"alice","tag":"ci"}}`,
	}
	for _, s := range good {
		if _, err := Decode([]byte(s)); err != nil {
			t.Errorf("Decode(%s): %v", s, err)
		}
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                "plain",
		"a\x1b[2Jb":            "a\uFFFD[2Jb",
		"x\u202ey":             "x\uFFFDy",
		"bad\xffutf8":          "bad\uFFFDutf8",
		"tab\tand\nnewline\r!": "tab\uFFFDand\uFFFDnewline\uFFFD!",
	} {
		got := CleanText(in)
		if got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
		if err := CheckText(got); err != nil {
			t.Errorf("CheckText(CleanText(%q)): %v", in, err)
		}
	}
}
