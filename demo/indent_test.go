package main

import (
	"strings"
	"testing"
)

// TestIndentAcrossWrites: lines split across writes, several lines in one write and a last line
// without a newline are each indented once, at the start of the line.
func TestIndentAcrossWrites(t *testing.T) {
	const text = "NAME   IP\nalice  100.64.0.1\nbob    100.64.0.2\nlast"
	for _, size := range []int{1, 2, 3, 7, 11, len(text)} {
		var out strings.Builder
		in := &indent{w: &out}
		for s := text; s != ""; {
			k := min(size, len(s))
			if n, err := in.Write([]byte(s[:k])); n != k || err != nil {
				t.Fatalf("size %d: Write = %d, %v", size, n, err)
			}
			s = s[k:]
		}
		in.end()
		const want = "  NAME   IP\n  alice  100.64.0.1\n  bob    100.64.0.2\n  last\n"
		if out.String() != want {
			t.Errorf("writes of %d bytes:\n%q\nwant\n%q", size, out.String(), want)
		}
	}
}
