// Package abuse holds the building blocks of a server's abuse controls: a CIDR block list (parsed
// from the operator's file, re-read when it changes, edited in place by the operator's tools) and a
// bounded set of token buckets keyed by address or identity. The coordination server and the
// standalone relay both use them; neither the list nor the buckets know what they guard.
package abuse

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// BlockList is an immutable set of prefixes, grouped by length so a lookup is one map probe per
// distinct length. The nil *BlockList is empty.
type BlockList struct {
	byLen map[int]map[netip.Prefix]struct{}
	n     int
}

// Contains reports whether a (IPv4-mapped addresses as IPv4) is in one of the list's prefixes.
func (b *BlockList) Contains(a netip.Addr) bool {
	if b == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for bits, set := range b.byLen {
		if bits > a.BitLen() {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if _, ok := set[p]; ok {
			return true
		}
	}
	return false
}

// Len returns the number of entries.
func (b *BlockList) Len() int {
	if b == nil {
		return 0
	}
	return b.n
}

// ParseBlockList parses a block list file's contents: one CIDR prefix or address per line, '#'
// starts a comment, blank lines are skipped. Errors name the line. The input is bounded by
// MaxBlockFile.
func ParseBlockList(data []byte) (*BlockList, error) {
	if len(data) > MaxBlockFile {
		return nil, fmt.Errorf("larger than %d bytes", MaxBlockFile)
	}
	b := &BlockList{byLen: make(map[int]map[netip.Prefix]struct{})}
	for i, line := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
		e, ok, err := parseBlockLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if !ok {
			continue
		}
		set := b.byLen[e.Prefix.Bits()]
		if set == nil {
			set = make(map[netip.Prefix]struct{})
			b.byLen[e.Prefix.Bits()] = set
		}
		if _, dup := set[e.Prefix]; !dup {
			set[e.Prefix] = struct{}{}
			b.n++
		}
	}
	return b, nil
}

// BlockFile is a block list kept in step with its file: Reload re-reads the file when its size or
// modification time changed, and a bad edit keeps the list loaded before it. Safe for concurrent use.
type BlockFile struct {
	path  string
	list  atomic.Pointer[BlockList]
	mu    sync.Mutex // serialises reloads; guards mtime and size
	stamp fileStamp
}

type fileStamp struct {
	mtime int64
	size  int64
}

// NewBlockFile returns the block list of the file at path, loaded once. A missing file is an
// error: the operator named it.
func NewBlockFile(path string) (*BlockFile, error) {
	f := &BlockFile{path: path}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's name.
func (f *BlockFile) Path() string { return f.path }

// Blocked reports whether a is in the loaded list. The nil *BlockFile blocks nothing.
func (f *BlockFile) Blocked(a netip.Addr) bool {
	return f != nil && f.list.Load().Contains(a)
}

// Len returns the number of entries loaded.
func (f *BlockFile) Len() int { return f.list.Load().Len() }

// Reload re-reads the file if it changed since the last load and reports whether it did. On error
// the old list stays.
func (f *BlockFile) Reload() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return false, fmt.Errorf("block list: %w", err)
	}
	stamp := fileStamp{fi.ModTime().UnixNano(), fi.Size()}
	if stamp == f.stamp && f.list.Load() != nil {
		return false, nil
	}
	if fi.Size() > MaxBlockFile {
		return false, fmt.Errorf("block list %s: larger than %d bytes", f.path, MaxBlockFile)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("block list: %w", err)
	}
	f.stamp = stamp // a bad file is not parsed again until it changes
	b, err := ParseBlockList(data)
	if err != nil {
		return false, fmt.Errorf("block list %s: %w", f.path, err)
	}
	f.list.Store(b)
	return true, nil
}
