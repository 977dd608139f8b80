// Command govmm is the command line front end of the govmm VMM: it turns
// flags into a vmm.Config, runs the VM, and reports errors on stderr with a
// non-zero exit status.
package main

import (
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: govmm <command> [flags]

commands:
  run     boot a guest (govmm run --help for flags)
  stat    live exit rates of a running VM (govmm stat --qmp unix:PATH),
          or compare saved exit tables (govmm stat --diff A.json B.json)
`

func main() {
	// A closed stdout or stderr (govmm run ... | head) must cost the
	// output, not the VM: with SIGPIPE ignored a write to it fails with
	// EPIPE, which the console and log writers drop, instead of the
	// runtime ending the process mid-run with no clean-up.
	signal.Ignore(syscall.SIGPIPE)
	// Device warnings (unclaimed guest accesses) share stderr with the
	// exit table: tag them, and leave timestamps to the reader.
	log.SetFlags(0)
	log.SetPrefix("govmm: ")
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCommand(os.Args[2:])
	case "stat":
		err = statCommand(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q (try govmm --help)", os.Args[1])
	}
	if err != nil {
		var ec exitCode
		if asExitCode(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintf(os.Stderr, "govmm: %v\n", err)
		os.Exit(1)
	}
}
