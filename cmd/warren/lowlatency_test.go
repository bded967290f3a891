package main

import (
	"slices"
	"testing"
)

func TestLowLatencyEnviron(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want []string
	}{
		{[]string{"HOME=/h"}, []string{"HOME=/h", "GODEBUG=" + sysmonAwake}},
		{[]string{"GODEBUG=", "A=b"}, []string{"A=b", "GODEBUG=" + sysmonAwake}},
		{[]string{"GODEBUG=gctrace=1", "A=b"}, []string{"A=b", "GODEBUG=gctrace=1," + sysmonAwake}},
	} {
		if got := lowLatencyEnviron(tc.env); !slices.Equal(got, tc.want) {
			t.Errorf("lowLatencyEnviron(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestLowLatencyActive(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                          false,
		"gctrace=1":                 false,
		"schedtrace=0":              false,
		"gctrace=1,schedtrace=1000": true, // a trace the user asked for turns the deep sleep off too
		sysmonAwake:                 true,
		"gctrace=1, " + sysmonAwake: true,
	} {
		t.Setenv("GODEBUG", godebug)
		if got := lowLatencyActive(); got != want {
			t.Errorf("GODEBUG=%q: lowLatencyActive() = %v, want %v", godebug, got, want)
		}
	}
}

func TestWithoutSysmonAwake(t *testing.T) {
	for _, tc := range []struct{ env, want []string }{
		{[]string{"A=b"}, []string{"A=b"}},
		{lowLatencyEnviron([]string{"A=b"}), []string{"A=b"}},
		{lowLatencyEnviron([]string{"GODEBUG=gctrace=1", "A=b"}), []string{"A=b", "GODEBUG=gctrace=1"}},
		{[]string{"GODEBUG=schedtrace=1000"}, []string{"GODEBUG=schedtrace=1000"}}, // the user's own trace stays
	} {
		if got := withoutSysmonAwake(tc.env); !slices.Equal(got, tc.want) {
			t.Errorf("withoutSysmonAwake(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
}
