package abuse

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/warren-net/warren/identity"
)

// The block list file as the operator's tools edit it: one entry a line, a CIDR prefix or an
// address, optionally followed by a '#' comment. Edits keep every other line as it was and replace
// the file atomically; a server watching the file (BlockFile) picks the change up.

// MaxBlockFile bounds the block list file the tools read and write.
const MaxBlockFile = 16 << 20

// BlockEntry is one entry of a block list file.
type BlockEntry struct {
	Prefix  netip.Prefix // masked
	Comment string       // after '#', trimmed; "" = none
}

// ParseBlockPrefix parses a block list entry: a CIDR prefix (masked) or an address (a single-host
// prefix). IPv4-mapped IPv6 ranges must be written in IPv4 form.
func ParseBlockPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix or IP address", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 ranges in IPv4 form", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix or IP address", s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ReadBlockFile returns the entries of a block list file in file order; a missing file has none.
func ReadBlockFile(path string) ([]BlockEntry, error) {
	lines, err := readBlockLines(path)
	if err != nil {
		return nil, err
	}
	out := []BlockEntry{}
	for i, l := range lines {
		e, ok, err := parseBlockLine(l)
		if err != nil {
			return nil, fmt.Errorf("block list %s: line %d: %w", path, i+1, err)
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// ErrNotBlocked is returned by RemoveBlock when the prefix is not an entry of the file.
var ErrNotBlocked = errors.New("not in the block list")

// AddBlock appends p (with an optional one-line comment) to the block list file, creating it
// (mode 0600) if needed, and reports whether it changed: an entry for p already there stays as it is.
func AddBlock(path string, p netip.Prefix, comment string) (bool, error) {
	if strings.ContainsAny(comment, "\r\n") {
		return false, errors.New("add block: the comment must be one line")
	}
	p = p.Masked()
	lines, err := readBlockLines(path)
	if err != nil {
		return false, err
	}
	for i, l := range lines {
		e, ok, err := parseBlockLine(l)
		if err != nil {
			return false, fmt.Errorf("block list %s: line %d: %w", path, i+1, err)
		}
		if ok && e.Prefix == p {
			return false, nil
		}
	}
	line := p.String()
	if p.IsSingleIP() {
		line = p.Addr().String()
	}
	if c := strings.TrimSpace(comment); c != "" {
		line += " # " + c
	}
	return true, writeBlockLines(path, append(lines, line))
}

// RemoveBlock removes every entry for p from the block list file; comment lines and other entries
// stay. It returns an error wrapping ErrNotBlocked if there is none (a wider range containing p is
// a different entry).
func RemoveBlock(path string, p netip.Prefix) error {
	p = p.Masked()
	lines, err := readBlockLines(path)
	if err != nil {
		return err
	}
	kept := lines[:0:0]
	for i, l := range lines {
		e, ok, err := parseBlockLine(l)
		if err != nil {
			return fmt.Errorf("block list %s: line %d: %w", path, i+1, err)
		}
		if !ok || e.Prefix != p {
			kept = append(kept, l)
		}
	}
	if len(kept) == len(lines) {
		return fmt.Errorf("%v: %w", p, ErrNotBlocked)
	}
	return writeBlockLines(path, kept)
}

func parseBlockLine(l string) (BlockEntry, bool, error) {
	text, comment, _ := strings.Cut(l, "#")
	text = strings.TrimSpace(text)
	if text == "" {
		return BlockEntry{}, false, nil
	}
	p, err := ParseBlockPrefix(text)
	if err != nil {
		return BlockEntry{}, false, err
	}
	return BlockEntry{Prefix: p, Comment: strings.TrimSpace(comment)}, true, nil
}

func readBlockLines(path string) ([]string, error) {
	if path == "" {
		return nil, errors.New("no block list file configured")
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("block list: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBlockFile+1))
	if err != nil {
		return nil, fmt.Errorf("block list %s: %w", path, err)
	}
	if len(data) > MaxBlockFile {
		return nil, fmt.Errorf("block list %s: larger than %d bytes", path, MaxBlockFile)
	}
	s := strings.TrimRight(string(data), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), nil
}

// writeBlockLines replaces the file atomically, keeping its permissions (0600 for a new file).
func writeBlockLines(path string, lines []string) error {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	data := strings.Join(lines, "\n") + "\n"
	if len(data) > MaxBlockFile {
		return fmt.Errorf("block list %s: would grow beyond %d bytes", path, MaxBlockFile)
	}
	if err := identity.WriteFileAtomic(path, []byte(data), mode); err != nil {
		return fmt.Errorf("block list: %w", err)
	}
	return nil
}
