package flagfile

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte("# node\r\ncoord = coord.example:7400\n\n  tun=true  # TUN too\nname = \" a # b \" # quoted\nempty =\n" +
		"pinned = coord.example:7400#SHA256:abc\t# a '#' inside a word is the value's\nbare = #only a comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{{"coord", "coord.example:7400", 2}, {"tun", "true", 4}, {"name", " a # b ", 5}, {"empty", "", 6},
		{"pinned", "coord.example:7400#SHA256:abc", 7}, {"bare", "", 8}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("setting %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"coord", "--coord = x", "a b = c", "= x", `name = "open`, `name = "x" y`} {
		if _, err := Parse([]byte("# ok\n" + bad)); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("Parse(%q) = %v, want an error naming line 2", bad, err)
		}
	}
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil {
		t.Error("an oversized file was accepted")
	}
}

func TestLoad(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *bool, *time.Duration) {
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.String("config", "", "")
		return fs, fs.String("coord", "", ""), fs.Bool("tun", false, ""), fs.Duration("wait", time.Second, "")
	}
	path := filepath.Join(t.TempDir(), "node.conf")
	os.WriteFile(path, []byte("coord = from-file:1\ntun = true\nwait = 5s\n"), 0o600)

	fs, coord, tun, wait := newFS()
	fs.Parse([]string{"--coord", "from-cli:2", "--config", path})
	if err := Load(fs, path, "config"); err != nil {
		t.Fatal(err)
	}
	if *coord != "from-cli:2" || !*tun || *wait != 5*time.Second {
		t.Errorf("coord %q tun %v wait %v: the command line must win, the file fill the rest", *coord, *tun, *wait)
	}
	for text, want := range map[string]string{
		"nosuch = 1\n":          "line 1: no flag --nosuch",
		"coord = x\ntun = 7\n":  "line 2: --tun",
		"config = other.conf\n": "cannot name another",
	} {
		os.WriteFile(path, []byte(text), 0o600)
		fs, _, _, _ := newFS()
		fs.Parse(nil)
		if err := Load(fs, path, "config"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
	if err := Load(flag.NewFlagSet("x", flag.ContinueOnError), filepath.Join(t.TempDir(), "missing"), "config"); err == nil {
		t.Error("a missing file was accepted")
	}
}

// TestApply: Apply loads the file --config names, and nothing without one.
func TestApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.conf")
	os.WriteFile(path, []byte("coord = from-file:1\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", path}, "from-file:1"},
		{nil, "default"},
	} {
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		Define(fs)
		coord := fs.String("coord", "default", "")
		fs.Parse(tc.args)
		if err := Apply(fs); err != nil || *coord != tc.want {
			t.Errorf("%q: coord %q, %v; want %q", tc.args, *coord, err, tc.want)
		}
	}
	if err := Apply(flag.NewFlagSet("x", flag.ContinueOnError)); err != nil {
		t.Errorf("without --config defined: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("coord = a:1\n# c\nname = \"x # y\" # z\n"))
	f.Add([]byte("= \n\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		settings, err := Parse(data)
		if err != nil {
			return
		}
		for _, s := range settings {
			if s.Name == "" || strings.ContainsAny(s.Name, " \t\"#=") || s.Line < 1 {
				t.Fatalf("bad setting %+v", s)
			}
		}
	})
}
