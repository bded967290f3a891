package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/warren-net/warren/node/localapi"
)

func TestSplitCommand(t *testing.T) {
	flags, cmd := splitCommand([]string{"--name", "ci", "--", "curl", "--", "-x"})
	if !reflect.DeepEqual(flags, []string{"--name", "ci"}) || !reflect.DeepEqual(cmd, []string{"curl", "--", "-x"}) {
		t.Errorf("flags %q, command %q", flags, cmd)
	}
	if flags, cmd := splitCommand([]string{"--name", "ci"}); len(flags) != 2 || cmd != nil {
		t.Errorf("without --: %q %q", flags, cmd)
	}
}

func TestAuthKeySources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "key")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	t.Setenv("WARREN_AUTHKEY", "from-env")
	for _, tc := range []struct{ flag, file, want string }{
		{"from-flag", file, "from-flag"},
		{"", file, "from-file"},
		{"", "", "from-env"},
	} {
		if got, err := authKey(tc.flag, tc.file); err != nil || got != tc.want {
			t.Errorf("authKey(%q, %q) = %q, %v; want %q", tc.flag, tc.file, got, err, tc.want)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, f := range []string{empty, filepath.Join(t.TempDir(), "missing")} {
		if _, err := authKey("", f); err == nil {
			t.Errorf("authKey from %s succeeded", f)
		}
	}
}

func TestCommandEnv(t *testing.T) {
	st := localapi.Status{Self: localapi.Self{SOCKS: "127.0.0.1:1080"}}
	env := commandEnv([]string{"PATH=/bin", "WARREN_AUTHKEY=secret", "WARREN_STATE=/old"}, "/state", st)
	want := []string{"PATH=/bin", "WARREN_STATE=/state", "ALL_PROXY=socks5h://127.0.0.1:1080", "WARREN_PROXY=127.0.0.1:1080"}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("env %q, want %q", env, want)
	}
	if env := commandEnv(nil, "/s", localapi.Status{}); slices.ContainsFunc(env, func(s string) bool { return s[:3] == "ALL" }) {
		t.Errorf("proxy variables without a proxy: %q", env)
	}
}
