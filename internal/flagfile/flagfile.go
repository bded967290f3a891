// Package flagfile gives a command's flags a configuration file: one `name = value` a line, where
// name is a flag's name without dashes, for a node or server that runs as a service. Values given on
// the command line win over the file's.
//
//	# /etc/warren/node.conf
//	coord = coord.example.net:7400
//	coord-key = SHA256:...
//	expose = tcp:22,udp:27015
//	tun = true
//
// '#' starts a comment where a value does not; a value may be double-quoted (Go syntax) to hold
// '#' or spaces at its ends.
//
// A command defines the --config flag that names the file with Define, and after parsing its
// command line calls Apply.
package flagfile

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MaxSize bounds a configuration file.
const MaxSize = 64 << 10

// FlagName is the name of the flag Define defines: --config FILE.
const FlagName = "config"

// Define defines the --config flag on fs, which names a configuration file for Apply.
func Define(fs *flag.FlagSet) {
	fs.String(FlagName, "", "read flags from this `file` too: one name = value a line (# comments); the command line wins")
}

// Apply loads the configuration file the --config flag names (see Define) into fs, which has parsed
// the command line; it does nothing when the flag is empty or not defined.
func Apply(fs *flag.FlagSet) error {
	f := fs.Lookup(FlagName)
	if f == nil || f.Value.String() == "" {
		return nil
	}
	return Load(fs, f.Value.String(), FlagName)
}

// Setting is one line of a configuration file.
type Setting struct {
	Name, Value string
	Line        int
}

// Parse reads a configuration file's settings in order. It does not know which names are valid.
func Parse(data []byte) ([]Setting, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxSize)
	}
	var out []Setting
	for i, line := range strings.Split(string(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want name = value", n)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if name == "" || strings.HasPrefix(name, "-") || strings.ContainsAny(name, " \t\"#") {
			return nil, fmt.Errorf("line %d: %q is not a flag name (write it without dashes)", n, name)
		}
		if strings.HasPrefix(value, `"`) {
			q, err := strconv.QuotedPrefix(value)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad quoted value: %w", n, err)
			}
			if rest := strings.TrimSpace(value[len(q):]); rest != "" && rest[0] != '#' {
				return nil, fmt.Errorf("line %d: text after the quoted value", n)
			}
			value, _ = strconv.Unquote(q)
		} else if j := commentStart(value); j >= 0 {
			value = strings.TrimSpace(value[:j])
		}
		out = append(out, Setting{Name: name, Value: value, Line: n})
	}
	return out, nil
}

// commentStart is where an inline comment begins in an unquoted value, -1 if none: at a '#' that
// starts the value or follows a space or tab. A '#' inside a word belongs to the value: `coord =
// ADDR#SHA256:...` pins the coord's key, and cutting it there would drop the pin without a word.
func commentStart(v string) int {
	for j := range len(v) {
		if v[j] == '#' && (j == 0 || v[j-1] == ' ' || v[j-1] == '\t') {
			return j
		}
	}
	return -1
}

// Load applies the configuration file at path to fs, which has parsed the command line: each
// setting sets its flag unless the command line did. A name fs does not define, a bad value, or the
// flag naming the file itself (self) is an error naming the line.
func Load(fs *flag.FlagSet, path, self string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	settings, err := Parse(data)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	for _, s := range settings {
		switch {
		case s.Name == self:
			return fmt.Errorf("config %s: line %d: a config file cannot name another", path, s.Line)
		case fs.Lookup(s.Name) == nil:
			return fmt.Errorf("config %s: line %d: no flag --%s", path, s.Line, s.Name)
		case onCommandLine[s.Name]:
			continue
		}
		if err := fs.Set(s.Name, s.Value); err != nil {
			return fmt.Errorf("config %s: line %d: --%s: %w", path, s.Line, s.Name, err)
		}
	}
	return nil
}
