package main

import (
	"fmt"
	"os"
)

// runNSCommand is the hidden subcommand `warren run` re-executes itself as inside the new
// namespaces (run_linux.go).
const runNSCommand = "__run-ns"

func cmdRun(args []string) error {
	fs := newFlagSet("run", "run [--state DIR] -- COMMAND [ARGS...]\n\n"+
		"Runs COMMAND in a network namespace of its own (no root needed) whose only interfaces are lo and\n"+
		"a TUN device that the running node bridges to the overlay: the command reaches peers by name\n"+
		"(NAME.warren, through the node's DNS server) or address with its own TCP/IP stack, no proxy\n"+
		"settings. The internet is reached through the node, as through its proxy (none with the node's\n"+
		"--overlay-only). warren exits with the command's\n"+
		"status (128+N if signal N killed it).\n"+
		"Needs unprivileged user namespaces and a /dev/net/tun users may open (warren says what is missing).")
	state := stateFlag(fs)
	args, command := splitCommand(args)
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("run: unexpected argument %q (put the command after --)", pos[0])
	}
	if len(command) == 0 {
		fs.Usage()
		return fmt.Errorf("run: no command given (warren run -- COMMAND [ARGS...])")
	}
	return runInNamespace(*state, command, os.Stdin, os.Stdout, os.Stderr)
}
